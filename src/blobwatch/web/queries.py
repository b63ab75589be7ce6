"""Read the monitor's database into small view objects for the pages and the JSON API.

Everything here is plain data (dataclasses of numbers and strings), so templates and the API
never touch ORM rows, and the queries can be tested on a database built in a fixture.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from blobwatch.monitor.db import Blob, Candidate, Image, Notification, Run, SubframePrediction

#: Reasons offered when rejecting a candidate (seed section 6: dips are the main false positive).
REJECT_REASONS = ("dip", "cosmic ray", "persistence", "bad pixel", "other")
#: Candidate statuses a reviewer may still confirm.
CONFIRMABLE_STATUSES = ("new", "linked", "rejected")
#: Width of the reference-pixel border around the detector's science area.
BORDER = 5
#: Shape of a WFC3/IR blob image.
IMAGE_SHAPE = (1024, 1024)
T = TypeVar("T")


def _iso(value: _dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


@dataclass
class SubframeView:
    """One of the 16 subframes of a run."""

    id: int
    index: int
    x0: int
    y0: int
    size: int
    probability: float
    flagged: bool
    has_saliency: bool


@dataclass
class CandidateView:
    """A candidate and its review state."""

    id: int
    image_id: int
    image_name: str
    mjd: float | None
    x: float
    y: float
    probability: float
    significance: float | None
    radius: float | None
    subframe: int | None
    status: str
    reason: str | None
    reviewed_by: str | None
    reviewed_at: str | None
    linked_to: int | None
    known_blob_id: int | None
    blob_id: int | None
    #: the catalog blob this undecided candidate shows again (confirm records it as that blob)
    same_blob_id: int | None
    #: the monitor alerted on it when it was found (False: known or linked, recorded silently)
    alerted: bool
    #: id of the subframe row whose saliency map shows this candidate (None: no map)
    saliency_id: int | None = None
    #: DS9/FITS 1-based position (x + 1, y + 1)
    x_ds9: float = 0.0
    y_ds9: float = 0.0

    def __post_init__(self) -> None:
        self.x_ds9, self.y_ds9 = self.x + 1.0, self.y + 1.0


@dataclass
class BlobView:
    """A blob of the catalog."""

    id: int
    x: float
    y: float
    radius: float
    depth: float | None
    first_seen_mjd: float | None
    first_seen: str | None
    source: str
    label: str | None
    candidate_id: int | None


@dataclass
class ImageView:
    """An image with its newest run summarised."""

    id: int
    name: str
    mjd: float | None
    obs_date: str | None
    filter: str | None
    status: str
    reason: str | None
    run_id: int | None
    threshold: float | None
    max_probability: float | None
    n_candidates: int
    n_open: int
    alert: bool
    known_blobs: int
    notifications: int
    has_report: bool
    #: largest |dy|, |dx| (px) of the references' blob-pattern offsets (registration)
    max_offset: float | None = None
    subframes: list[SubframeView] = field(default_factory=list)
    candidates: list[CandidateView] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)


def known_blob_counts(session: Session, mjd: Sequence[float | None]) -> np.ndarray:
    """Number of catalog blobs known at each date (first seen on or before it).

    Blobs without a first-seen date (imported catalogs) count as known at every date.
    """
    first = np.array(
        [m if m is not None else -np.inf for m in session.scalars(select(Blob.first_seen_mjd))],
        dtype=np.float64,
    )
    first.sort()
    dates = np.array([m if m is not None else np.inf for m in mjd], dtype=np.float64)
    return np.searchsorted(first, dates, side="right").astype(int)


def _blob_ids_by_candidate(session: Session, candidate_ids: Sequence[int]) -> dict[int, int]:
    if not candidate_ids:
        return {}
    rows = session.execute(
        select(Blob.candidate_id, Blob.id).where(Blob.candidate_id.in_(list(candidate_ids)))
    )
    return {cid: bid for cid, bid in rows if cid is not None}  # never None: selected by id


def _saliency_ids(session: Session, candidates: Sequence[Candidate]) -> dict[tuple[int, int], int]:
    run_ids = {c.run_id for c in candidates if c.subframe is not None}
    if not run_ids:
        return {}
    rows = session.execute(
        select(SubframePrediction.run_id, SubframePrediction.index, SubframePrediction.id).where(
            SubframePrediction.run_id.in_(run_ids), SubframePrediction.saliency_path.is_not(None)
        )
    )
    return {(run_id, index): sid for run_id, index, sid in rows}


def _same_blob_ids(session: Session, candidates: Sequence[Candidate]) -> dict[int, int]:
    """The catalog blob each undecided candidate shows again (`catalog.same_blob`), by candidate id."""
    from blobwatch.monitor.catalog import same_blob

    undecided = [c for c in candidates if c.status in CONFIRMABLE_STATUSES]
    if not undecided:
        return {}
    blobs = list(session.scalars(select(Blob)))
    found = {c.id: same_blob(session, c, blobs=blobs) for c in undecided}
    return {cid: blob.id for cid, blob in found.items() if blob is not None}


def candidate_views(session: Session, candidates: Sequence[Candidate]) -> list[CandidateView]:
    """Turn candidate rows into views (a few extra queries: blobs they became or show again,
    saliency maps)."""
    blob_of = _blob_ids_by_candidate(session, [c.id for c in candidates])
    same = _same_blob_ids(session, candidates)
    saliency = _saliency_ids(session, candidates)
    return [
        CandidateView(
            id=c.id,
            image_id=c.image_id,
            image_name=c.image.name,
            mjd=c.image.mjd,
            x=c.x,
            y=c.y,
            probability=c.probability,
            significance=c.significance,
            radius=c.radius,
            subframe=c.subframe,
            status=c.status,
            reason=c.reason,
            reviewed_by=c.reviewed_by,
            reviewed_at=_iso(c.reviewed_at),
            linked_to=c.linked_to,
            known_blob_id=c.known_blob_id,
            blob_id=blob_of.get(c.id),
            same_blob_id=same.get(c.id),
            alerted=c.alerted,
            saliency_id=saliency.get((c.run_id, c.subframe)) if c.subframe is not None else None,
        )
        for c in candidates
    ]


def list_candidates(
    session: Session, *, status: str | None = None, image_id: int | None = None
) -> list[CandidateView]:
    """Candidates, newest image first, optionally only those with ``status`` or of one image."""
    query = select(Candidate).join(Candidate.image)
    if status is not None:
        query = query.where(Candidate.status == status)
    if image_id is not None:
        query = query.where(Candidate.image_id == image_id)
    query = query.order_by(Image.mjd.desc().nulls_last(), Candidate.probability.desc(), Candidate.id)
    return candidate_views(session, session.scalars(query).all())


def get_candidate(session: Session, candidate_id: int) -> CandidateView | None:
    """One candidate, or None."""
    row = session.get(Candidate, candidate_id)
    return candidate_views(session, [row])[0] if row is not None else None


def open_count(session: Session) -> int:
    """Number of candidates awaiting review."""
    return int(
        session.scalar(select(func.count()).select_from(Candidate).where(Candidate.status == "new")) or 0
    )


def _blob_view(b: Blob) -> BlobView:
    return BlobView(
        id=b.id,
        x=b.x,
        y=b.y,
        radius=b.radius,
        depth=b.depth,
        first_seen_mjd=b.first_seen_mjd,
        first_seen=_iso(b.first_seen),
        source=b.source,
        label=b.label,
        candidate_id=b.candidate_id,
    )


def list_blobs(session: Session) -> list[BlobView]:
    """The catalog, oldest first."""
    rows = session.scalars(select(Blob).order_by(Blob.first_seen_mjd.asc().nulls_first(), Blob.id))
    return [_blob_view(b) for b in rows]


def get_blob(session: Session, blob_id: int) -> BlobView | None:
    """One catalog blob, or None."""
    row = session.get(Blob, blob_id)
    return _blob_view(row) if row is not None else None


def review_state(session: Session) -> tuple:
    """A value that changes whenever the catalog or a candidate's review changes.

    Part of the cache keys of figures that show the catalog or candidates.
    """
    return (
        session.scalar(select(func.count(Blob.id))),
        session.scalar(select(func.max(Blob.id))),
        session.scalar(select(func.count(Candidate.id)).where(Candidate.status == "new")),
        session.scalar(select(func.max(Candidate.reviewed_at))),
    )


def images_state(session: Session) -> tuple:
    """A value that changes whenever an image is added or processed."""
    return (
        session.scalar(select(func.count(Image.id))),
        session.scalar(select(func.max(Image.processed_at))),
        session.scalar(select(func.max(Run.id))),
    )


def _latest_runs(session: Session, image_ids: Sequence[int] | None = None) -> dict[int, Run]:
    newest = select(func.max(Run.id)).group_by(Run.image_id)
    if image_ids is not None:
        newest = newest.where(Run.image_id.in_(list(image_ids)))
    return {r.image_id: r for r in session.scalars(select(Run).where(Run.id.in_(newest)))}


def list_images(session: Session) -> list[ImageView]:
    """Every image, newest first, with its newest run summarised (a fixed number of queries)."""
    images = session.scalars(select(Image).order_by(Image.mjd.desc().nulls_last(), Image.id.desc())).all()
    runs = _latest_runs(session)
    counts: dict[int, dict[str, int]] = {}
    for image_id, status, n in session.execute(
        select(Candidate.image_id, Candidate.status, func.count()).group_by(
            Candidate.image_id, Candidate.status
        )
    ):
        counts.setdefault(image_id, {})[status] = n
    notes = dict(
        session.execute(select(Notification.image_id, func.count()).group_by(Notification.image_id)).all()
    )
    alerted = set(session.scalars(select(Candidate.image_id).where(Candidate.alerted).distinct()))
    known = known_blob_counts(session, [im.mjd for im in images])
    return [
        _image_view(
            im, runs.get(im.id), counts.get(im.id, {}), notes.get(im.id, 0), int(k), alerted=im.id in alerted
        )
        for im, k in zip(images, known, strict=True)
    ]


def _image_view(
    image: Image, run: Run | None, counts: dict[str, int], notifications: int, known: int, *, alerted: bool
) -> ImageView:
    return ImageView(
        id=image.id,
        name=image.name,
        mjd=image.mjd,
        obs_date=_iso(image.obs_date),
        filter=image.filter,
        status=image.status,
        reason=image.reason,
        run_id=run.id if run else None,
        threshold=run.threshold if run else None,
        max_probability=run.max_probability if run else None,
        n_candidates=sum(counts.values()),
        n_open=counts.get("new", 0),
        alert=alerted or notifications > 0,
        known_blobs=known,
        notifications=notifications,
        has_report=bool(run and run.report_path),
        max_offset=_max_offset(run.parameters if run else None),
        parameters=dict(run.parameters or {}) if run else {},
        timings=dict(run.timings or {}) if run else {},
        model=(
            {"path": run.model_path, "sha256": run.model_sha256, "metadata": dict(run.model_metadata or {})}
            if run
            else {}
        ),
    )


def _max_offset(parameters: dict[str, Any] | None) -> float | None:
    offsets = np.asarray((parameters or {}).get("offsets") or [], dtype=np.float64)
    return float(np.abs(offsets).max()) if offsets.size else None


def get_image(session: Session, image_id: int, *, detail: bool = True) -> ImageView | None:
    """One image with its newest run; with ``detail`` also its subframes and candidates."""
    image = session.get(Image, image_id)
    if image is None:
        return None
    run = _latest_runs(session, [image_id]).get(image_id)
    counts = dict(
        session.execute(
            select(Candidate.status, func.count())
            .where(Candidate.image_id == image_id)
            .group_by(Candidate.status)
        ).all()
    )
    notes = int(
        session.scalar(
            select(func.count()).select_from(Notification).where(Notification.image_id == image_id)
        )
        or 0
    )
    known = int(known_blob_counts(session, [image.mjd])[0])
    alerted = (
        session.scalar(select(Candidate.id).where(Candidate.image_id == image_id, Candidate.alerted).limit(1))
        is not None
    )
    view = _image_view(image, run, counts, notes, known, alerted=alerted)
    if detail and run is not None:
        view.subframes = [
            SubframeView(
                id=s.id,
                index=s.index,
                x0=s.x0,
                y0=s.y0,
                size=s.size,
                probability=s.probability,
                flagged=s.flagged,
                has_saliency=bool(s.saliency_path),
            )
            for s in run.subframes
        ]
        view.candidates = candidate_views(session, run.candidates)
    return view


def neighbours(session: Session, image_id: int) -> tuple[int | None, int | None]:
    """Ids of the images observed just before and just after ``image_id`` (None at the ends)."""
    order = [
        row[0]
        for row in session.execute(select(Image.id).order_by(Image.mjd.asc().nulls_first(), Image.id.asc()))
    ]
    where = order.index(image_id)
    return (order[where - 1] if where > 0 else None, order[where + 1] if where + 1 < len(order) else None)


def image_sha256(session: Session, image_id: int) -> str | None:
    """The recorded SHA-256 of an image's file (part of cache keys: names its content)."""
    return session.scalar(select(Image.sha256).where(Image.id == image_id))


def newest_image_id(session: Session) -> int | None:
    """The newest processed image (by observation date), else the newest image at all."""
    for query in (select(Image.id).join(Run, Run.image_id == Image.id), select(Image.id)):
        found = session.scalar(query.order_by(Image.mjd.desc().nulls_last(), Image.id.desc()).limit(1))
        if found is not None:
            return int(found)
    return None


def subframe_grid(subframes: Sequence[SubframeView]) -> list[list[SubframeView]]:
    """Subframes as rows of the 4x4 grid, top row first (as the image is displayed, y up)."""
    if not subframes:
        return []
    by_row: dict[int, list[SubframeView]] = {}
    for s in subframes:
        by_row.setdefault(s.y0, []).append(s)
    return [sorted(by_row[y0], key=lambda s: s.x0) for y0 in sorted(by_row, reverse=True)]


def recent_reviews(session: Session, limit: int = 20) -> list[CandidateView]:
    """The most recently confirmed or rejected candidates, newest review first."""
    rows = session.scalars(
        select(Candidate)
        .where(Candidate.status.in_(("confirmed", "rejected")))
        .order_by(Candidate.reviewed_at.desc().nulls_last(), Candidate.id.desc())
        .limit(limit)
    ).all()
    return candidate_views(session, rows)


def science_box(session: Session) -> tuple[int, int, int, int]:
    """The detector's science area ``(x0, y0, x1, y1)`` (exclusive) in blob-image pixels.

    The newest image's shape without the 5-pixel reference border (1014x1014 for real data).
    """
    shape = session.execute(
        select(Image.rows, Image.cols)
        .where(Image.rows.is_not(None))
        .order_by(Image.mjd.desc().nulls_last(), Image.id.desc())
        .limit(1)
    ).first()
    found_rows, found_cols = shape if shape is not None else (None, None)
    rows, cols = (
        (found_rows, found_cols) if found_rows is not None and found_cols is not None else IMAGE_SHAPE
    )
    return BORDER, BORDER, int(cols) - BORDER, int(rows) - BORDER


#: Rows per page of the History and Blob map tables (``per`` may ask for 10 to 500).
PAGE_SIZE = 50
PAGE_SIZES = (10, 500)


@dataclass
class Page(Generic[T]):
    """One page of a filtered table."""

    items: list[T]
    #: rows that pass the filters (on every page)
    total: int
    page: int
    per: int

    @property
    def pages(self) -> int:
        """Number of pages (at least 1)."""
        return max(1, -(-self.total // self.per))


def paginate(rows: Sequence[T], page: int, per: int) -> Page[T]:
    """Page ``page`` (1-based, clipped to the last) of ``rows``, ``per`` rows each."""
    per = min(max(int(per), PAGE_SIZES[0]), PAGE_SIZES[1])
    last = max(1, -(-len(rows) // per))
    page = min(max(int(page), 1), last)
    return Page(items=list(rows[(page - 1) * per : page * per]), total=len(rows), page=page, per=per)


def filter_images(
    images: Sequence[ImageView],
    *,
    q: str = "",
    status: str = "",
    alert: bool | None = None,
    mjd_min: float | None = None,
    mjd_max: float | None = None,
) -> list[ImageView]:
    """Images whose name contains ``q`` (any case), with ``status``, alert state and MJD range."""
    q = q.strip().lower()
    return [
        im
        for im in images
        if (not q or q in im.name.lower())
        and (not status or im.status == status)
        and (alert is None or im.alert == alert)
        and (mjd_min is None or (im.mjd is not None and im.mjd >= mjd_min))
        and (mjd_max is None or (im.mjd is not None and im.mjd <= mjd_max))
    ]


def filter_blobs(
    blobs: Sequence[BlobView],
    *,
    q: str = "",
    blob_id: int | None = None,
    source: str = "",
    min_radius: float | None = None,
    min_depth: float | None = None,
) -> list[BlobView]:
    """Blobs whose label contains ``q`` (any case; ``#N`` or ``N`` matches id N), with id
    ``blob_id``, from ``source``, at least ``min_radius`` px and ``min_depth`` (fraction) deep."""
    q = q.strip().lower()
    number = q.lstrip("#")
    return [
        b
        for b in blobs
        if (not q or (number.isdigit() and b.id == int(number)) or q in (b.label or "").lower())
        and (blob_id is None or b.id == blob_id)
        and (not source or b.source == source)
        and (min_radius is None or b.radius >= min_radius)
        and (min_depth is None or (b.depth is not None and b.depth >= min_depth))
    ]
