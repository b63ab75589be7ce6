"""The monitor job and its reliability rules, on small simulated inboxes.

The classifier is the hand-set PaperCNN of ``handmade_model.py`` (a real, deterministic box-filter
detector), so these tests do not depend on the trained model; ``test_monitor_e2e.py`` runs the
shipped model.  Images are 256x256 (one subframe) and few, to stay fast.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select

from blobwatch.monitor import report as report_module
from blobwatch.monitor.catalog import confirm_candidate, import_catalog
from blobwatch.monitor.db import (
    Blob,
    Candidate,
    Image,
    Notification,
    Run,
    SubframePrediction,
    open_database,
)
from blobwatch.monitor.runner import MonitorSettings, _classify_candidates, discover, run_monitor
from handmade_model import write_handmade_model
from monitor_support import free_port, simulate_inbox, webhook_server

SETTINGS = MonitorSettings(min_references=3)  # days 3 and 4 are processed
LATE = MonitorSettings(min_references=4)  # only day 4 (with the new blob) is processed
TABLES = (Image, Run, SubframePrediction, Candidate, Notification, Blob)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory):
    from blobwatch.classifier import BlobClassifier

    return BlobClassifier(
        write_handmade_model(tmp_path_factory.mktemp("model") / "handmade.pt"), device="cpu"
    )


@pytest.fixture(scope="module")
def sequence(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Five 256x256 days; a new blob on the last."""
    root = tmp_path_factory.mktemp("sequence")
    _, truth = simulate_inbox(root, n_days=5, size=256, new_blob_day=4, n_existing=3)
    return root, truth


@pytest.fixture
def inbox(sequence: tuple[Path, dict], tmp_path: Path) -> Path:
    """A private copy of the images (without the truth files) in a nested inbox."""
    root, _ = sequence
    target = tmp_path / "inbox" / "2026"
    target.mkdir(parents=True)
    for path in sorted(root.glob("*.fits")):
        shutil.copy(path, target / path.name)
    return tmp_path / "inbox"


def _counts(Session) -> dict[str, int]:
    with Session() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in TABLES}


def _run(inbox: Path, Session, tmp_path: Path, classifier, **kwargs):
    kwargs.setdefault("settings", SETTINGS)
    return run_monitor(
        inbox,
        db=Session,
        reports=tmp_path / "reports",
        classifier=classifier,
        echo=lambda line: None,
        **kwargs,
    )


def test_discover_finds_fits_recursively(inbox: Path) -> None:
    (inbox / ".hidden").mkdir()
    (inbox / ".hidden" / "x.fits").write_bytes(b"")
    (inbox / "notes.txt").write_text("not an image")
    found = discover(inbox)
    assert [p.name for p in found] == [f"csm_day{d:03d}_blob.fits" for d in range(5)]


def test_a_run_processes_in_time_order_and_a_second_run_adds_nothing(
    inbox: Path, tmp_path: Path, classifier, sequence: tuple[Path, dict]
) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    with webhook_server() as hook:
        first = _run(inbox, Session, tmp_path, classifier, notify=[hook.url])
        assert first.exit_code == 0 and first.registered == 5
        assert [o.name for o in first.processed] == ["csm_day003_blob.fits", "csm_day004_blob.fits"]
        counts = _counts(Session)
        assert counts["images"] == 5 and counts["runs"] == 2 and counts["subframe_predictions"] == 2
        alerts = [o for o in first.processed if o.alert]
        assert counts["notifications"] == len(alerts) == len(hook.received)
        second = _run(inbox, Session, tmp_path, classifier, notify=[hook.url])
        assert second.exit_code == 0 and second.registered == 0 and second.outcomes == []
        assert _counts(Session) == counts
        assert len(hook.received) == len(alerts)
    # the new blob of day 4 was found and alerted at the right place
    _, truth = sequence
    day4 = first.processed[1]
    assert day4.alert
    new = [c for c in day4.candidates if c["status"] == "new"]
    assert min(np.hypot(c["x"] - truth["x"], c["y"] - truth["y"]) for c in new) < 3.0
    message = hook.received[-1]["message"]
    assert "csm_day004_blob.fits" in message and "(DS9 " in message
    with Session() as s:
        images = {im.name: im for im in s.scalars(select(Image))}
        assert images["csm_day000_blob.fits"].status == "registered"  # too few earlier images
        assert images["csm_day004_blob.fits"].status == "processed"
        run = s.scalars(select(Run).where(Run.image_id == images["csm_day004_blob.fits"].id)).one()
        assert run.parameters["n_references"] == 4 and len(run.parameters["offsets"]) == 4
        assert run.model_sha256 and run.torch_version and set(run.timings) >= {"read", "difference", "total"}
        assert Path(run.report_path).is_file()
        # the deciding model is the localizing network's; the seed classifier's is recorded beside it
        assert run.parameters["detector"] == "fcn" and run.model_path.endswith("blob_unet.pt")
        assert run.model_metadata["subframe_model"]["sha256"]
        assert "localizing network" in Path(run.report_path).read_text()
    assert (tmp_path / "reports" / "index.html").is_file() and (
        tmp_path / "reports" / "blobmap.html"
    ).is_file()


def _write_bad_files(folder: Path, good: Path) -> dict[str, str]:
    """Four bad files beside the good ones; returns {name: expected reason fragment}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt_blob.fits").write_bytes(os.urandom(5760))
    raw = good.read_bytes()
    (folder / "truncated_blob.fits").write_bytes(raw[: len(raw) - 2880 - 100])
    header = fits.getheader(good)
    noisy = 1 + 0.01 * np.random.default_rng(0).standard_normal((300, 300), dtype=np.float32)
    fits.PrimaryHDU(noisy, header=header).writeto(folder / "shape_blob.fits")
    fits.PrimaryHDU(np.full((256, 256), np.nan, np.float32), header=header).writeto(folder / "nan_blob.fits")
    return {
        "corrupt_blob.fits": "not a FITS file",
        "truncated_blob.fits": "truncated",
        "shape_blob.fits": "shape 300x300 does not match",
        "nan_blob.fits": "all pixels are non-finite",
    }


def test_bad_files_are_rejected_with_reasons_and_do_not_stop_the_others(
    inbox: Path, tmp_path: Path, classifier
) -> None:
    expected = _write_bad_files(inbox / "bad", next(inbox.rglob("csm_day000_blob.fits")))
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    summary = _run(inbox, Session, tmp_path, classifier, settings=LATE)
    assert summary.exit_code == 1
    assert sorted(o.name for o in summary.rejected) == sorted(expected)
    assert [o.name for o in summary.processed] == ["csm_day004_blob.fits"]
    with Session() as s:
        for image in s.scalars(select(Image).where(Image.status == "rejected")):
            assert expected[image.name] in image.reason
    # recorded once: the next run adds nothing and is clean
    again = _run(inbox, Session, tmp_path, classifier, settings=LATE)
    assert again.exit_code == 0 and again.rejected == [] and _counts(Session)["images"] == 9
    assert "not a FITS file" in (tmp_path / "reports" / "index.html").read_text()


def test_a_crash_mid_image_leaves_no_rows_and_the_image_is_redone(
    inbox: Path, tmp_path: Path, classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    real = report_module.write_image_report

    def crash_on_day4(report, reports):
        if report.name == "csm_day004_blob.fits":
            raise RuntimeError("disk on fire")
        return real(report, reports)

    monkeypatch.setattr(report_module, "write_image_report", crash_on_day4)
    with webhook_server() as hook:
        summary = _run(inbox, Session, tmp_path, classifier, notify=[hook.url])
        assert [o.status for o in summary.outcomes] == ["processed", "failed"]
        assert "disk on fire" in summary.failed[0].reason and summary.exit_code == 1
        with Session() as s:
            day4 = s.scalars(select(Image).where(Image.path.like("%day004%"))).one()
            assert day4.status == "registered" and day4.claimed_by is None
            for table in (Run, Candidate, Notification):
                assert s.scalar(select(func.count()).select_from(table).where(table.image_id == day4.id)) == 0
            assert s.scalar(select(func.count()).select_from(Run)) == 1
        n_before = len(hook.received)
        monkeypatch.setattr(report_module, "write_image_report", real)
        again = _run(inbox, Session, tmp_path, classifier, notify=[hook.url])
        assert [o.name for o in again.processed] == ["csm_day004_blob.fits"] and again.exit_code == 0
        assert len(hook.received) == n_before + 1  # its alert goes out once, now


def test_a_killed_monitor_leaves_its_image_to_the_next_run(inbox: Path, tmp_path: Path, classifier) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    _run(inbox, Session, tmp_path, classifier, settings=MonitorSettings(min_references=10))  # register only
    with Session() as s:  # a monitor on this host claimed day 4 and was killed (its pid is gone)
        image = s.scalars(select(Image).where(Image.path.like("%day004%"))).one()
        image.status, image.claimed_by = "processing", f"{socket.gethostname()}:999999999"
        image.claimed_at = image.registered_at
        s.commit()
    summary = _run(inbox, Session, tmp_path, classifier, settings=LATE)
    assert [o.name for o in summary.processed] == ["csm_day004_blob.fits"]
    assert _counts(Session)["runs"] == 1


def test_an_image_claimed_by_a_live_monitor_is_left_alone(inbox: Path, tmp_path: Path, classifier) -> None:
    from blobwatch.monitor.db import utcnow

    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    _run(inbox, Session, tmp_path, classifier, settings=MonitorSettings(min_references=10))  # register only
    with Session() as s:
        image = s.scalars(select(Image).where(Image.path.like("%day004%"))).one()
        image.status, image.claimed_by, image.claimed_at = "processing", "other-host:1", utcnow()
        s.commit()
    summary = _run(inbox, Session, tmp_path, classifier)
    assert [o.name for o in summary.processed] == ["csm_day003_blob.fits"]
    assert _counts(Session)["runs"] == 1


def test_two_monitors_at_once_process_each_image_once(inbox: Path, tmp_path: Path, classifier) -> None:
    url = f"sqlite:///{tmp_path / 'bw.db'}"
    open_database(url)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def monitor() -> None:
        try:
            Session = open_database(url)
            barrier.wait()
            results.append(_run(inbox, Session, tmp_path, classifier))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=monitor) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    processed = sorted(o.name for r in results for o in r.processed)
    assert processed == ["csm_day003_blob.fits", "csm_day004_blob.fits"]
    counts = _counts(open_database(url))
    assert counts["images"] == 5 and counts["runs"] == 2


def test_a_notification_service_that_is_down_is_retried_next_run(
    inbox: Path, tmp_path: Path, classifier
) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    port = free_port()
    url = f"json://127.0.0.1:{port}/blobwatch"
    first = _run(inbox, Session, tmp_path, classifier, notify=[url], settings=LATE)
    n_alerts = sum(o.alert for o in first.processed)
    assert n_alerts >= 1 and first.exit_code == 1
    with Session() as s:
        rows = list(s.scalars(select(Notification)))
        assert len(rows) == n_alerts and all(n.status == "failed" and n.attempts == 1 for n in rows)
        assert all(n.last_error for n in rows)
    with webhook_server(port=port) as hook:
        second = _run(inbox, Session, tmp_path, classifier, notify=[url], settings=LATE)
        assert second.outcomes == [] and second.exit_code == 0
        assert len(hook.received) == n_alerts
        third = _run(inbox, Session, tmp_path, classifier, notify=[url], settings=LATE)
        assert third.deliveries == [] and len(hook.received) == n_alerts
    with Session() as s:
        assert all(n.status == "sent" and n.attempts == 2 for n in s.scalars(select(Notification)))


def test_known_and_linked_candidates_are_not_alerted(tmp_path: Path) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")

    class Found:
        def __init__(self, x: float, y: float) -> None:
            self.x, self.y, self.probability, self.significance, self.radius, self.subframe = (
                x,
                y,
                0.9,
                9.0,
                6.0,
                0,
            )

    with Session() as s:
        earlier = Image(path="a.fits", sha256="1" * 64, mjd=100.0, status="processed")
        rejected_day = Image(path="b.fits", sha256="2" * 64, mjd=100.5, status="processed")
        today = Image(path="c.fits", sha256="3" * 64, mjd=101.0, status="processing")
        s.add_all([earlier, rejected_day, today])
        s.flush()
        run = Run(image_id=earlier.id, blobwatch_version="t", parameters={}, timings={})
        run2 = Run(image_id=rejected_day.id, blobwatch_version="t", parameters={}, timings={})
        s.add_all([run, run2])
        s.flush()
        s.add_all(
            [
                Candidate(
                    run_id=run.id,
                    image_id=earlier.id,
                    x=100.0,
                    y=100.0,
                    probability=0.9,
                    radius=6.0,
                    status="new",
                ),
                Candidate(
                    run_id=run2.id,
                    image_id=rejected_day.id,
                    x=200.0,
                    y=50.0,
                    probability=0.9,
                    radius=6.0,
                    status="rejected",
                    reason="dip",
                ),
            ]
        )
        blob = Blob(x=30.0, y=30.0, radius=5.0, source="import")
        s.add(blob)
        s.commit()
        found = [Found(31.5, 30.0), Found(102.0, 101.0), Found(200.0, 50.0), Found(400.0, 400.0)]
        out = _classify_candidates(s, today, found, [blob], MonitorSettings())
    assert [o["status"] for o in out] == ["known", "linked", "new", "new"]
    assert out[0]["known_blob_id"] == blob.id and out[1]["linked_to"] == 1


@pytest.mark.slow  # the same path runs in test_monitor_cli.py (catalog confirm); this one checks accuracy
def test_confirming_a_found_blob_measures_it_from_the_images(
    inbox: Path, tmp_path: Path, classifier, sequence: tuple[Path, dict]
) -> None:
    root, truth = sequence
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    with Session() as s:
        assert len(import_catalog(s, root / "truth_blobs.ecsv").added) == 3
    _run(inbox, Session, tmp_path, classifier, settings=LATE)
    with Session() as s:
        cands = list(s.scalars(select(Candidate).where(Candidate.status == "new")))
        best = min(cands, key=lambda c: np.hypot(c.x - truth["x"], c.y - truth["y"]))
        blob = confirm_candidate(s, best.id, reviewer="Ada")
    assert np.hypot(blob.x - truth["x"], blob.y - truth["y"]) < 1.0
    assert blob.depth == pytest.approx(truth["depth"], rel=0.35)
    assert 3.0 < blob.radius < 12.0


@pytest.mark.slow
def test_a_reference_that_went_bad_is_rejected_and_the_image_waits(
    inbox: Path, tmp_path: Path, classifier
) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    _run(inbox, Session, tmp_path, classifier, settings=MonitorSettings(min_references=10))  # register only
    next(inbox.rglob("csm_day001_blob.fits")).write_bytes(os.urandom(2880))  # damaged after registration
    summary = _run(inbox, Session, tmp_path, classifier, settings=MonitorSettings(min_references=2))
    by_name = {o.name: o for o in summary.outcomes}
    assert by_name["csm_day002_blob.fits"].status == "waiting"  # day 1 gone: only day 0 before it
    assert [o.name for o in summary.processed] == ["csm_day003_blob.fits", "csm_day004_blob.fits"]
    with Session() as s:
        # the registered content and the new (damaged) content of that path: both rejected
        day1 = list(s.scalars(select(Image).where(Image.path.like("%day001%"))))
        day2 = s.scalars(select(Image).where(Image.path.like("%day002%"))).one()
        assert len(day1) == 2 and all(d.status == "rejected" and "not a FITS file" in d.reason for d in day1)
        assert day2.status == "registered" and day2.claimed_by is None
        day3 = s.scalars(select(Image).where(Image.path.like("%day003%"))).one()
        runs3 = list(s.scalars(select(Run).where(Run.image_id == day3.id)))
        assert len(runs3) == 1, [(r.id, r.parameters["reference_image_ids"]) for r in s.scalars(select(Run))]
        run3 = runs3[0]
        assert not {d.id for d in day1} & set(run3.parameters["reference_image_ids"])


def test_which_claims_count_as_dead() -> None:
    from blobwatch.monitor.db import claim_holder_dead, worker_name

    host = socket.gethostname()
    assert claim_holder_dead(f"{host}:999999999")  # no such process here
    assert not claim_holder_dead(worker_name())  # this process: maybe another call is working
    assert not claim_holder_dead(f"{host}:1")  # init is alive
    assert not claim_holder_dead("other-host:999999999:abc")  # cannot tell: wait for staleness
    assert not claim_holder_dead(None)
    assert worker_name() != worker_name()


@pytest.mark.parametrize("expstart", [1e9, -1e9, 1e300])
def test_a_file_with_an_impossible_date_is_rejected_alone(
    inbox: Path, tmp_path: Path, classifier, expstart: float
) -> None:
    good = next(inbox.rglob("csm_day000_blob.fits"))
    header = fits.getheader(good)
    header["EXPSTART"] = expstart
    bad = inbox / "0_bad_date_blob.fits"  # discovered before every good file
    fits.PrimaryHDU(fits.getdata(good) * np.float32(1.001), header=header).writeto(bad)
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    summary = _run(inbox, Session, tmp_path, classifier, settings=LATE)
    assert summary.exit_code == 1 and summary.registered == 6
    assert [o.name for o in summary.rejected] == [bad.name]
    assert "EXPSTART" in summary.rejected[0].reason
    assert [o.name for o in summary.processed] == ["csm_day004_blob.fits"]
    with Session() as s:
        row = s.scalars(select(Image).where(Image.status == "rejected")).one()
        assert row.path == str(bad) and row.mjd is None and "EXPSTART" in row.reason


def test_an_unforeseen_error_reading_one_file_rejects_only_that_file(
    inbox: Path, tmp_path: Path, classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blobwatch import fits_io

    real = fits_io.read_blob_image

    def fails_on_day1(path, **kwargs):
        if Path(path).name == "csm_day001_blob.fits":
            raise RuntimeError("a defect nobody foresaw")
        return real(path, **kwargs)

    monkeypatch.setattr(fits_io, "read_blob_image", fails_on_day1)
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    summary = _run(inbox, Session, tmp_path, classifier, settings=SETTINGS)
    assert summary.exit_code == 1 and summary.registered == 5
    assert [(o.name, o.reason) for o in summary.rejected] == [
        ("csm_day001_blob.fits", "cannot be read (RuntimeError: a defect nobody foresaw)")
    ]
    assert [o.name for o in summary.processed] == ["csm_day004_blob.fits"]  # 3 valid days before it


def test_an_image_with_a_hostile_name_is_processed(inbox: Path, tmp_path: Path, classifier) -> None:
    day4 = next(inbox.rglob("csm_day004_blob.fits"))
    hostile = day4.rename(day4.with_name("csm_$\\foo$_" + "é" * 110 + "\n_blob.fits"))  # 237 bytes
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    lines: list[str] = []
    summary = run_monitor(
        inbox,
        db=Session,
        reports=tmp_path / "reports",
        classifier=classifier,
        settings=LATE,
        echo=lines.append,
    )
    assert summary.exit_code == 0 and [o.name for o in summary.processed] == [hostile.name]
    assert Path(summary.processed[0].report).is_file()
    assert len(lines) == 1 and "\n" not in lines[0] and "\\n_blob.fits" in lines[0]


def test_a_gzip_compressed_image_is_registered_and_used(inbox: Path, tmp_path: Path, classifier) -> None:
    import gzip

    day1 = next(inbox.rglob("csm_day001_blob.fits"))
    packed = day1.with_name(day1.name + ".gz")
    packed.write_bytes(gzip.compress(day1.read_bytes()))
    day1.unlink()
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    summary = _run(inbox, Session, tmp_path, classifier, settings=LATE)
    assert summary.exit_code == 0 and summary.registered == 5 and summary.rejected == []
    assert [o.name for o in summary.processed] == ["csm_day004_blob.fits"]
    with Session() as s:
        run = s.scalars(select(Run)).one()
        assert str(packed) in run.parameters["reference_paths"]


def test_garbage_images_are_rejected_by_the_quality_gates_and_never_used(
    inbox: Path, tmp_path: Path, classifier
) -> None:
    good = next(inbox.rglob("csm_day000_blob.fits"))
    data, header = fits.getdata(good), fits.getheader(good)
    garbage = inbox / "garbage"
    garbage.mkdir()
    old = header.copy()
    old["EXPSTART"] = 47892.0  # 1990: before WFC3 existed, would be the earliest reference
    fits.PrimaryHDU(data * np.float32(1.001), header=old).writeto(garbage / "old_blob.fits")
    fits.PrimaryHDU(np.zeros_like(data), header=header).writeto(garbage / "zero_blob.fits")
    fits.PrimaryHDU(np.stack([data] * 5), header=header).writeto(garbage / "cube5_blob.fits")
    fits.PrimaryHDU(-data, header=header).writeto(garbage / "negated_blob.fits")
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    summary = _run(inbox, Session, tmp_path, classifier, settings=LATE)
    reasons = {o.name: o.reason for o in summary.rejected}
    assert sorted(reasons) == ["cube5_blob.fits", "negated_blob.fits", "old_blob.fits", "zero_blob.fits"]
    assert "outside the WFC3/IR era" in reasons["old_blob.fits"]
    assert (
        "median level 0 " in reasons["zero_blob.fits"]
        and "median level -0.99" in reasons["negated_blob.fits"]
    )
    assert reasons["cube5_blob.fits"] == "cube has 5 planes, not 3"
    assert summary.exit_code == 1 and [o.name for o in summary.processed] == ["csm_day004_blob.fits"]
    with Session() as s:
        assert {
            im.name: im.reason for im in s.scalars(select(Image).where(Image.status == "rejected"))
        } == reasons
        run = s.scalars(select(Run)).one()
        assert all(Path(p).parent != garbage for p in run.parameters["reference_paths"])


def test_an_unreadable_file_is_recorded_as_rejected_once(
    inbox: Path, tmp_path: Path, classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blobwatch import fits_io

    locked = inbox / "locked_blob.fits"
    locked.write_bytes(b"x")
    real = fits_io.file_sha256

    def denied(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(fits_io, "file_sha256", denied)
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    summary = _run(inbox, Session, tmp_path, classifier, settings=LATE)
    assert summary.exit_code == 1
    assert [(o.name, o.reason) for o in summary.rejected] == [
        ("locked_blob.fits", "cannot read file (Permission denied)")
    ]
    assert [o.name for o in summary.processed] == ["csm_day004_blob.fits"]
    again = _run(inbox, Session, tmp_path, classifier, settings=LATE)
    assert again.exit_code == 0 and again.rejected == [] and _counts(Session)["images"] == 6


def test_watch_goes_on_after_a_failed_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from blobwatch.monitor import runner

    calls: list[str] = []

    def flaky_run(inbox, **kwargs):
        calls.append(str(inbox))
        if len(calls) == 1:
            raise OSError(5, "Input/output error")  # e.g. the inbox share went away for a moment
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C: the only way out

    monkeypatch.setattr(runner, "run_monitor", flaky_run)
    monkeypatch.setattr(runner.time, "sleep", lambda seconds: None)
    with pytest.raises(KeyboardInterrupt):
        runner.watch("/inbox", 60.0, classifier=object())
    assert calls == ["/inbox"] * 3
    assert (
        "monitor run failed; the next run starts in 60 s" in caplog.text
        and "Input/output error" in caplog.text
    )


def test_a_database_failure_while_registering_is_not_swallowed(
    inbox: Path, tmp_path: Path, classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session as OrmSession

    real_commit = OrmSession.commit

    def commit(self) -> None:
        if any(isinstance(o, Image) and o.path.endswith("day002_blob.fits") for o in self.new):
            raise OperationalError("INSERT INTO images", {}, Exception("disk I/O error"))
        real_commit(self)

    monkeypatch.setattr(OrmSession, "commit", commit)
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    with pytest.raises(OperationalError, match="disk I/O error"):
        _run(inbox, Session, tmp_path, classifier, settings=LATE)
    with Session() as s:  # the files before it are registered, nothing of it or after it
        assert sorted(im.name for im in s.scalars(select(Image))) == [
            "csm_day000_blob.fits",
            "csm_day001_blob.fits",
        ]


def test_the_same_content_registered_by_another_monitor_meanwhile_is_skipped(
    inbox: Path, tmp_path: Path, classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blobwatch import fits_io

    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    day2 = next(inbox.rglob("csm_day002_blob.fits"))
    real = fits_io.read_blob_image

    def race(path, **kwargs):  # another monitor commits day 2 while this one reads it
        if Path(path) == day2:
            with Session() as s:
                s.add(Image(path=str(day2), sha256=fits_io.file_sha256(day2), status="registered", mjd=1.0))
                s.commit()
        return real(path, **kwargs)

    monkeypatch.setattr(fits_io, "read_blob_image", race)
    summary = _run(inbox, Session, tmp_path, classifier, settings=MonitorSettings(min_references=10))
    assert summary.registered == 4 and summary.exit_code == 0 and _counts(Session)["images"] == 5


def test_compute_image_finds_the_new_blob_without_a_database(sequence: tuple[Path, dict], classifier) -> None:
    from blobwatch.fits_io import read_blob_image
    from blobwatch.monitor.runner import compute_image

    root, truth = sequence
    images = [read_blob_image(p) for p in sorted(root.glob("*.fits"))]
    result = compute_image(images[4], images[:4], classifier, LATE)
    found = result.detection.candidates
    assert min(np.hypot(c.x - truth["x"], c.y - truth["y"]) for c in found) < 3.0
    assert result.max_probability >= result.detection.threshold
    assert result.parameters["n_references"] == 4 and len(result.parameters["offsets"]) == 4
    assert result.parameters["reference_paths"] == [im.path for im in images[:4]]
    assert set(result.timings) == {"difference", "detect", "saliency"}
    held = {c.subframe for c in found}
    assert set(result.saliency) == {s.index for s in result.detection.subframes if s.blob} | held
    # the default detector is the localizing network: recorded, with its saliency beside the seed's
    assert result.parameters["detector"] == "fcn" and {c.source for c in found} == {"fcn"}
    assert set(result.localizer_saliency) == held
    paper = compute_image(images[4], images[:4], classifier, dataclasses.replace(LATE, detector="paper"))
    assert paper.parameters["detector"] == "paper" and paper.localizer_saliency == {}
    assert min(np.hypot(c.x - truth["x"], c.y - truth["y"]) for c in paper.detection.candidates) < 3.0
    with pytest.raises(ValueError, match="detector 'cnn' is not one of fcn, paper"):
        MonitorSettings(detector="cnn")


def test_each_image_is_registered_once_to_a_fixed_frame_and_differences_use_the_stored_offsets(
    inbox: Path, tmp_path: Path, classifier
) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    _run(inbox, Session, tmp_path, classifier)
    with Session() as s:
        images = list(s.scalars(select(Image).order_by(Image.mjd)))
        frame = images[0]
        assert {im.offset_frame_id for im in images} == {frame.id}
        assert (frame.offset_dy, frame.offset_dx) == (0.0, 0.0)
        assert all(im.offset_dy is not None and abs(im.offset_dx) < 1.0 for im in images)
        run = s.scalars(select(Run).where(Run.image_id == images[4].id)).one()
        stored = [
            [im.offset_dy - images[4].offset_dy, im.offset_dx - images[4].offset_dx] for im in images[:4]
        ]
        np.testing.assert_allclose(run.parameters["offsets"], stored, atol=1e-4)
        assert "4 of 4 offsets from the images' stored offsets" in run.parameters["registration_method"]
        # measured once: a later run does not measure again
        s.execute(Image.__table__.update().where(Image.id == images[4].id).values(offset_dy=99.0))
        s.commit()
    _run(inbox, Session, tmp_path, classifier)
    with Session() as s:
        assert s.get(Image, images[4].id).offset_dy == 99.0
