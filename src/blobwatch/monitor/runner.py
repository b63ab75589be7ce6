"""The daily monitor job: discover, register, process, notify, report.

`run_monitor` does one pass over an inbox:

1. **discover** FITS files under the inbox (recursively);
2. **register** each new file content (SHA-256) as an ``images`` row: the file is read with
   `blobwatch.fits_io.read_blob_image`; a file it refuses (corrupt, truncated, all-NaN, ...) or
   whose shape differs from the monitor's images is recorded as ``rejected`` with the reason;
3. **register once** (with ``register``): measure the blob-pattern offset of every new valid image
   to a fixed frame image and store it in ``images`` (`measure_offsets`), so that a difference
   aligns its references by the stored offsets instead of registering each one again;
4. **process**, in order of observation time, every registered image that has at least
   ``min_references`` earlier valid images: atomically claim it, build the registered difference
   against the preceding ``n_references``, run `blobwatch.detect.detect` (16 subframes, CNN,
   candidates), compute the saliency maps of flagged subframes, sort candidates into ``known``
   (inside a catalog blob), ``linked`` (at an earlier open or confirmed candidate) and ``new``,
   write the report, then commit all rows of the image and its pending notifications in one
   transaction;
5. **notify**: send pending and earlier failed notifications (`blobwatch.monitor.notify`);
6. rewrite the index and blob-map pages.

Running it twice over the same inbox changes nothing the second time.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from blobwatch import __version__, heap
from blobwatch.errors import InputError
from blobwatch.lru import LRUCache
from blobwatch.monitor import notify as _notify
from blobwatch.monitor.catalog import known_blob_at
from blobwatch.monitor.db import (
    OPEN_CANDIDATE_STATUSES,
    Blob,
    Candidate,
    Image,
    Run,
    SubframePrediction,
    claim_image,
    mjd_to_datetime,
    open_database,
    reclaim_dead_claims,
    release_image,
    utcnow,
    worker_name,
    write_session,
)
from blobwatch.monitor.settings import DETECTORS, STORE_FOLDER, MonitorSettings
from blobwatch.names import one_line
from blobwatch.stats import jsonable

__all__ = [
    "DETECTORS",
    "FITS_SUFFIXES",
    "ImageFile",
    "ImageOutcome",
    "ImageResult",
    "MonitorSettings",
    "MonitorSummary",
    "compute_image",
    "detect_image",
    "difference_of",
    "discover",
    "measure_offsets",
    "progress_bar",
    "record",
    "run_monitor",
    "watch",
]

log = logging.getLogger(__name__)

#: File names the inbox scan picks up (case-insensitive).
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


@dataclass
class ImageOutcome:
    """What happened to one image in this run."""

    image_id: int
    name: str
    status: str  # processed | rejected | failed | waiting | busy
    obs_date: _dt.datetime | None = None
    reason: str | None = None
    max_probability: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    report: str | None = None
    seconds: float = 0.0

    @property
    def alert(self) -> bool:
        """True when the image has new (alerted) candidates."""
        return any(c["status"] == "new" for c in self.candidates)

    def summary_line(self) -> str:
        """One line for the console (unprintable characters of names escaped, `one_line`)."""
        date = self.obs_date.strftime("%Y-%m-%d %H:%M") if self.obs_date else "----------"
        head = f"{one_line(self.name)}  {date}  {self.status:<9}"
        if self.status in ("rejected", "failed", "waiting", "busy"):
            return one_line(f"{head}  {self.reason or ''}".rstrip())
        parts = [f"{head}  subframe maxP={self.max_probability:.3f}"]
        new = [c for c in self.candidates if c["status"] == "new"]
        other = [c for c in self.candidates if c["status"] != "new"]
        if new:
            parts.append(
                f"ALERT {len(new)} new: "
                + "; ".join(
                    f"#{c['id']} x={c['x']:.1f} y={c['y']:.1f} (DS9 {c['x'] + 1:.1f}, {c['y'] + 1:.1f}) P={c['probability']:.3f}"
                    for c in new
                )
            )
        else:
            parts.append("no new blob")
        if other:
            parts.append(
                ", ".join(
                    f"{len([c for c in other if c['status'] == s])} {s}"
                    for s in sorted({c["status"] for c in other})
                )
            )
        parts.append(f"{self.seconds:.1f}s")
        if self.report:
            parts.append(f"report {one_line(self.report)}")
        return "  ".join(parts)


@dataclass
class MonitorSummary:
    """The result of one `run_monitor` pass."""

    registered: int = 0
    rejected: list[ImageOutcome] = field(default_factory=list)
    outcomes: list[ImageOutcome] = field(default_factory=list)
    deliveries: list[_notify.DeliveryResult] = field(default_factory=list)
    index: Path | None = None
    seconds: float = 0.0

    @property
    def processed(self) -> list[ImageOutcome]:
        """Images processed in this run."""
        return [o for o in self.outcomes if o.status == "processed"]

    @property
    def failed(self) -> list[ImageOutcome]:
        """Images whose processing raised an unexpected error (left for the next run)."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0: all fine; 1: a file was rejected in this run, processing failed or a notification
        could not be delivered."""
        bad = self.rejected or self.failed or any(not d.ok for d in self.deliveries)
        return 1 if bad else 0


# --------------------------------------------------------------------------------------------
# Discovery and registration
# --------------------------------------------------------------------------------------------


def discover(inbox: str | os.PathLike) -> list[Path]:
    """All FITS files under ``inbox`` (recursively, hidden files and folders skipped), sorted."""
    root = Path(inbox)
    if not root.exists():
        raise InputError(root, "inbox folder not found")
    if root.is_file():
        return [root]
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue
        if path.is_file() and path.name.lower().endswith(FITS_SUFFIXES):
            found.append(path)
    return sorted(found)


class ImageFile(NamedTuple):
    """A registered image's file, all a process needs to read it: its path and SHA-256."""

    path: str
    sha256: str


class _ImageCache:
    """A small LRU cache of `BlobImage` objects keyed by SHA-256 (one read per file per run).

    ``prepared`` optionally holds a `blobwatch.difference.PreparedCache`, so that a run that
    processes several images prepares each reference for registration once.  ``store``
    optionally holds a `blobwatch.refstore.ReferenceStore`: images it holds (for an unchanged
    file) are loaded from it (memory-mapped) instead of being read, and images read are added
    to it; those are then not kept in memory (they are loaded again when needed).
    """

    def __init__(self, capacity: int, store: Any = None) -> None:
        self._images: LRUCache[Any] = LRUCache(capacity)
        self.capacity = self._images.capacity
        self.reads = 0
        self.prepared: Any = None
        self.store = store

    def _stored(self, image: Image | ImageFile) -> Any:
        """The image from the store (None when absent or its file changed), kept in memory."""
        if self.store is None:
            return None
        return self.store.image(image.sha256, image.path)

    def put(self, sha: str, image: Any) -> None:
        self._images.put(sha, image)

    def get(self, image: Image | ImageFile) -> Any:
        from blobwatch.fits_io import read_blob_image
        from blobwatch.refstore import file_state

        cached = self._images.get(image.sha256)
        if cached is not None:
            return cached
        stored = self._stored(image)
        if stored is not None:
            return stored
        state = file_state(image.path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = read_blob_image(image.path)
        self.reads += 1
        if blob.provenance.get("sha256") not in (None, image.sha256):
            raise InputError(image.path, "file changed since it was registered")
        if self.store is None or not self.store.put_image(blob, state):
            self.put(image.sha256, blob)
        return blob

    def get_many(self, images: Sequence[Image | ImageFile]) -> list[Any]:
        """Blob images for several rows, the missing ones read in parallel threads."""
        from blobwatch.fits_io import read_blob_images
        from blobwatch.refstore import file_state

        found = {im.sha256: self._images.get(im.sha256) or self._stored(im) for im in images}
        missing = [im for im in images if found[im.sha256] is None]
        if missing:
            states = [file_state(im.path) for im in missing]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                blobs = read_blob_images([im.path for im in missing])
            self.reads += len(missing)
            for im, blob, state in zip(missing, blobs, states, strict=True):
                if blob.provenance.get("sha256") not in (None, im.sha256):
                    raise InputError(im.path, "file changed since it was registered")
                if self.store is None or not self.store.put_image(blob, state):
                    self.put(im.sha256, blob)
                found[im.sha256] = blob
        return [found[im.sha256] for im in images]


def register_files(
    session_factory: sessionmaker[Session], paths: Sequence[Path], cache: _ImageCache
) -> tuple[int, list[ImageOutcome]]:
    """Register new file contents; record unusable ones as rejected.  Returns (new, rejected).

    A file that cannot be read at all is recorded once per path, as rejected, under the SHA-256
    of ``b"unreadable\\0" + path`` (its content is unknown); once readable it is a new image.
    """
    from blobwatch.fits_io import FilterWarning, file_sha256, read_blob_image
    from blobwatch.refstore import file_state

    new = 0
    rejected: list[ImageOutcome] = []
    with session_factory() as session:
        known = {
            sha: (iid, path) for iid, sha, path in session.execute(select(Image.id, Image.sha256, Image.path))
        }
        session.rollback()  # end the read; every write below is its own short transaction
        for path in paths:
            unreadable = None
            state = file_state(path)
            try:  # an unchanged file (size and mtime) that the store knows is not hashed again
                sha = (cache.store.known_sha256(path) if cache.store is not None else None) or file_sha256(
                    path
                )
            except OSError as exc:  # recorded (once per path) so that a cron job notices
                unreadable = f"cannot read file ({exc.strerror or exc})"
                sha = hashlib.sha256(b"unreadable\0" + os.fsencode(path)).hexdigest()
            if sha in known:
                iid, old = known[sha]
                if old != str(path) and not Path(old).exists():  # the file moved: follow it
                    session.execute(update(Image).where(Image.id == iid).values(path=str(path)))
                    session.commit()
                continue
            row = Image(path=str(path), sha256=sha, status="registered", registered_at=utcnow())
            if unreadable is not None:
                row.status, row.reason = "rejected", unreadable
            else:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", FilterWarning)
                        blob = read_blob_image(path)
                    for w in caught:
                        log.warning("%s", w.message)
                    obs_date = mjd_to_datetime(blob.mjd)
                    row.mjd, row.obs_date, row.filter = float(blob.mjd), obs_date, blob.filter
                    row.rows, row.cols = (int(n) for n in blob.data.shape)
                    stored = (
                        cache.store is not None
                        and blob.provenance.get("sha256") == sha
                        and cache.store.put_image(blob, state)
                    )
                    if not stored and len(paths) - len(known) <= cache.capacity // 2:
                        cache.put(sha, blob)  # a daily run: keep it for processing
                except InputError as exc:
                    row.status, row.reason = "rejected", exc.problem
                except Exception as exc:  # an unforeseen defect of one file must not stop the others
                    log.exception("%s: cannot be registered", path)
                    row.status, row.reason = "rejected", f"cannot be read ({type(exc).__name__}: {exc})"
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # another monitor registered the same content at the same moment
                session.rollback()
                continue
            known[sha] = (row.id, str(path))
            new += 1
            if row.status == "rejected":
                rejected.append(ImageOutcome(row.id, row.name, "rejected", reason=row.reason))
                log.warning("%s: rejected: %s", path, row.reason)
    return new, rejected


def _reject_wrong_shapes(
    session_factory: sessionmaker[Session], expected: tuple[int, int] | None
) -> tuple[tuple[int, int] | None, list[ImageOutcome]]:
    """Reject registered images whose shape is not the expected (or most common) one."""
    rejected: list[ImageOutcome] = []
    if expected is not None:
        expected = (int(expected[0]), int(expected[1]))  # also when given as a list
    with write_session(session_factory) as session:
        rows = session.execute(
            select(Image.id, Image.rows, Image.cols).where(
                Image.status != "rejected", Image.rows.is_not(None)
            )
        ).all()
        if expected is None:
            shapes = [(r, c) for _, r, c in rows if r is not None and c is not None]
            if not shapes:
                return None, rejected
            expected = Counter(shapes).most_common(1)[0][0]
        for image in session.scalars(
            select(Image).where(Image.status == "registered", Image.rows.is_not(None))
        ):
            if (image.rows, image.cols) != expected:
                image.status = "rejected"
                image.reason = (
                    f"shape {image.rows}x{image.cols} does not match the monitor's images "
                    f"({expected[0]}x{expected[1]})"
                )
                rejected.append(ImageOutcome(image.id, image.name, "rejected", image.obs_date, image.reason))
                log.warning("%s: rejected: %s", image.path, image.reason)
        session.commit()
    return expected, rejected


#: A blob-pattern offset (dy, dx) in pixels.
Offset = tuple[float, float]


def measure_offsets(frame: ImageFile, images: Sequence[ImageFile], cache: _ImageCache) -> list[Offset | None]:
    """Each image's blob-pattern offset to the frame image (`blobwatch.difference.OffsetFrame`).

    Returns
    -------
    list of (float, float) or None
        None where the offset cannot be measured (the image's differences register it directly).

    Raises
    ------
    InputError
        The frame image cannot be read.
    """
    from blobwatch.difference import OffsetFrame

    offset_frame = OffsetFrame(cache.get(frame), prepared=cache.prepared)
    out: list[Offset | None] = []
    for image in images:
        try:
            out.append(offset_frame.offset(cache.get(image)))
        except InputError as exc:  # rejected when it is processed or used as a reference
            log.warning("%s: offset not measured: %s", image.path, exc.problem)
            out.append(None)
    return out


def _measure_new_offsets(
    session_factory: sessionmaker[Session],
    measure: Callable[[ImageFile, list[ImageFile]], list[Offset | None]],
) -> None:
    """Register once: measure the offset of every valid image that has none yet and store them.

    The frame is the image already used as one (``offset_frame_id`` its own id), else the
    earliest valid image; ``measure`` (`measure_offsets`, or its Dask version) does the work.
    """
    valid = (Image.status != "rejected", Image.mjd.is_not(None))
    columns = (Image.id, Image.path, Image.sha256)
    with session_factory() as session:
        frame = session.execute(
            select(*columns).where(Image.id == Image.offset_frame_id, *valid).order_by(Image.id).limit(1)
        ).first()
        frame = (
            frame
            or session.execute(select(*columns).where(*valid).order_by(Image.mjd, Image.id).limit(1)).first()
        )
        todo = session.execute(
            select(*columns).where(Image.offset_frame_id.is_(None), *valid).order_by(Image.mjd, Image.id)
        ).all()
    if frame is None or not todo:
        return
    frame_id, frame_path, frame_sha = frame
    others = [(iid, ImageFile(path, sha)) for iid, path, sha in todo if iid != frame_id]
    try:
        offsets = dict(
            zip(
                [iid for iid, _ in others],
                measure(ImageFile(frame_path, frame_sha), [f for _, f in others]),
                strict=True,
            )
        )
    except InputError as exc:
        log.warning(
            "%s: cannot be read as the offset frame (%s); differences register their references",
            exc.path,
            exc.problem,
        )
        return
    offsets[frame_id] = (0.0, 0.0)
    with write_session(session_factory) as session:
        for iid, offset in offsets.items():
            dy, dx = offset if offset is not None else (None, None)
            session.execute(
                update(Image)
                .where(Image.id == iid)
                .values(offset_dy=dy, offset_dx=dx, offset_frame_id=frame_id)
            )
        session.commit()
    log.info("offsets of %d image(s) to frame %s measured", len(offsets), Path(frame_path).name)


def _stored_offsets(image: Image, refs: Sequence[Image]) -> list[Offset | None]:
    """The references' offsets relative to ``image`` from the stored frame offsets (None: unknown)."""
    if image.offset_frame_id is None or image.offset_dy is None or image.offset_dx is None:
        return [None] * len(refs)
    return [
        (r.offset_dy - image.offset_dy, r.offset_dx - image.offset_dx)
        if r.offset_frame_id == image.offset_frame_id and r.offset_dy is not None and r.offset_dx is not None
        else None
        for r in refs
    ]


# --------------------------------------------------------------------------------------------
# Processing one image
# --------------------------------------------------------------------------------------------


@dataclass
class _Model:
    """The classifier plus what a run records about it (loaded once per `run_monitor`)."""

    classifier: Any
    path: str | None
    sha256: str | None
    metadata: dict[str, Any]
    versions: dict[str, str]
    localizer: Any = None
    """The `blobwatch.fcn.FCNDetector` for ``detector='fcn'``; ``path``, ``sha256`` and
    ``metadata`` are then its model's, and the classifier's are under ``metadata['subframe_model']``."""
    classifier_path: str | None = None
    """The seed classifier's model file (what worker processes load)."""


def _model_record(obj: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """(resolved path, SHA-256, metadata) of a loaded classifier or localizer."""
    from blobwatch.fits_io import file_sha256

    path = getattr(obj, "model_path", None) or getattr(obj, "path", None)
    sha = file_sha256(path) if path is not None and Path(path).exists() else None
    return (
        str(Path(path).resolve()) if path is not None else None,
        sha,
        jsonable(dict(getattr(obj, "metadata", {}) or {})),
    )


def _load_model(
    model: str | os.PathLike | None, classifier: Any | None, settings: MonitorSettings | None = None
) -> _Model:
    import torch

    settings = settings or MonitorSettings()
    if classifier is None:
        from blobwatch.classifier import BlobClassifier

        classifier = BlobClassifier(model)
    versions = {"blobwatch": __version__, "torch": torch.__version__, "numpy": np.__version__}
    path, sha, metadata = _model_record(classifier)
    if settings.detector != "fcn":
        return _Model(classifier, path, sha, metadata, versions, classifier_path=path)
    from blobwatch.fcn import FCNDetector

    localizer = FCNDetector(settings.fcn_model)
    fcn_path, fcn_sha, fcn_meta = _model_record(localizer)
    fcn_meta["subframe_model"] = {
        "path": path,
        "sha256": sha,
        "threshold": getattr(classifier, "threshold", None),
    }
    return _Model(
        classifier, fcn_path, fcn_sha, fcn_meta, versions, localizer=localizer, classifier_path=path
    )


def _references(session: Session, image: Image, settings: MonitorSettings) -> list[Image]:
    """The preceding valid images (oldest first), at most ``n_references``."""
    rows = session.scalars(
        select(Image)
        .where(
            Image.status != "rejected", Image.mjd.is_not(None), Image.mjd < image.mjd, Image.id != image.id
        )
        .order_by(Image.mjd.desc(), Image.id.desc())
        .limit(settings.n_references)
    ).all()
    return list(reversed(rows))


def _classify_candidates(
    session: Session, image: Image, found: Sequence[Any], blobs: Sequence[Blob], settings: MonitorSettings
) -> list[dict[str, Any]]:
    """Sort detected candidates into known / linked / new (no rows written)."""
    earlier = session.execute(
        select(Candidate.id, Candidate.x, Candidate.y, Candidate.radius, Candidate.linked_to)
        .join(Image, Candidate.image_id == Image.id)
        .where(Candidate.status.in_((*OPEN_CANDIDATE_STATUSES, "linked")), Image.mjd < image.mjd)
        .order_by(Image.mjd.desc(), Candidate.id)
    ).all()
    # a linked candidate counts only through its root, which must still be open or confirmed
    open_ids = set(session.scalars(select(Candidate.id).where(Candidate.status.in_(OPEN_CANDIDATE_STATUSES))))
    out = []
    for c in found:
        record = {
            "x": float(c.x),
            "y": float(c.y),
            "probability": float(c.probability),
            "significance": float(c.significance),
            "radius": float(c.radius),
            "subframe": int(c.subframe),
            "status": "new",
            "linked_to": None,
            "known_blob_id": None,
            "note": "",
        }
        blob = known_blob_at(blobs, c.x, c.y, margin=settings.known_margin)
        if blob is not None:
            record.update(
                status="known",
                known_blob_id=blob.id,
                note=f"inside known blob {blob.id} at x={blob.x:.1f} y={blob.y:.1f} r={blob.radius:.1f}",
            )
        else:
            for cid, x, y, radius, linked_to in earlier:
                root = linked_to if linked_to is not None else cid
                if root not in open_ids:
                    continue
                if np.hypot(x - c.x, y - c.y) <= max(settings.link_distance, float(radius or 0.0)):
                    record.update(status="linked", linked_to=root, note=f"same position as candidate {root}")
                    break
        out.append(record)
    return out


def _set_status(
    session_factory: sessionmaker[Session], image_id: int, status: str, reason: str | None
) -> None:
    """Set an image's status (and reason) and drop any claim, in its own transaction."""
    with write_session(session_factory) as session:
        session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(status=status, reason=reason, claimed_by=None, claimed_at=None)
        )
        session.commit()


class _NotReady(Exception):
    """Too few valid earlier images (after a reference turned out to be unreadable)."""


class _ClaimLost(Exception):
    """Another monitor took the image over (our claim went stale); our results are dropped."""


@dataclass(frozen=True)
class ImageResult:
    """What `compute_image` found for one image: everything a run records, before any row exists.

    Attributes
    ----------
    difference : blobwatch.difference.DifferenceResult
    detection : blobwatch.detect.Detection
    saliency : dict of int to numpy.ndarray
        The seed classifier's saliency map of each flagged subframe and of each subframe
        holding a candidate, by subframe index.
    localizer_saliency : dict of int to numpy.ndarray
        The localizing network's saliency of each subframe holding a candidate (``'fcn'``).
    max_probability : float
        Largest subframe probability.
    parameters : dict
        The run's parameters (JSON-ready; the database adds ``reference_image_ids``).
    timings : dict of str to float
        Seconds spent in ``difference``, ``detect`` and ``saliency``.
    """

    difference: Any
    detection: Any
    saliency: dict[int, np.ndarray]
    max_probability: float
    parameters: dict[str, Any]
    timings: dict[str, float]
    localizer_saliency: dict[int, np.ndarray] = field(default_factory=dict)


def compute_image(
    current: Any,
    references: Sequence[Any],
    classifier: Any,
    settings: MonitorSettings,
    *,
    prepared: Any = None,
    offsets: Sequence[Offset | None] | None = None,
    localizer: Any = None,
) -> ImageResult:
    """Difference, detection and saliency of one image: pure computation, no database, no files.

    Parameters
    ----------
    current : blobwatch.fits_io.BlobImage
        The image.
    references : sequence of BlobImage
        Its preceding valid images.
    classifier : blobwatch.classifier.BlobClassifier
    settings : MonitorSettings
        ``register``, ``min_references``, ``n_references``, ``detector``, ``threshold``, and the
        candidate rules recorded in the parameters.
    prepared : blobwatch.difference.PreparedCache, optional
        Registration preparations shared by the images of one run.
    offsets : sequence of (float, float) or None, optional
        The references' offsets relative to ``current`` where known (`_stored_offsets`); the
        others are registered.
    localizer : blobwatch.fcn.FCNDetector, optional
        The localizing network for ``settings.detector == 'fcn'`` (loaded from
        ``settings.fcn_model`` when not given).
    """
    diff, seconds = difference_of(current, references, settings, prepared=prepared, offsets=offsets)
    return detect_image(diff, classifier, settings, localizer=localizer, timings={"difference": seconds})


def difference_of(
    current: Any,
    references: Sequence[Any],
    settings: MonitorSettings,
    *,
    prepared: Any = None,
    offsets: Sequence[Offset | None] | None = None,
) -> tuple[Any, float]:
    """The first step of `compute_image`: the difference and the seconds it took.

    A caller that holds the references only for this step can drop them before `detect_image`
    (at 1024x1024, 30 references are 120 MB).
    """
    from blobwatch.difference import blob_difference

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FewReferencesWarning is expected while < 30 exist
        diff = blob_difference(
            current,
            references,
            register=settings.register,
            min_references=settings.min_references,
            max_references=settings.n_references,
            prepared=prepared,
            offsets=offsets,
        )
    return diff, time.perf_counter() - t


def detect_image(
    diff: Any,
    classifier: Any,
    settings: MonitorSettings,
    *,
    localizer: Any = None,
    timings: dict[str, float] | None = None,
) -> ImageResult:
    """The second step of `compute_image`: detection and saliency of a difference (`difference_of`)."""
    from blobwatch.detect import detect
    from blobwatch.fcn import detect_fcn

    current = diff.current
    timings = dict(timings or {})
    t = time.perf_counter()
    if settings.detector == "fcn":
        if localizer is None:
            from blobwatch.fcn import FCNDetector

            localizer = FCNDetector(settings.fcn_model)
        detection = detect_fcn(diff, localizer, classifier, threshold=settings.threshold, name=current.name)
    else:
        detection = detect(diff, classifier, threshold=settings.threshold, name=current.name)
    timings["detect"] = time.perf_counter() - t
    t = time.perf_counter()
    mapped = sorted({s.index for s in detection.flagged} | {c.subframe for c in detection.candidates})
    saliency = detection.saliency_maps(mapped)
    localizer_saliency = detection.localizer_saliency()
    timings["saliency"] = time.perf_counter() - t
    parameters = {
        "detector": detection.detector,
        "threshold": float(detection.threshold),
        "subframe_threshold": float(
            detection.threshold if detection.subframe_threshold is None else detection.subframe_threshold
        ),
        "n_references": diff.n_references,
        "max_references": settings.n_references,
        "min_references": settings.min_references,
        "register": settings.register,
        "registration_method": diff.method,
        "offsets": np.round(np.asarray(diff.offsets, dtype=float), 4).tolist(),
        "reference_paths": [str(p) for p in diff.reference_paths],
        "known_margin": settings.known_margin,
        "link_distance": settings.link_distance,
        "detection": jsonable(dataclasses.asdict(detection.parameters)),
        "preparation": jsonable(detection.preparation),
        "rejected_seeds": len(detection.rejected),
    }
    max_p = float(max(s.probability for s in detection.subframes))
    return ImageResult(diff, detection, saliency, max_p, parameters, timings, localizer_saliency)


def process_image(
    session_factory: sessionmaker[Session],
    image_id: int,
    *,
    model: _Model,
    settings: MonitorSettings,
    reports: Path,
    notify_urls: Sequence[str],
    cache: _ImageCache,
    worker: str,
) -> ImageOutcome:
    """Process one claimed image.

    Three phases: read what is needed from the database (short read transaction); compute the
    difference, detection and saliency (`compute_image`, no transaction open); then `record` it
    in one write transaction.  Any failure rolls back the whole write; the caller releases the
    claim so the next run redoes the image.
    """
    t0 = time.perf_counter()
    # 1. read phase
    with session_factory() as session:
        image = session.get(Image, image_id)
        assert image is not None
        refs = _references(session, image, settings)
        session.expunge_all()  # keep the loaded rows usable after the read transaction ends
        session.rollback()
    if len(refs) < settings.min_references:  # a reference was rejected meanwhile
        raise _NotReady(f"only {len(refs)} valid earlier images (need {settings.min_references})")
    try:
        current = cache.get(image)
    except InputError as exc:
        _set_status(session_factory, image_id, "rejected", exc.problem)
        return ImageOutcome(image.id, image.name, "rejected", image.obs_date, exc.problem)
    try:
        ref_images = cache.get_many(refs)
    except InputError as exc:  # a reference went bad since it was registered
        bad = next((r for r in refs if r.path == exc.path), None)
        if bad is None:
            raise
        _set_status(session_factory, bad.id, "rejected", exc.problem)
        log.warning("%s: reference rejected: %s", bad.path, exc.problem)
        raise _Retry() from None
    read_seconds = time.perf_counter() - t0

    # 2. compute phase (the references are dropped once the difference is made: less memory)
    diff, seconds = difference_of(
        current, ref_images, settings, prepared=cache.prepared, offsets=_stored_offsets(image, refs)
    )
    del ref_images, current
    heap.trim()
    result = detect_image(
        diff, model.classifier, settings, localizer=model.localizer, timings={"difference": seconds}
    )
    heap.trim()
    # 3. write phase
    return record(
        session_factory,
        image_id,
        result,
        reference_ids=[r.id for r in refs],
        model=model,
        settings=settings,
        reports=reports,
        notify_urls=notify_urls,
        worker=worker,
        timings={"read": read_seconds, **result.timings},
        started=t0,
    )


def record(
    session_factory: sessionmaker[Session],
    image_id: int,
    result: ImageResult,
    *,
    reference_ids: Sequence[int],
    model: _Model,
    settings: MonitorSettings,
    reports: Path,
    notify_urls: Sequence[str],
    worker: str,
    timings: dict[str, float],
    started: float,
) -> ImageOutcome:
    """Record an `ImageResult` in one write transaction (SQLite ``BEGIN IMMEDIATE``).

    Checks the claim is still ``worker``'s, sorts the candidates against the latest catalog and
    earlier candidates, writes the report files atomically and commits every row of the image
    (run, subframes, candidates) together with its pending notifications.

    Raises
    ------
    _ClaimLost
        Another monitor took the image over; nothing is written.
    """
    from blobwatch.monitor.display import save_display_arrays
    from blobwatch.monitor.report import (
        CandidateView,
        ImageReport,
        SubframeView,
        format_provenance,
        report_dir,
        write_image_report,
    )

    diff, detection = result.difference, result.detection
    timings = dict(timings)
    with write_session(session_factory) as session:
        image = session.get(Image, image_id, populate_existing=True)
        if image is None or image.status != "processing" or image.claimed_by != worker:
            raise _ClaimLost(f"image {image_id} is no longer claimed by {worker}")
        outcome = ImageOutcome(image.id, image.name, "processed", image.obs_date)
        blobs = list(session.scalars(select(Blob)))
        records = _classify_candidates(session, image, detection.candidates, blobs, settings)
        run = Run(
            image_id=image.id,
            model_path=model.path,
            model_sha256=model.sha256,
            model_metadata=model.metadata,
            blobwatch_version=model.versions["blobwatch"],
            torch_version=model.versions["torch"],
            numpy_version=model.versions["numpy"],
            parameters=jsonable({**result.parameters, "reference_image_ids": list(reference_ids)}),
            timings={},
            threshold=float(detection.threshold),
            max_probability=result.max_probability,
            started_at=utcnow(),
        )
        session.add(run)
        session.flush()
        cand_rows = []
        for rec in records:
            row = Candidate(
                run_id=run.id,
                image_id=image.id,
                x=rec["x"],
                y=rec["y"],
                probability=rec["probability"],
                significance=rec["significance"],
                radius=rec["radius"],
                subframe=rec["subframe"],
                status=rec["status"],
                alerted=rec["status"] == "new",
                linked_to=rec["linked_to"],
                known_blob_id=rec["known_blob_id"],
                reason=rec["note"] or None,
                created_at=utcnow(),
            )
            session.add(row)
            cand_rows.append(row)
        session.flush()  # candidate ids for the report

        t = time.perf_counter()
        views = [
            CandidateView(r.id, r.x, r.y, r.probability, r.significance, r.radius, r.status, rec["note"])
            for r, rec in zip(cand_rows, records, strict=True)
        ]
        sub_views = [
            SubframeView(s.index, s.x0, s.y0, s.size, float(s.probability), bool(s.blob))
            for s in detection.subframes
        ]
        provenance = format_provenance(
            image_path=image.path,
            image_sha256=image.sha256,
            image_filter=image.filter,
            model_path=model.path,
            model_sha256=model.sha256,
            model_metadata=model.metadata,
            versions=model.versions,
            reference_paths=diff.reference_paths,
            method=diff.method,
            offsets=diff.offsets,
            threshold=float(detection.threshold),
            run_id=run.id,
            worker=worker,
            timings=timings,
            detector=detection.detector,
        )
        report = ImageReport(
            image_id=image.id,
            name=image.name,
            path=image.path,
            mjd=image.mjd,
            obs_date=image.obs_date,
            difference=diff.data,
            prepared=detection.prepared,
            threshold=float(detection.threshold),
            subframes=sub_views,
            candidates=views,
            known_blobs=np.array([(b.x, b.y, b.radius) for b in blobs], dtype=float).reshape(-1, 3),
            saliency=result.saliency,
            localizer_saliency=result.localizer_saliency,
            detector=detection.detector,
            subframe_threshold=detection.subframe_threshold,
            provenance=provenance,
        )
        page = write_image_report(report, reports)
        folder = report_dir(reports, image.id, image.name)
        # the review app's pixels: saved once here, never rebuilt per request
        save_display_arrays(folder, run.id, diff.stack, diff.data)
        for s in detection.subframes:
            session.add(
                SubframePrediction(
                    run_id=run.id,
                    index=s.index,
                    x0=s.x0,
                    y0=s.y0,
                    size=s.size,
                    probability=float(s.probability),
                    flagged=bool(s.blob),
                    saliency_path=str(folder / f"saliency_{s.index:02d}.png")
                    if s.index in result.saliency
                    else None,
                )
            )
        timings["report"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        run.timings = {k: round(v, 4) for k, v in timings.items()}
        run.report_path = str(page)
        run.finished_at = utcnow()

        new_rows = [r for r in cand_rows if r.status == "new"]
        if new_rows and notify_urls:
            title, body = _notify.format_alert(
                image, new_rows, page, base_url=settings.base_url, db_url=str(session.get_bind().engine.url)
            )
            _notify.queue_notifications(session, image, notify_urls, title, body)
        image.status, image.reason, image.processed_at = "processed", None, utcnow()
        image.claimed_by = image.claimed_at = None
        session.commit()

    outcome.max_probability = result.max_probability
    outcome.report = str(page)
    outcome.candidates = [
        {"id": r.id, "x": r.x, "y": r.y, "probability": r.probability, "status": r.status} for r in cand_rows
    ]
    outcome.seconds = time.perf_counter() - started
    return outcome


def _outcome(session_factory: sessionmaker[Session], image_id: int, status: str, reason: str) -> ImageOutcome:
    """An outcome for an image that was not processed, with its name and date from the database."""
    with session_factory() as session:
        image = session.get(Image, image_id)
        if image is None:  # pragma: no cover - rows are never deleted by the monitor
            return ImageOutcome(image_id, str(image_id), status, reason=reason)
        return ImageOutcome(image_id, image.name, status, image.obs_date, reason)


def _failed(
    session_factory: sessionmaker[Session], image_id: int, worker: str, exc: Exception
) -> ImageOutcome:
    """Log an unexpected processing error with its traceback, release the claim: a ``failed`` outcome."""
    log.error("image %d: processing failed", image_id, exc_info=exc)
    with session_factory() as session:
        release_image(session, image_id, worker)
    return _outcome(session_factory, image_id, "failed", f"{type(exc).__name__}: {exc}")


def _add_outcome(
    summary: MonitorSummary, outcome: ImageOutcome, echo_line: Callable[[str], None], bar: Any
) -> None:
    """Add an image's outcome to the summary, print its line and advance the progress bar."""
    summary.outcomes.append(outcome)
    if outcome.status == "rejected":
        summary.rejected.append(outcome)
    echo_line(outcome.summary_line())
    if bar:
        bar.update(1)


class _Retry(Exception):
    """A reference turned out to be unreadable; choose the references again."""


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def run_monitor(
    inbox: str | os.PathLike,
    *,
    db: str | sessionmaker[Session] | None = None,
    reports: str | os.PathLike | None = None,
    notify: Sequence[str] | None = None,
    model: str | os.PathLike | None = None,
    classifier: Any | None = None,
    settings: MonitorSettings | None = None,
    sender: _notify.Sender = _notify.apprise_send,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> MonitorSummary:
    """One monitor pass over ``inbox``.

    Parameters
    ----------
    inbox : path-like
        Folder searched recursively for FITS files (or one file).
    db : str or sessionmaker, optional
        SQLAlchemy URL or an `open_database` session factory; default
        ``sqlite:///<reports>/blobwatch.db``.
    reports : path-like, optional
        Report folder; default ``./blobwatch-reports``.
    notify : sequence of str, optional
        Apprise URLs to notify (already resolved, see `blobwatch.config.resolve`).
    model : path-like, optional
        Model file; the shipped model by default.  Loaded only if something is to be processed.
    classifier : object, optional
        A ready `blobwatch.classifier.BlobClassifier` (reused across calls; overrides ``model``).
    settings : MonitorSettings, optional
    sender : callable
        Delivery function (tests inject one); apprise by default.
    progress : bool, optional
        Show a tqdm progress bar (default: when stderr is a terminal and > 1 image is waiting).
    echo : callable, optional
        Receives one summary line per image (default: print).

    Returns
    -------
    MonitorSummary
    """
    start = time.perf_counter()
    settings = settings or MonitorSettings()
    echo = echo or (lambda line: print(line, flush=True))
    urls = list(notify or [])
    cache = _ImageCache(max(settings.cache_images, settings.n_references + 2))
    reports_path, session_factory, summary = _start_run(inbox, db, reports, settings, cache, echo)
    if settings.register:  # consecutive images share references: prepare each once (and keep it)
        from blobwatch.difference import PreparedCache

        cache.prepared = PreparedCache(settings.n_references + 1, store=cache.store)
        _measure_new_offsets(session_factory, lambda frame, images: measure_offsets(frame, images, cache))
    worker = worker_name()
    ready = _ready_images(session_factory, settings)

    loaded = (
        _load_model(model, classifier, settings) if ready else None
    )  # before any claim: a bad model claims nothing
    bar, echo_line = progress_bar(progress, len(ready), "monitor", echo)
    try:
        for iid in ready:
            with session_factory() as session:
                if not claim_image(session, iid, worker, stale_after=settings.stale_after):
                    log.info("image %d is being processed by another monitor; skipped", iid)
                    if bar:
                        bar.update(1)
                    continue
            assert loaded is not None
            for _attempt in range(settings.n_references + 1):
                try:
                    outcome = process_image(
                        session_factory,
                        iid,
                        model=loaded,
                        settings=settings,
                        reports=reports_path,
                        notify_urls=urls,
                        cache=cache,
                        worker=worker,
                    )
                    break
                except _Retry:
                    continue
                except _NotReady as exc:
                    with session_factory() as session:
                        release_image(session, iid, worker)
                    outcome = _outcome(session_factory, iid, "waiting", str(exc))
                    break
                except _ClaimLost as exc:  # another monitor took over a stale claim: its result counts
                    log.warning("%s", exc)
                    outcome = _outcome(session_factory, iid, "busy", str(exc))
                    break
                except (KeyboardInterrupt, SystemExit):
                    with session_factory() as session:
                        release_image(session, iid, worker)
                    raise
                except Exception as exc:  # one bad image never stops the others
                    outcome = _failed(session_factory, iid, worker, exc)
                    break
            else:  # pragma: no cover - only if every reference became unreadable
                with session_factory() as session:
                    release_image(session, iid, worker)
                continue
            _add_outcome(summary, outcome, echo_line, bar)
    finally:
        if bar:
            bar.close()

    _finish_run(summary, session_factory, reports_path, urls, sender, echo)
    summary.seconds = time.perf_counter() - start
    return summary


def _start_run(
    inbox: str | os.PathLike,
    db: str | sessionmaker[Session] | None,
    reports: str | os.PathLike | None,
    settings: MonitorSettings,
    cache: _ImageCache,
    echo: Callable[[str], None],
) -> tuple[Path, sessionmaker[Session], MonitorSummary]:
    """Open the database, register the inbox's new files, reject wrong shapes, free dead claims.

    Returns
    -------
    (Path, sessionmaker, MonitorSummary)
        The report folder, the session factory and a summary holding the registrations.
    """
    if settings.min_references < 1 or settings.n_references < settings.min_references:
        raise ValueError(
            f"need 1 <= min_references ({settings.min_references}) <= n_references ({settings.n_references})"
        )
    reports_path = (Path(reports) if reports is not None else Path.cwd() / "blobwatch-reports").resolve()
    reports_path.mkdir(parents=True, exist_ok=True)
    if settings.reference_store:
        from blobwatch.refstore import ReferenceStore

        cache.store = ReferenceStore(settings.store_dir or reports_path / STORE_FOLDER)
    session_factory = (
        db
        if isinstance(db, sessionmaker)
        else open_database(db or f"sqlite:///{(reports_path / 'blobwatch.db').resolve()}")
    )
    summary = MonitorSummary()
    paths = discover(inbox)
    if not paths:
        log.warning("%s: the inbox holds no FITS files (%s): nothing to do", inbox, ", ".join(FITS_SUFFIXES))
    summary.registered, summary.rejected = register_files(session_factory, paths, cache)
    _, wrong = _reject_wrong_shapes(session_factory, settings.expected_shape)
    summary.rejected.extend(wrong)
    for outcome in summary.rejected:
        echo(outcome.summary_line())
    reclaim_dead_claims(session_factory)
    return reports_path, session_factory, summary


def _ready_images(session_factory: sessionmaker[Session], settings: MonitorSettings) -> list[int]:
    """Ids of the unprocessed images with at least ``min_references`` earlier valid images, in date order."""
    with session_factory() as session:
        todo = session.execute(
            select(Image.id, Image.mjd)
            .where(Image.status.in_(("registered", "processing")), Image.mjd.is_not(None))
            .order_by(Image.mjd, Image.id)
        ).all()
        valid_mjds = np.sort(
            np.array(
                session.scalars(
                    select(Image.mjd).where(Image.status != "rejected", Image.mjd.is_not(None))
                ).all(),
                dtype=float,
            )
        )
    ready = [
        iid
        for iid, mjd in todo
        if mjd is not None and np.searchsorted(valid_mjds, mjd, side="left") >= settings.min_references
    ]
    if len(todo) > len(ready):
        log.info("%d image(s) wait for %d earlier images", len(todo) - len(ready), settings.min_references)
    return ready


def progress_bar(
    progress: bool | None, total: int, desc: str, echo: Callable[[str], None]
) -> tuple[Any, Callable[[str], None]]:
    """A tqdm bar on stderr (``progress`` True, or None and stderr a terminal and > 1 image) or None.

    Returns
    -------
    (tqdm or None, callable)
        The bar and the function that prints a line without breaking it.
    """
    if progress or (progress is None and total > 1 and sys.stderr.isatty()):
        from tqdm import tqdm

        bar = tqdm(total=total, unit="image", desc=desc, file=sys.stderr)
        return bar, bar.write
    return None, echo


def _finish_run(
    summary: MonitorSummary,
    session_factory: sessionmaker[Session],
    reports_path: Path,
    urls: Sequence[str],
    sender: _notify.Sender,
    echo: Callable[[str], None],
) -> None:
    """Send pending notifications, then rewrite the index and blob-map pages if anything changed."""
    summary.deliveries = _notify.deliver_pending(session_factory, urls, sender=sender) if urls else []
    for d in summary.deliveries:
        if not d.ok:
            echo(f"notification for image {d.image_id} failed (will retry next run): {d.error}")

    from blobwatch.monitor.report import write_blobmap, write_index

    with session_factory() as session:
        changed = bool(summary.outcomes or summary.registered or summary.rejected)
        if changed or not (reports_path / "index.html").exists():
            summary.index = write_index(session, reports_path)
            write_blobmap(session, reports_path)
        else:
            summary.index = reports_path / "index.html"


def watch(inbox: str | os.PathLike, seconds: float, **kwargs: Any) -> None:
    """Run `run_monitor` every ``seconds`` until interrupted (the classifier is loaded once).

    A run that fails (database locked, inbox share unmounted, disk full, ...) is logged with its
    traceback and the next one starts after ``seconds`` as usual: one failure never ends the watch.
    """
    if seconds <= 0:
        raise ValueError(f"watch interval {seconds} must be positive")
    classifier = kwargs.pop("classifier", None)
    model = kwargs.pop("model", None)
    if classifier is None:
        from blobwatch.classifier import BlobClassifier

        classifier = BlobClassifier(model)
    while True:
        try:
            run_monitor(inbox, classifier=classifier, **kwargs)
        except Exception:  # KeyboardInterrupt (Ctrl-C) is not an Exception: it still stops the watch
            log.exception("monitor run failed; the next run starts in %g s", seconds)
        time.sleep(seconds)
