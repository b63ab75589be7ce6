"""``blobwatch reprocess`` on Dask: the serial monitor's database, restartable after kill -9.

A ten-day 256x256 simulated archive (a new blob on day 7, three existing blobs that are found on
the first processed day and linked afterwards) and the hand-set classifier of
``handmade_model.py``; each test starts one small Dask cluster (about ten seconds).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

pytest.importorskip("distributed")

from blobwatch.cli import main
from blobwatch.monitor.db import Candidate, Image, Notification, Run, SubframePrediction, open_database
from blobwatch.monitor.reprocess import reprocess
from blobwatch.monitor.runner import MonitorSettings, run_monitor
from handmade_model import write_handmade_model
from monitor_support import simulate_inbox

SETTINGS = MonitorSettings(n_references=4, min_references=3)  # days 3-9 are processed
URL = "json://127.0.0.1:9/blobwatch"  # never reached: the tests' sender records the messages


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(archive folder, model file)."""
    root = tmp_path_factory.mktemp("archive")
    simulate_inbox(root / "images", n_days=10, size=256, new_blob_day=7, n_existing=3)
    return root / "images", write_handmade_model(root / "handmade.pt")


def _content(url: str) -> dict[str, list[tuple]]:
    """Everything the runs decided, without times, timings, report paths and claim tokens."""
    session_factory = open_database(url)
    with session_factory() as s:
        return {
            "images": [
                tuple(r)
                for r in s.execute(
                    select(
                        Image.id,
                        Image.path,
                        Image.sha256,
                        Image.mjd,
                        Image.status,
                        Image.reason,
                        Image.offset_dy,
                        Image.offset_dx,
                        Image.offset_frame_id,
                    ).order_by(Image.id)
                )
            ],
            "runs": [
                (r.id, r.image_id, r.threshold, r.max_probability, r.model_sha256, r.parameters)
                for r in s.scalars(select(Run).order_by(Run.id))
            ],
            "subframes": [
                tuple(r)
                for r in s.execute(
                    select(
                        SubframePrediction.run_id,
                        SubframePrediction.index,
                        SubframePrediction.probability,
                        SubframePrediction.flagged,
                    ).order_by(SubframePrediction.id)
                )
            ],
            "candidates": [
                tuple(r)
                for r in s.execute(
                    select(
                        Candidate.id,
                        Candidate.image_id,
                        Candidate.run_id,
                        Candidate.x,
                        Candidate.y,
                        Candidate.probability,
                        Candidate.radius,
                        Candidate.status,
                        Candidate.alerted,
                        Candidate.linked_to,
                        Candidate.known_blob_id,
                    ).order_by(Candidate.id)
                )
            ],
            "notifications": [
                tuple(r)
                for r in s.execute(
                    select(Notification.image_id, Notification.status, Notification.title).order_by(
                        Notification.id
                    )
                )
            ],
        }


@pytest.fixture(scope="module")
def serial(archive: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    """The serial monitor's database content on the archive (notifications to ``URL``)."""
    from blobwatch.classifier import BlobClassifier

    images, model = archive
    folder = tmp_path_factory.mktemp("serial")
    url = f"sqlite:///{folder / 'bw.db'}"
    summary = run_monitor(
        images,
        db=url,
        reports=folder / "reports",
        notify=[URL],
        settings=SETTINGS,
        classifier=BlobClassifier(model, device="cpu"),
        sender=lambda *a: None,
        echo=lambda line: None,
    )
    assert len(summary.processed) == 7
    return _content(url)


def test_reprocess_on_two_workers_gives_the_serial_monitors_database(
    archive: tuple[Path, Path],
    serial: dict[str, list[tuple]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, model = archive
    url = f"sqlite:///{tmp_path / 'bw.db'}"
    sent: list[str] = []
    summary = reprocess(
        images,
        db=url,
        reports=tmp_path / "reports",
        notify=[URL],
        model=model,
        settings=SETTINGS,
        workers=2,
        sender=lambda u, title, body, key: sent.append(title),
        progress=True,
        echo=lambda line: None,
    )
    assert summary.exit_code == 0 and len(summary.processed) == 7
    bar = capsys.readouterr().err  # the progress bar
    assert "reprocess: 100%" in bar and "7/7" in bar
    content = _content(url)
    assert content == serial
    statuses = {c[7] for c in content["candidates"]}
    assert {"new", "linked"} <= statuses  # the order-dependent part was exercised
    assert len(sent) == len(content["notifications"]) > 0
    assert all(Path(o.report).is_file() for o in summary.processed)


def _processed(url: str) -> int:
    with open_database(url)() as s:
        return s.scalar(select(func.count()).select_from(Image).where(Image.status == "processed")) or 0


def test_a_rerun_after_kill_9_finishes_the_rest_on_an_existing_scheduler(
    archive: tuple[Path, Path], serial: dict[str, list[tuple]], tmp_path: Path
) -> None:
    from dask.distributed import LocalCluster

    images, model = archive
    db = tmp_path / "bw.db"
    url = f"sqlite:///{db}"
    open_database(url)  # the schema exists before the child starts, so the polling below can read it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blobwatch.cli",
            "reprocess",
            str(images),
            "--db",
            url,
            "--reports",
            str(tmp_path / "reports"),
            "--model",
            str(model),
            "--workers",
            "1",
            "--references",
            "4",
            "--min-references",
            "3",
            "--notify",
            URL,
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _processed(url) < 2 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the client and its cluster's processes
        child.wait()
    done = _processed(url)
    assert 2 <= done < 7, f"{done} images processed when killed"

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        summary = reprocess(
            images,
            db=url,
            reports=tmp_path / "reports",
            notify=[URL],
            model=model,
            settings=SETTINGS,
            scheduler=cluster.scheduler_address,
            sender=lambda *a: None,
            progress=False,
            echo=lambda line: None,
        )
    assert len(summary.processed) == 7 - done and summary.exit_code == 0
    assert _content(url) == serial


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["reprocess", "{tmp}/missing"], "missing: archive folder not found"),
        (["reprocess", "{tmp}", "--workers", "0"], "--workers 0 must be at least 1"),
        (
            ["reprocess", "{tmp}", "--min-references", "40"],
            "--min-references 40 must be between 1 and --references 30",
        ),
        (
            ["reprocess", "{tmp}", "--base-url", "review.example"],
            "--base-url 'review.example': must be an http",
        ),
        (["reprocess", "{tmp}", "--threshold", "2"], "--threshold 2.0: must be a number between 0 and 1"),
    ],
)
def test_reprocess_bad_input_is_one_line_and_exit_2(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([a.format(tmp=tmp_path) for a in argv] + ["--db", f"sqlite:///{tmp_path / 'bw.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_reprocess_has_the_monitors_options_and_takes_them_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same pipeline options as ``monitor``, resolved the same way (`blobwatch.config`)."""
    from blobwatch.cli import _subparsers as subparsers
    from blobwatch.cli import build_parser

    commands = subparsers(build_parser()).choices
    options = {
        name: {o for a in commands[name]._actions for o in a.option_strings}
        for name in ("monitor", "reprocess")
    }
    assert options["monitor"] - {"--once", "--watch"} == options["reprocess"] - {"--workers", "--scheduler"}

    monkeypatch.chdir(tmp_path)
    for name in (
        "BLOBWATCH_CONFIG",
        "BLOBWATCH_DB",
        "BLOBWATCH_REPORTS",
        "BLOBWATCH_NOTIFY",
        "BLOBWATCH_BASE_URL",
        "BLOBWATCH_THRESHOLD",
        "BLOBWATCH_MODEL",
    ):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "archive").mkdir()
    (tmp_path / "blobwatch.toml").write_text('reports = "team-reports"\nmodel = "/no/such/model.pt"\n')
    assert main(["reprocess", "archive"]) == 2
    assert "/no/such/model.pt: model file not found" in capsys.readouterr().err
    (tmp_path / "blobwatch.toml").write_text('reports = "team-reports"\nreferences = 3\nmin_references = 2\n')
    monkeypatch.setenv("BLOBWATCH_BASE_URL", "quicklook:8000")
    assert main(["reprocess", "archive"]) == 2
    assert "$BLOBWATCH_BASE_URL='quicklook:8000': must be an http" in capsys.readouterr().err
    monkeypatch.delenv("BLOBWATCH_BASE_URL")
    assert main(["reprocess", "archive", "--min-references", "4"]) == 2
    assert "--min-references 4 must be between 1 and --references 3" in capsys.readouterr().err
    assert main(["reprocess", "archive", "--no-progress"]) == 0  # nothing to do: no cluster is started
    assert (tmp_path / "team-reports" / "blobwatch.db").is_file()


def test_a_reference_that_went_bad_is_rejected_and_its_images_sent_again(
    archive: tuple[Path, Path], tmp_path: Path
) -> None:
    """As in the serial monitor: the bad reference is rejected, each image that used it is computed
    again with the references chosen anew (or waits when too few are left)."""
    from dask.distributed import LocalCluster

    images, model = archive
    inbox = tmp_path / "inbox"
    shutil.copytree(images, inbox)
    url = f"sqlite:///{tmp_path / 'bw.db'}"
    run_monitor(
        inbox,
        db=url,
        reports=tmp_path / "reports",
        settings=MonitorSettings(n_references=10, min_references=10),
        echo=lambda line: None,
    )  # register only
    next(inbox.glob("csm_day001_blob.fits")).write_bytes(os.urandom(2880))  # damaged after registration
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0") as cluster:
        summary = reprocess(
            inbox,
            db=url,
            reports=tmp_path / "reports",
            model=model,
            settings=MonitorSettings(n_references=4, min_references=2),
            scheduler=cluster.scheduler_address,
            progress=False,
            echo=lambda line: None,
        )
    by_name = {o.name: o.status for o in summary.outcomes}
    assert by_name["csm_day002_blob.fits"] == "waiting"  # day 1 gone: only day 0 before it
    assert [o.name for o in summary.processed] == [f"csm_day{d:03d}_blob.fits" for d in range(3, 10)]
    with open_database(url)() as s:
        day1 = list(s.scalars(select(Image).where(Image.path.like("%day001%"))))
        assert len(day1) == 2 and all(d.status == "rejected" and "not a FITS file" in d.reason for d in day1)
        used = {i for r in s.scalars(select(Run)) for i in r.parameters["reference_image_ids"]}
        assert not {d.id for d in day1} & used and s.scalar(select(func.count()).select_from(Run)) == 7


def test_input_errors_survive_pickling() -> None:
    """A worker's InputError reaches the client with its file and problem."""
    import pickle

    from blobwatch.errors import InputError

    error = pickle.loads(pickle.dumps(InputError("a.fits", "not a FITS file")))
    assert (error.path, error.problem, str(error)) == ("a.fits", "not a FITS file", "a.fits: not a FITS file")
