"""Malformed and hostile files through ``difference``, ``detect`` and the monitor.

For every file of the corpus (`fuzz_corpus.build_corpus`, over 100 files): the commands exit 2
with exactly one line naming the file and no traceback, and write nothing; the monitor records
each file as rejected with a reason, processes nothing, and leaves no temporary file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import select

from blobwatch.cli import main
from blobwatch.monitor.db import Image, Run, open_database
from blobwatch.monitor.runner import run_monitor
from blobwatch.names import one_line
from fuzz_corpus import GOOD_MJD, build_corpus, good_header, good_image


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_corpus(tmp_path_factory.mktemp("fuzz") / "inbox")


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("references")
    paths = []
    for day in range(5):
        path = folder / f"ref{day}.fits"
        fits.PrimaryHDU(good_image(50 + day), good_header(GOOD_MJD - 10 + day)).writeto(path)
        paths.append(str(path))
    return paths


def test_the_corpus_has_over_100_distinct_files(corpus: dict[str, Path]) -> None:
    assert len(corpus) >= 100 and len({p.name for p in corpus.values()}) == len(corpus)


@pytest.mark.parametrize("command", ["difference", "detect"])
def test_every_malformed_file_is_one_line_and_exit_2(
    corpus: dict[str, Path],
    references: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    wrong = []
    for case, path in corpus.items():
        args = [command, str(path), "--references", *references]
        if command == "difference":
            args += ["--out", str(out / "diff.fits")]
        code = main(args)
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        if (
            code != 2
            or len(lines) != 1
            or not lines[0].startswith(f"blobwatch: error: {one_line(str(path))}: ")
            or "Traceback" in captured.err
            or captured.out
        ):
            wrong.append((case, code, captured.err[-300:]))
    assert wrong == []
    assert list(out.iterdir()) == []  # nothing written, no temporary file


def test_the_monitor_records_every_malformed_file_as_rejected(
    corpus: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    lines: list[str] = []
    with caplog.at_level(logging.WARNING):
        summary = run_monitor(
            corpus["empty"].parent, db=Session, reports=tmp_path / "reports", echo=lines.append
        )
    assert summary.exit_code == 1 and summary.processed == []
    assert sorted(o.name for o in summary.rejected) == sorted(p.name for p in corpus.values())
    assert all(
        o.reason and not o.reason.startswith("cannot be read (") for o in summary.rejected
    )  # all foreseen
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged
    assert len(lines) == len(corpus) and all("\n" not in line for line in lines)
    with Session() as s:
        assert {im.status for im in s.scalars(select(Image))} == {"rejected"}
        assert s.scalars(select(Run)).all() == []
    assert not [p for p in (tmp_path / "reports").rglob("*") if p.name.endswith(".tmp")]
