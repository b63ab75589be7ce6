"""End to end: a simulated sequence, the monitor with the shipped model, a real local JSON webhook.

Eight 1024x1024 days, a new blob on day 6.  With ``min_references=5`` the monitor processes days
5, 6 and 7: day 5 must stay quiet, day 6 must alert once with the blob's coordinates, and day 7
(where the blob is still in the difference, the median not having absorbed it) must link to the
day-6 candidate instead of alerting again.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from blobwatch.modelfile import shipped_model_path
from blobwatch.monitor.catalog import import_catalog
from blobwatch.monitor.db import Candidate, Image, Notification, Run, SubframePrediction, open_database
from blobwatch.monitor.runner import MonitorSettings, run_monitor
from monitor_support import simulate_inbox, webhook_server

pytestmark = pytest.mark.skipif(
    not shipped_model_path().is_file(),
    reason="the shipped model src/blobwatch/data/papercnn.pt is not there yet",
)


def test_monitor_end_to_end_with_the_shipped_model(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    _, truth = simulate_inbox(sim, n_days=8, size=1024, new_blob_day=6, n_existing=60, seed=7)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path in sim.glob("*.fits"):
        shutil.copy(path, inbox / path.name)
    reports = tmp_path / "reports"
    Session = open_database(f"sqlite:///{tmp_path / 'blobwatch.db'}")
    with Session() as s:
        assert len(import_catalog(s, sim / "truth_blobs.ecsv").added) == 60

    with webhook_server() as hook:
        summary = run_monitor(
            inbox,
            db=Session,
            reports=reports,
            notify=[hook.url],
            settings=MonitorSettings(min_references=5),
            echo=lambda line: None,
        )
        assert summary.exit_code == 0 and summary.failed == []
        assert [o.name for o in summary.processed] == [f"csm_day{d:03d}_blob.fits" for d in (5, 6, 7)]
        day5, day6, day7 = summary.processed
        assert not day5.alert and day6.alert and not day7.alert

        # exactly one notification, for day 6, naming the blob where it is
        assert len(hook.received) == 1
        message = hook.received[0]["message"]
        assert "csm_day006_blob.fits" in message and "Report: " in message
        coords = [(float(x), float(y)) for x, y in re.findall(r"x=(\d+\.\d) y=(\d+\.\d)", message)]
        ds9 = [(float(x), float(y)) for x, y in re.findall(r"\(DS9 (\d+\.\d), (\d+\.\d)\)", message)]
        assert coords and len(ds9) == len(coords)
        best = min(coords, key=lambda c: np.hypot(c[0] - truth["x"], c[1] - truth["y"]))
        assert np.hypot(best[0] - truth["x"], best[1] - truth["y"]) < 3.0
        assert ds9[coords.index(best)] == pytest.approx((best[0] + 1, best[1] + 1), abs=0.051)

        # running again changes nothing
        again = run_monitor(
            inbox,
            db=Session,
            reports=reports,
            notify=[hook.url],
            settings=MonitorSettings(min_references=5),
            echo=lambda line: None,
        )
        assert again.outcomes == [] and len(hook.received) == 1

    with Session() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 3
        assert s.scalar(select(func.count()).select_from(SubframePrediction)) == 3 * 16
        image6 = s.scalars(select(Image).where(Image.path.like("%day006%"))).one()
        new = list(
            s.scalars(select(Candidate).where(Candidate.image_id == image6.id, Candidate.status == "new"))
        )
        assert any(np.hypot(c.x - truth["x"], c.y - truth["y"]) < 3.0 for c in new)
        image7 = s.scalars(select(Image).where(Image.path.like("%day007%"))).one()
        later = list(s.scalars(select(Candidate).where(Candidate.image_id == image7.id)))
        assert all(c.status in ("linked", "known") for c in later)
        assert {c.linked_to for c in later if c.status == "linked"} <= {c.id for c in new}
        notes = list(s.scalars(select(Notification)))
        assert [(n.image_id, n.status, n.attempts) for n in notes] == [(image6.id, "sent", 1)]
        run6 = s.scalars(select(Run).where(Run.image_id == image6.id)).one()
        flagged = list(
            s.scalars(
                select(SubframePrediction).where(
                    SubframePrediction.run_id == run6.id, SubframePrediction.flagged
                )
            )
        )
        report = Path(run6.report_path)

    # the report: page, difference image, probability grid, a saliency map per flagged subframe
    assert report.is_file() and (report.parent / "difference.png").is_file()
    assert (report.parent / "probabilities.png").is_file()
    assert all(Path(f.saliency_path).is_file() for f in flagged)
    html = report.read_text()
    assert "csm_day006_blob.fits" in html and "Provenance" in html and "papercnn" in html.lower()
    assert f"{best[0]:.1f}" in html and f"({best[0] + 1:.1f}, {best[1] + 1:.1f})" in html
    index = (reports / "index.html").read_text()
    assert index.count("report</a>") == 3 and "blobmap.html" in index
    assert not list(reports.rglob(".*.tmp"))
