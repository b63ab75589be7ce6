"""Notifications: configuration, message format, delivery bookkeeping and retries over real HTTP."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, update

from blobwatch.monitor.db import Candidate, Image, Notification, Run, open_database, utcnow
from blobwatch.monitor.notify import (
    STALE_SENDING,
    NotifyError,
    apprise_send,
    deliver_pending,
    format_alert,
    queue_notifications,
    redact_notify_url,
    validate_notify_urls,
)
from monitor_support import free_port, webhook_server


def test_urls_are_redacted_and_validated() -> None:
    shown = redact_notify_url("mailtos://alice:hunter2@mail.example.org")
    assert "hunter2" not in shown and shown.startswith("mailto")
    slack = redact_notify_url("slack://TokenAAAA/TokenBBBB/TokenCCCC/")
    assert "TokenBBBB" not in slack
    with pytest.raises(NotifyError, match="not a valid apprise URL"):
        validate_notify_urls(["nonsense-scheme://x"])
    validate_notify_urls(["json://127.0.0.1:1/x"])


def _image_with_candidates(Session) -> tuple[int, list[int]]:
    with Session() as s:
        image = Image(
            path="/inbox/csm_day040_blob.fits",
            sha256="b" * 64,
            status="processed",
            mjd=60500.125,
            obs_date=dt.datetime(2024, 7, 1, 3, 0, tzinfo=dt.timezone.utc),
        )
        s.add(image)
        s.flush()
        run = Run(image_id=image.id, blobwatch_version="t", parameters={}, timings={})
        s.add(run)
        s.flush()
        cands = [
            Candidate(run_id=run.id, image_id=image.id, x=511.96, y=300.04, probability=0.987),
            Candidate(run_id=run.id, image_id=image.id, x=12.0, y=1000.5, probability=0.61),
        ]
        s.add_all(cands)
        s.commit()
        return image.id, [c.id for c in cands]


def test_message_names_file_date_coordinates_and_report(tmp_path: Path) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    image_id, cids = _image_with_candidates(Session)
    with Session() as s:
        image = s.get(Image, image_id)
        title, body = format_alert(image, list(s.scalars(select(Candidate))), "/reports/x/report.html")
    assert title == "blobwatch: 2 new blob candidates in csm_day040_blob.fits"
    assert "csm_day040_blob.fits" in body and "2024-07-01 03:00:00 UTC" in body and "MJD 60500.12500" in body
    assert f"candidate {cids[0]}: x=512.0 y=300.0 (DS9 513.0, 301.0) probability 0.987" in body
    assert "x=12.0 y=1000.5 (DS9 13.0, 1001.5)" in body
    assert "Report: /reports/x/report.html" in body
    assert "No review app link (--base-url URL or base_url in blobwatch.toml adds one)" in body
    assert "Review: blobwatch catalog confirm ID  |" in body  # no database given: no --db


def test_message_links_each_candidate_to_the_review_app_and_names_the_database(tmp_path: Path) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    image_id, cids = _image_with_candidates(Session)
    with Session() as s:
        image = s.get(Image, image_id)
        _, body = format_alert(
            image,
            list(s.scalars(select(Candidate))),
            "/reports/x/report.html",
            base_url="https://blobs.example.org/review/",
            db_url="postgresql://ada:secret@db.example/blob watch",
        )
    lines = body.splitlines()
    first = lines.index(next(line for line in lines if f"candidate {cids[0]}:" in line))
    assert lines[first + 1] == f"    review: https://blobs.example.org/review/candidates/{cids[0]}"
    assert f"Image in the review app: https://blobs.example.org/review/images/{image_id}" in lines
    assert "No review app link" not in body and "secret" not in body
    assert (
        "Review: blobwatch catalog confirm ID --db 'postgresql://ada:***@db.example/blob watch'  |  "
        "blobwatch catalog reject ID --reason TEXT --db 'postgresql://ada:***@db.example/blob watch'"
    ) in lines


def test_failed_delivery_is_recorded_and_retried(tmp_path: Path) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    image_id, _ = _image_with_candidates(Session)
    urls = ["json://hook.example/a"]
    with Session() as s:
        image = s.get(Image, image_id)
        assert len(queue_notifications(s, image, urls, "t", "b")) == 1
        s.commit()
        assert queue_notifications(s, image, urls, "t", "b") == []  # never twice per image and URL
    calls: list[str] = []

    def down(url: str, title: str, body: str, key: str) -> None:
        calls.append(url)
        raise ConnectionError("connection refused")

    results = deliver_pending(Session, urls, sender=down)
    assert [r.ok for r in results] == [False] and "connection refused" in results[0].error
    with Session() as s:
        n = s.scalars(select(Notification)).one()
        assert (n.status, n.attempts) == ("failed", 1) and "connection refused" in n.last_error
        assert "hook.example" in n.url_redacted and n.url_hash != urls[0]
    # a URL that is no longer configured leaves the row alone
    assert deliver_pending(Session, ["json://other.example/"], sender=down) == []
    results = deliver_pending(Session, urls, sender=lambda u, t, b, k: calls.append(u))
    assert [r.ok for r in results] == [True] and len(calls) == 2
    with Session() as s:
        n = s.scalars(select(Notification)).one()
        assert (n.status, n.attempts, n.last_error) == ("sent", 2, None) and n.sent_at is not None
    assert deliver_pending(Session, urls, sender=down) == []  # sent: never again


def test_apprise_delivery_to_a_real_webhook_and_to_a_dead_port(tmp_path: Path) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    image_id, _ = _image_with_candidates(Session)
    dead = f"json://127.0.0.1:{free_port()}/hook"
    with webhook_server() as hook:
        with Session() as s:
            queue_notifications(s, s.get(Image, image_id), [hook.url, dead], "title here", "body x=1.0 y=2.0")
            s.commit()
        results = {r.url: r for r in deliver_pending(Session, [hook.url, dead])}
    assert results[hook.url].ok and not results[dead].ok and results[dead].error
    assert len(hook.received) == 1
    assert hook.received[0]["title"] == "title here" and "x=1.0 y=2.0" in hook.received[0]["message"]
    assert hook.received[0]["path"] == "/blobwatch"
    with Session() as s:
        sent = s.scalars(select(Notification).where(Notification.status == "sent")).one()
        assert hook.received[0]["idempotency_key"] == f"blobwatch-bbbbbbbbbbbb-{sent.id}"
        assert hook.received[0]["message"].endswith(f"\nAlert id: blobwatch-bbbbbbbbbbbb-{sent.id}")
    with Session() as s:
        statuses = sorted(n.status for n in s.scalars(select(Notification)))
    assert statuses == ["failed", "sent"]


def test_a_delivery_killed_midway_is_sent_again_with_the_same_idempotency_key(tmp_path: Path) -> None:
    Session = open_database(f"sqlite:///{tmp_path / 'bw.db'}")
    image_id, _ = _image_with_candidates(Session)
    with webhook_server() as hook:
        with Session() as s:
            queue_notifications(s, s.get(Image, image_id), [hook.url], "title", "body")
            s.commit()

        def delivered_then_killed(url: str, title: str, body: str, key: str) -> None:
            apprise_send(url, title, body, key)  # the service has it ...
            raise KeyboardInterrupt  # ... and the monitor dies before recording it

        with pytest.raises(KeyboardInterrupt):
            deliver_pending(Session, [hook.url], sender=delivered_then_killed)
        assert deliver_pending(Session, [hook.url]) == []  # a fresh claim is left alone
        with Session() as s:  # ... until it is stale
            s.execute(update(Notification).values(last_attempt_at=utcnow() - STALE_SENDING * 1.1))
            s.commit()
        assert [r.ok for r in deliver_pending(Session, [hook.url])] == [True]
    with Session() as s:
        n = s.scalars(select(Notification)).one()
        assert (n.status, n.attempts) == ("sent", 2)
    key = f"blobwatch-bbbbbbbbbbbb-{n.id}"
    assert [r["idempotency_key"] for r in hook.received] == [key, key]  # receiver can drop the copy
    assert hook.received[0]["message"] == hook.received[1]["message"] == f"body\nAlert id: {key}"
