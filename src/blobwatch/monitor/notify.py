"""Notifications of new blob candidates through apprise, with retry bookkeeping.

URLs are apprise URLs (``mailtos://``, ``slack://``, ``msteams://``, ``json://host:port/path``
for a JSON webhook, ...).  They come from the command line, the ``BLOBWATCH_NOTIFY``
environment variable or the config file (`blobwatch.config`), never from the repository, and are never stored:
the database keeps a SHA-256 of each URL (to find it again on a retry) and a redacted form.

Life of an alert: the runner queues one ``pending`` row per (image, URL) in the same transaction
as the image's results; after the commit `deliver_pending` claims each row (``sending``), sends
it and marks it ``sent`` or ``failed`` (with the error).  Failed and pending rows are retried on
the next run; the unique (image, URL) constraint means one alert per image and URL is queued.
Delivery is at least once: a monitor killed between sending and recording ``sent`` leaves the row
``sending``, and it is sent again after `STALE_SENDING`.  Every delivery of a row carries the same
idempotency key (`notification_key`), so a receiver can drop the copy.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from blobwatch.errors import BlobwatchError
from blobwatch.monitor.db import Candidate, Image, Notification, hash_text, redact_url, rows_changed, utcnow

__all__ = [
    "IDEMPOTENCY_HEADER",
    "DeliveryResult",
    "apprise_send",
    "deliver_pending",
    "format_alert",
    "notification_key",
    "queue_notifications",
    "redact_notify_url",
]

log = logging.getLogger(__name__)

#: A ``sending`` claim older than this belongs to a monitor that died; it is retried.
STALE_SENDING = _dt.timedelta(minutes=10)

#: HTTP header that carries the idempotency key on apprise's json://, xml:// and form:// webhooks.
IDEMPOTENCY_HEADER = "Idempotency-Key"

#: ``send(url, title, body, key) -> None`` (``key``: `notification_key`); raises on failure.
Sender = Callable[[str, str, str, str], None]


class NotifyError(BlobwatchError):
    """A notification URL or configuration is unusable, or a delivery failed."""


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def redact_notify_url(url: str) -> str:
    """A form of ``url`` safe to store and show: apprise's privacy rendering, no query string."""
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url)
        if plugin is not None:
            return plugin.url(privacy=True).split("?", 1)[0]
    except Exception:  # pragma: no cover - apprise internals
        pass
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"{scheme}://***"


def validate_notify_urls(urls: Sequence[str]) -> None:
    """Raise `NotifyError` naming the first URL apprise does not understand."""
    import apprise

    apprise_log = logging.getLogger("apprise")
    level = apprise_log.level
    apprise_log.setLevel(logging.CRITICAL)  # its "Unsupported URL" lines would repeat ours, unredacted
    try:
        for url in urls:
            if apprise.Apprise.instantiate(url) is None:
                raise NotifyError(f"notification URL {redact_notify_url(url)!r} is not a valid apprise URL")
    finally:
        apprise_log.setLevel(level)


# --------------------------------------------------------------------------------------------
# Message
# --------------------------------------------------------------------------------------------


def format_alert(
    image: Image,
    candidates: Sequence[Candidate],
    report: str | os.PathLike | None,
    *,
    base_url: str | None = None,
    db_url: str | None = None,
) -> tuple[str, str]:
    """Return (title, body) of the alert for an image's new candidates.

    Coordinates are written ``x=<col> y=<row>`` (0-based, one decimal) and DS9 1-based
    ``(col+1, row+1)``.  With ``base_url`` (the review app, ``blobwatch serve``) each candidate
    has a link to its page and the image one to its page; without it the body says so and
    names the report file.  The command-line hint names the database (``--db``, password hidden)
    when ``db_url`` is given.
    """
    n = len(candidates)
    title = f"blobwatch: {n} new blob candidate{'s' if n != 1 else ''} in {image.name}"
    when = image.obs_date.strftime("%Y-%m-%d %H:%M:%S UTC") if image.obs_date else "unknown date"
    mjd = f", MJD {image.mjd:.5f}" if image.mjd is not None else ""
    base = base_url.rstrip("/") if base_url else None
    lines = [
        f"Image: {image.name}",
        f"Observed: {when}{mjd}",
        f"New blob candidate{'s' if n != 1 else ''} (0-based x=column y=row; DS9 1-based in parentheses):",
    ]
    for c in candidates:
        lines.append(
            f"  candidate {c.id}: x={c.x:.1f} y={c.y:.1f} (DS9 {c.x + 1:.1f}, {c.y + 1:.1f}) "
            f"probability {c.probability:.3f}"
        )
        if base:
            lines.append(f"    review: {base}/candidates/{c.id}")
    if base:
        lines.append(f"Image in the review app: {base}/images/{image.id}")
    else:
        lines.append("No review app link (--base-url URL or base_url in blobwatch.toml adds one).")
    lines.append(f"Report: {report if report else 'not written'}")
    db = f" --db {shlex.quote(redact_url(db_url))}" if db_url else ""
    lines.append(
        f"Review: blobwatch catalog confirm ID{db}  |  blobwatch catalog reject ID --reason TEXT{db}"
    )
    return title, "\n".join(lines)


def queue_notifications(
    session: Session, image: Image, urls: Sequence[str], title: str, body: str
) -> list[Notification]:
    """Add a ``pending`` notification row per URL not yet used for this image (no commit)."""
    existing = {
        n.url_hash for n in session.scalars(select(Notification).where(Notification.image_id == image.id))
    }
    rows = []
    for url in urls:
        digest = hash_text(url)
        if digest in existing:
            continue
        row = Notification(
            image_id=image.id,
            url_hash=digest,
            url_redacted=redact_notify_url(url),
            status="pending",
            attempts=0,
            title=title,
            message=body,
        )
        session.add(row)
        rows.append(row)
        existing.add(digest)
    return rows


# --------------------------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------------------------


def notification_key(notification_id: int, image_sha256: str) -> str:
    """The idempotency key of a notification: ``blobwatch-<first 12 hex of the image's SHA-256>-<id>``.

    The same for every delivery of the row; the image hash keeps keys of two databases apart.
    """
    return f"blobwatch-{image_sha256[:12]}-{int(notification_id)}"


def apprise_send(url: str, title: str, body: str, key: str) -> None:
    """Send one message to one apprise URL; raise `NotifyError` with apprise's reason on failure.

    ``key`` goes in the `IDEMPOTENCY_HEADER` of services that are HTTP webhooks (apprise plugins
    with custom headers: json://, xml://, form://); the body carries it for every service.
    """
    import apprise

    logging.getLogger("apprise").setLevel(logging.WARNING)  # its INFO lines repeat ours
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        raise NotifyError(f"not a valid apprise URL: {redact_notify_url(url)}")
    headers = getattr(plugin, "headers", None)
    if isinstance(headers, dict):
        headers[IDEMPOTENCY_HEADER] = key
    sender = apprise.Apprise()
    sender.add(plugin)
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = sender.notify(title=title, body=body)
    if not ok:
        detail = " ".join(line.strip() for line in captured.getvalue().splitlines() if line.strip())
        raise NotifyError(detail or "apprise reported a failure")


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of one delivery attempt."""

    notification_id: int
    image_id: int
    url: str
    ok: bool
    error: str | None


def deliver_pending(
    session_factory: sessionmaker[Session],
    urls: Sequence[str],
    *,
    sender: Sender = apprise_send,
    image_ids: Sequence[int] | None = None,
) -> list[DeliveryResult]:
    """Send every pending or failed notification whose URL is configured now.

    Each row is claimed atomically (``status -> sending``), sent, and committed as ``sent`` or
    ``failed`` (``attempts`` and ``last_error`` updated) one at a time, so a crash loses at most
    the claim of one row, which is sent again after `STALE_SENDING`.  Every delivery of a row
    passes the sender the same `notification_key` and ends the body with ``Alert id: <key>``.
    Rows whose URL is no longer configured stay as they are (logged).

    Parameters
    ----------
    session_factory : sessionmaker
    urls : sequence of str
        The configured notification URLs.
    sender : callable
        ``sender(url, title, body, key)``, raising on failure (default `apprise_send`).
    image_ids : sequence of int, optional
        Only these images' notifications.
    """
    by_hash = {hash_text(u): u for u in urls}
    results: list[DeliveryResult] = []
    with session_factory() as session:
        stale = utcnow() - STALE_SENDING
        query = (
            select(Notification.id, Notification.url_hash, Notification.status)
            .where(
                or_(
                    Notification.status.in_(("pending", "failed")),
                    (Notification.status == "sending") & (Notification.last_attempt_at < stale),
                )
            )
            .order_by(Notification.id)
        )
        if image_ids is not None:
            query = query.where(Notification.image_id.in_(list(image_ids)))
        todo = session.execute(query).all()
        session.rollback()
        for nid, url_hash, status in todo:
            url = by_hash.get(url_hash)
            if url is None:
                log.warning("notification %d: its URL is no longer configured; left %s", nid, status)
                continue
            now = utcnow()
            claimed = rows_changed(
                session,
                update(Notification)
                .where(Notification.id == nid, Notification.status == status)
                .values(status="sending", last_attempt_at=now, attempts=Notification.attempts + 1)
                .execution_options(synchronize_session=False),
            )
            session.commit()
            if claimed != 1:
                continue  # another monitor took it
            row = session.get(Notification, nid, populate_existing=True)
            assert row is not None
            image = session.get(Image, row.image_id)
            assert image is not None  # notifications are deleted with their image
            key = notification_key(nid, image.sha256)
            error: str | None = None
            try:
                sender(url, row.title, f"{row.message}\nAlert id: {key}", key)
            except Exception as exc:  # any failure of the service is recorded, never fatal
                error = f"{type(exc).__name__}: {exc}"[:2000]
            if error is None:
                row.status, row.sent_at, row.last_error = "sent", utcnow(), None
                log.info("notification %d sent to %s", nid, row.url_redacted)
            else:
                row.status, row.last_error = "failed", error
                log.warning(
                    "notification %d to %s failed (attempt %d): %s",
                    nid,
                    row.url_redacted,
                    row.attempts,
                    error,
                )
            session.commit()
            results.append(DeliveryResult(nid, row.image_id, url, error is None, error))
    return results
