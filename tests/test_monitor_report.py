"""HTML reports: per-image page with figures, index and blob map, written atomically."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import os
from pathlib import Path

import numpy as np
import pytest

from blobwatch.monitor.db import Blob, Candidate, Image, Run, open_database
from blobwatch.monitor.report import (
    CandidateView,
    ImageReport,
    SubframeView,
    report_dir,
    write_blobmap,
    write_image_report,
    write_index,
)


def _report(image_id: int = 3) -> ImageReport:
    rng = np.random.default_rng(1)
    diff = rng.normal(0, 0.01, (512, 512)).astype(np.float32)
    diff[:5] = np.nan
    subframes = [
        SubframeView(i, (i % 2) * 256, (i // 2) * 256, 256, p, p >= 0.5)
        for i, p in enumerate([0.1, 0.93, 0.2, 0.05])
    ]
    candidates = [
        CandidateView(17, 300.25, 100.75, 0.93, 11.0, 6.5, "new", "<b>odd</b> note"),
        CandidateView(18, 40.0, 400.0, 0.7, 6.0, 5.0, "known", "inside known blob 1"),
    ]
    return ImageReport(
        image_id=image_id,
        name="csm_day040_blob.fits",
        path="/inbox/csm_day040_blob.fits",
        mjd=59357.9,
        obs_date=dt.datetime(2021, 5, 23, 22, 38, tzinfo=dt.timezone.utc),
        difference=diff,
        threshold=0.5,
        subframes=subframes,
        candidates=candidates,
        known_blobs=np.array([[40.0, 400.0, 5.0]]),
        prepared=rng.normal(0, 1, (512, 512)).astype(np.float32),
        saliency={1: rng.random((256, 256)).astype(np.float32)},
        provenance={"model": "papercnn.pt", "versions": {"torch": "2.x"}, "references": ["a", "b"]},
    )


def test_image_report_page_and_figures(tmp_path: Path) -> None:
    page = write_image_report(_report(), tmp_path)
    assert page == report_dir(tmp_path, 3, "csm_day040_blob.fits") / "report.html"
    assert page.parent.name == "00003_csm_day040_blob"
    names = sorted(p.name for p in page.parent.iterdir())
    assert names == ["difference.png", "probabilities.png", "report.html", "saliency_01.png"]
    for png in page.parent.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text()
    assert "csm_day040_blob.fits" in html and "2021-05-23 22:38:00 UTC" in html
    assert "300.2" in html and "(301.2, 101.8)" in html  # 0-based and DS9 1-based
    assert "&lt;b&gt;odd&lt;/b&gt; note" in html and "<b>odd</b>" not in html  # escaped
    assert 'src="saliency_01.png"' in html and "0.930" in html and "papercnn.pt" in html
    # grid: top row (largest y) first, as displayed
    assert html.index("#2<br>") < html.index("#0<br>")


@pytest.mark.parametrize(
    "name",
    [r"csm_$\foo$_blob.fits", r"a_$x^{$_blob.fits", "é" * 125 + ".fits", "b" * 250 + ".fits"],
)
def test_hostile_file_names_give_a_report(tmp_path: Path, name: str) -> None:
    report = dataclasses.replace(_report(), name=name, path=f"/inbox/{name}")
    page = write_image_report(report, tmp_path)
    assert page.parent == report_dir(tmp_path, 3, name) and page.is_file()
    assert len(os.fsencode(page.parent.name)) <= 100
    assert html.escape(name) in page.read_text(encoding="utf-8")


def test_long_names_are_bounded_with_a_hash_that_keeps_them_apart(tmp_path: Path) -> None:
    a, b = "x" * 300 + "_a.fits", "x" * 300 + "_b.fits"
    folder_a, folder_b = report_dir(tmp_path, 1, a), report_dir(tmp_path, 1, b)
    assert folder_a != folder_b and len(folder_a.name) == len(folder_b.name) == 100
    assert folder_a.name.startswith("00001_xxx")
    assert report_dir(tmp_path, 1, "csm_day040_blob.fits").name == "00001_csm_day040_blob"


def test_a_failing_figure_leaves_no_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from blobwatch.monitor import report as module

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib exploded")

    monkeypatch.setattr(module, "saliency_figure", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        write_image_report(_report(), tmp_path)
    folder = report_dir(tmp_path, 3, "csm_day040_blob.fits")
    assert not (folder / "report.html").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_index_and_blob_map_from_the_database(tmp_path: Path) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    reports = tmp_path / "reports"
    page = write_image_report(_report(image_id=2), reports)
    with Session() as s:
        s.add_all(
            [
                Image(path="/in/old_blob.fits", sha256="1" * 64, mjd=59300.0, status="registered"),
                Image(path="/in/csm_day040_blob.fits", sha256="2" * 64, mjd=59357.9, status="processed"),
                Image(
                    path="/in/bad_blob.fits", sha256="3" * 64, status="rejected", reason="truncated FITS file"
                ),
            ]
        )
        s.flush()
        run = Run(
            image_id=2,
            blobwatch_version="t",
            parameters={},
            timings={},
            max_probability=0.93,
            report_path=str(page),
        )
        s.add(run)
        s.flush()
        s.add(Candidate(run_id=run.id, image_id=2, x=300.25, y=100.75, probability=0.93, status="new"))
        s.add_all(
            [
                Blob(x=40.0, y=400.0, radius=5.0, depth=0.1, source="import", label="b1"),
                Blob(x=612.3, y=201.7, radius=7.0, depth=None, source="confirmed"),
            ]
        )
        s.commit()
        index = write_index(s, reports)
        blobmap = write_blobmap(s, reports)
    html = index.read_text()
    assert 'href="images/00002_csm_day040_blob/report.html"' in html
    assert "truncated FITS file" in html and "waiting" not in html.split("<table>")[1]
    assert "x=300.2 y=100.8 (301.2, 101.8)" in html and "0.930" in html
    assert html.index("csm_day040_blob.fits") < html.index("old_blob.fits")  # newest first
    bm = blobmap.read_text()
    assert "(613.3, 202.7)" in bm and "confirmed" in bm and (reports / "blobmap.png").is_file()


def test_provenance_is_formatted_for_display() -> None:
    from blobwatch.monitor.report import format_provenance

    table = format_provenance(
        image_path="/in/a.fits",
        image_sha256="ab" * 32,
        image_filter=None,
        model_path="/m.pt",
        model_sha256="f" * 64,
        model_metadata={"threshold": 0.2, "history": [1, 2]},
        versions={"torch": "2"},
        reference_paths=["/in/r1.fits", "/in/r2.fits", "/in/r3.fits"],
        method="registered-median",
        offsets=np.array([[0.1, -0.25], [0.0, 0.05]]),
        threshold=0.20412,
        run_id=7,
        worker="h:1:x",
        timings={"read": 0.1234},
    )
    assert table["filter"] == "—" and table["model"] == f"/m.pt (sha256 {'f' * 16}…)"
    assert table["model metadata"] == {"threshold": 0.2}
    assert table["references"] == "3 preceding images, r1.fits … r3.fits"
    assert table["largest reference offset (px)"] == "0.250" and table["threshold"] == "0.2041"
    assert table["timings (s)"] == {"read": "0.12"} and table["run id"] == 7
