"""The catalog of known blobs: import, export (ECSV + DQ mask), confirm and reject candidates.

`confirm_candidate` and `reject_candidate` are the one code path for the command line and the
web review app.  They change rows in the given session and commit it (``commit=False`` leaves
the transaction to the caller).

Coordinates are 0-based pixels of the 1024x1024 blob image (x = column, y = row); the 1014x1014
mask is the same detector without the 5-pixel reference border.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from blobwatch import __version__
from blobwatch.errors import BlobwatchError, InputError
from blobwatch.monitor.db import Blob, Candidate, Image, Run, latest_run, mjd_to_datetime, utcnow
from blobwatch.monitor.measure import BlobMeasurement, loss_map, measure_blob

__all__ = [
    "BLOB_DQ_FLAG",
    "CatalogError",
    "ImportResult",
    "blob_mask",
    "bpixtab_rows",
    "catalog_version",
    "confirm_candidate",
    "export_bpixtab",
    "export_catalog",
    "import_catalog",
    "known_blob_at",
    "locate_image",
    "measure_candidate",
    "measure_in_stack",
    "rebuild_difference",
    "reference_keywords",
    "reject_candidate",
    "same_blob",
]

log = logging.getLogger(__name__)

#: WFC3/IR DQ flag for blob pixels.
BLOB_DQ_FLAG = 512
#: Width of the reference-pixel border between the 1024x1024 and 1014x1014 frames.
BORDER = 5
#: Two catalog entries closer than this (px) are the same blob (import is idempotent, and a
#: candidate this close to a catalog blob's edge is not confirmed as another one).
DUPLICATE_DISTANCE = 1.5
#: USEAFTER of a product from a catalog whose blobs have no first-seen date: WFC3's installation
#: on HST (Servicing Mission 4).
WFC3_INSTALLED = _dt.datetime(2009, 5, 14)


class CatalogError(BlobwatchError):
    """A catalog operation cannot be done (unknown candidate, wrong state, missing images)."""


@dataclass(frozen=True)
class ImportResult:
    """What `import_catalog` did."""

    added: list[Blob]
    skipped: int
    source: str


def _column(table: Any, *names: str) -> str | None:
    lower = {name.lower(): name for name in table.colnames}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def import_catalog(
    session: Session,
    path: str | os.PathLike,
    *,
    source: str | None = None,
    include_from_day: int | None = None,
    commit: bool = True,
) -> ImportResult:
    """Add the blobs of an ECSV file to the catalog.

    Accepts a user's table with columns ``x``, ``y``, ``radius`` and optionally ``depth``,
    ``id``/``label``, ``first_seen_mjd`` (or ``mjd``), or the simulator's ``truth_blobs.ecsv``
    (recognised by its ``day`` column).  For simulator truth only the blobs that existed before
    the sequence (``day < 0``) are imported, because the later ones are what the monitor must
    find; ``include_from_day=N`` also imports those appearing before day N.  Rows within
    `DUPLICATE_DISTANCE` px of a catalog blob are skipped, so importing twice adds nothing.

    Raises
    ------
    blobwatch.errors.InputError
        Unreadable file, missing columns, non-finite or negative values.
    """
    from astropy.table import Table

    spath = os.fspath(path)
    try:
        table = Table.read(spath, format="ascii.ecsv")
    except FileNotFoundError:
        raise InputError(spath, "file not found") from None
    except Exception as exc:  # astropy raises many kinds for a bad file
        raise InputError(spath, f"not a readable ECSV table ({exc})") from None
    missing = [c for c in ("x", "y", "radius") if _column(table, c) is None]
    if missing:
        raise InputError(spath, f"missing column(s) {', '.join(missing)} (need x, y, radius)")
    day_col = _column(table, "day")
    is_truth = day_col is not None
    src = source or ("simulator-truth" if is_truth else "import")
    x = np.asarray(table[_column(table, "x")], dtype=np.float64)
    y = np.asarray(table[_column(table, "y")], dtype=np.float64)
    radius = np.asarray(table[_column(table, "radius")], dtype=np.float64)
    depth_col = _column(table, "depth")
    depth = np.asarray(table[depth_col], dtype=np.float64) if depth_col else np.full(len(x), np.nan)
    mjd_col = _column(table, "first_seen_mjd", "mjd")
    mjd = np.asarray(table[mjd_col], dtype=np.float64) if mjd_col else np.full(len(x), np.nan)
    label_col = _column(table, "label", "name", "id")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(radius).all()):
        raise InputError(spath, "x, y and radius must be finite")
    if (radius <= 0).any():
        raise InputError(spath, "radius must be positive")
    first_seen = []
    for row, value in enumerate(mjd, start=1):
        try:
            first_seen.append(mjd_to_datetime(float(value)))
        except ValueError:  # astropy cannot make a datetime of it (beyond years 1-9999)
            raise InputError(
                spath, f"{mjd_col} {value:g} (row {row}) is not a date between years 1 and 9999"
            ) from None
    keep = np.ones(len(x), dtype=bool)
    if is_truth:
        day = np.asarray(table[day_col], dtype=np.int64)
        keep = day < (0 if include_from_day is None else int(include_from_day))

    existing = np.array([(b.x, b.y) for b in session.scalars(select(Blob))], dtype=np.float64).reshape(-1, 2)
    added: list[Blob] = []
    skipped = 0
    for i in np.nonzero(keep)[0]:
        if (
            existing.size
            and np.min(np.hypot(existing[:, 0] - x[i], existing[:, 1] - y[i])) < DUPLICATE_DISTANCE
        ):
            skipped += 1
            continue
        label = None
        if label_col is not None:
            label = f"truth-{table[label_col][i]}" if is_truth else str(table[label_col][i])
        blob = Blob(
            x=float(x[i]),
            y=float(y[i]),
            radius=float(radius[i]),
            depth=float(depth[i]) if np.isfinite(depth[i]) else None,
            first_seen_mjd=float(mjd[i]) if np.isfinite(mjd[i]) else None,
            first_seen=first_seen[i],
            source=src,
            label=label,
        )
        session.add(blob)
        added.append(blob)
        existing = np.vstack([existing, [[x[i], y[i]]]])
    if commit:
        session.commit()
    else:
        session.flush()
    log.info("imported %d blobs from %s (%d already in the catalog)", len(added), spath, skipped)
    return ImportResult(added=added, skipped=skipped, source=src)


def known_blob_at(blobs: Sequence[Blob], x: float, y: float, *, margin: float = 0.0) -> Blob | None:
    """Return the nearest catalog blob whose radius (+ ``margin``) contains ``(x, y)``, or None."""
    if not blobs:
        return None
    xy = np.array([(b.x, b.y, b.radius) for b in blobs], dtype=np.float64)
    dist = np.hypot(xy[:, 0] - x, xy[:, 1] - y)
    inside = dist <= xy[:, 2] + margin
    if not inside.any():
        return None
    return blobs[int(np.argmin(np.where(inside, dist, np.inf)))]


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def blob_mask(xyr: np.ndarray, shape: tuple[int, int] = (1024, 1024), *, offset: float = 0.0) -> np.ndarray:
    """Boolean mask of the pixels within each blob's radius.

    Parameters
    ----------
    xyr : numpy.ndarray
        ``(N, 3)`` blob centres and radii in 1024x1024 coordinates.
    shape : (int, int)
        Output shape.
    offset : float
        Subtracted from x and y (``BORDER`` for the 1014x1014 science frame).
    """
    mask = np.zeros(shape, dtype=bool)
    for x, y, r in np.asarray(xyr, dtype=np.float64).reshape(-1, 3):
        cx, cy = x - offset, y - offset
        r0, r1 = max(0, int(np.floor(cy - r))), min(shape[0], int(np.ceil(cy + r)) + 1)
        c0, c1 = max(0, int(np.floor(cx - r))), min(shape[1], int(np.ceil(cx + r)) + 1)
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.ogrid[r0:r1, c0:c1]
        mask[r0:r1, c0:c1] |= (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    return mask


def _catalog_table(blobs: Sequence[Blob]) -> Any:
    from astropy.table import Table

    table = Table()
    table["id"] = np.array([b.id for b in blobs], dtype=np.int64)
    table["x"] = np.array([b.x for b in blobs], dtype=np.float64)
    table["y"] = np.array([b.y for b in blobs], dtype=np.float64)
    table["radius"] = np.array([b.radius for b in blobs], dtype=np.float64)
    table["depth"] = np.array([np.nan if b.depth is None else b.depth for b in blobs])
    table["first_seen_mjd"] = np.array(
        [np.nan if b.first_seen_mjd is None else b.first_seen_mjd for b in blobs]
    )
    table["first_seen"] = [b.first_seen.strftime("%Y-%m-%d") if b.first_seen else "" for b in blobs]
    table["source"] = [b.source for b in blobs]
    table["label"] = [b.label or "" for b in blobs]
    table["candidate_id"] = np.array([b.candidate_id or -1 for b in blobs], dtype=np.int64)
    table["x"].unit = table["y"].unit = table["radius"].unit = "pix"
    table["x"].description = "0-based column in the 1024x1024 blob image (DS9: x+1)"
    table["y"].description = "0-based row in the 1024x1024 blob image (DS9: y+1)"
    table["depth"].description = "fractional throughput loss at the centre"
    table["candidate_id"].description = "confirmed candidate the blob came from (-1: none)"
    table.meta["comments"] = [
        f"blobwatch {__version__} blob catalog, written {utcnow().isoformat(timespec='seconds')}"
    ]
    return table


def export_catalog(session: Session, path: str | os.PathLike) -> list[Path]:
    """Write the catalog as ECSV and as two DQ mask FITS files (1024x1024 and 1014x1014).

    ``path`` is the ECSV file; the masks are ``<stem>_mask1024.fits`` and
    ``<stem>_mask1014.fits`` beside it: an int16 ``DQ`` image extension with `BLOB_DQ_FLAG`
    (512) on every pixel within a blob's radius, like the blob flag of a WFC3/IR DQ array.
    All files are written atomically.

    Returns
    -------
    list of pathlib.Path
        The ECSV file and the two masks.
    """
    from astropy.io import fits

    from blobwatch.atomic import atomic_path

    out = Path(path)
    blobs = list(session.scalars(select(Blob).order_by(Blob.id)))
    table = _catalog_table(blobs)
    with atomic_path(out) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    xyr = np.array([(b.x, b.y, b.radius) for b in blobs], dtype=np.float64).reshape(-1, 3)
    written = [out]
    for size, offset in ((1024, 0.0), (1014, float(BORDER))):
        dq = np.where(blob_mask(xyr, (size, size), offset=offset), BLOB_DQ_FLAG, 0).astype(np.int16)
        primary = fits.PrimaryHDU()
        primary.header.update(
            reference_keywords(
                session, blobs, f"WFC3/IR blob mask {size}x{size}: DQ={BLOB_DQ_FLAG} in each blob"
            )
        )
        primary.header["FRAMEOFF"] = (offset, "blob image x,y minus this = this frame's x,y")
        ext = fits.ImageHDU(dq, name="DQ")
        ext.header["BUNIT"] = "UNITLESS"
        mask_path = out.with_name(f"{out.stem}_mask{size}.fits")
        with atomic_path(mask_path) as tmp:
            fits.HDUList([primary, ext]).writeto(tmp, overwrite=True)
        written.append(mask_path)
    return written


def catalog_version(blobs: Sequence[Blob]) -> str:
    """A short version of the catalog's content: ``<N>-<12 hex digits>``.

    The digits are the SHA-256 of every blob's id, centre and radius (to 0.001 px), so two
    exports of an unchanged catalog carry the same version and any change gives a new one.
    """
    rows = "".join(f"{b.id} {b.x:.3f} {b.y:.3f} {b.radius:.3f}\n" for b in sorted(blobs, key=lambda b: b.id))
    return f"{len(blobs)}-{hashlib.sha256(rows.encode()).hexdigest()[:12]}"


def reference_keywords(session: Session, blobs: Sequence[Blob], descrip: str) -> list[tuple[str, Any, str]]:
    """Primary-header cards of a WFC3 reference file for a product made from ``blobs``.

    ``INSTRUME``/``DETECTOR`` (WFC3, IR), ``FILETYPE`` (``BAD PIXELS``, as the IR bad-pixel
    table), ``USEAFTER`` (the newest blob's first-seen date: the catalog is complete from then
    on; WFC3's installation if no blob has one), ``PEDIGREE`` (``INFLIGHT`` and the first and
    last observation dates of the monitored images, ``DUMMY`` without any), ``DESCRIP``, and a
    ``COMMENT`` with the catalog version (`catalog_version`, also ``CATVERS``).
    """
    from sqlalchemy import func

    first, last = session.execute(select(func.min(Image.obs_date), func.max(Image.obs_date))).one()
    pedigree = (
        f"INFLIGHT {first:%d/%m/%Y} {last:%d/%m/%Y}" if first is not None and last is not None else "DUMMY"
    )
    useafter = max((b.first_seen for b in blobs if b.first_seen is not None), default=WFC3_INSTALLED)
    version = catalog_version(blobs)
    written = utcnow().strftime("%Y-%m-%dT%H:%M:%S")
    return [
        ("INSTRUME", "WFC3", "instrument"),
        ("DETECTOR", "IR", "detector"),
        ("FILETYPE", "BAD PIXELS", "type of reference data"),
        ("USEAFTER", useafter.strftime("%b %d %Y %H:%M:%S"), "use for data taken after this date"),
        ("PEDIGREE", pedigree, "source of the data"),
        ("DESCRIP", descrip[:67], ""),  # a full-length description leaves no room for a comment
        ("ORIGIN", "blobwatch", "software that wrote this file"),
        ("BWVERS", __version__, "blobwatch version"),
        ("DATE", written, "UTC time written"),
        ("NBLOBS", len(blobs), "blobs in the catalog"),
        ("BLOBFLAG", BLOB_DQ_FLAG, "DQ value of blob pixels"),
        ("CATVERS", version, "blob catalog version (count-digest)"),
        (
            "COMMENT",
            f"blob catalog version {version}: {len(blobs)} blobs, exported {written} UTC "
            f"by blobwatch {__version__}",
            "",
        ),
    ]


def bpixtab_rows(xyr: np.ndarray, shape: tuple[int, int] = (1024, 1024)) -> np.ndarray:
    """Bad-pixel-table rows of blob pixels: one run of flagged pixels along x per image row per blob.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` int: ``PIX1`` (1-based x of the run's first pixel), ``PIX2`` (1-based y),
        ``LENGTH`` (pixels in the run) and the 0-based index of the blob in ``xyr``.
    """
    rows = []
    for k, blob in enumerate(np.asarray(xyr, dtype=np.float64).reshape(-1, 3)):
        mask = blob_mask(blob[None, :], shape)
        for y in np.nonzero(mask.any(axis=1))[0]:
            xs = np.nonzero(mask[y])[0]  # one disc: the flagged pixels of a row are contiguous
            rows.append((int(xs[0]) + 1, int(y) + 1, int(xs.size), k))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def export_bpixtab(session: Session, path: str | os.PathLike) -> Path:
    """Write the catalog's blob pixels as a WFC3-style bad-pixel table (FITS, atomically).

    A binary table extension ``BPIXTAB`` with the columns of the IR bad-pixel table, ``PIX1``,
    ``PIX2`` (1-based x, y in the 1024x1024 blob image), ``LENGTH``, ``AXIS`` (1: the run goes
    along x) and ``VALUE`` (`BLOB_DQ_FLAG`), plus ``BLOB`` (the catalog id): one row per run of
    blob pixels in an image row (`bpixtab_rows`).  The primary header carries the reference-file
    keywords (`reference_keywords`).
    """
    from astropy.io import fits

    from blobwatch.atomic import atomic_path

    blobs = list(session.scalars(select(Blob).order_by(Blob.id)))
    rows = bpixtab_rows(np.array([(b.x, b.y, b.radius) for b in blobs], dtype=np.float64))
    ids = np.array([b.id for b in blobs], dtype=np.int32)
    columns = [
        fits.Column("PIX1", "J", array=rows[:, 0]),
        fits.Column("PIX2", "J", array=rows[:, 1]),
        fits.Column("LENGTH", "J", array=rows[:, 2]),
        fits.Column("AXIS", "J", array=np.ones(len(rows), dtype=np.int32)),
        fits.Column("VALUE", "J", array=np.full(len(rows), BLOB_DQ_FLAG, dtype=np.int32)),
        fits.Column("BLOB", "J", array=ids[rows[:, 3]]),
    ]
    primary = fits.PrimaryHDU()
    primary.header.update(
        reference_keywords(session, blobs, f"WFC3/IR blob pixels as a bad-pixel table (DQ={BLOB_DQ_FLAG})")
    )
    table = fits.BinTableHDU.from_columns(columns, name="BPIXTAB")
    out = Path(path)
    with atomic_path(out) as tmp:
        fits.HDUList([primary, table]).writeto(tmp, overwrite=True)
    return out


# --------------------------------------------------------------------------------------------
# Review: confirm / reject
# --------------------------------------------------------------------------------------------


def _get_candidate(session: Session, candidate_id: int) -> Candidate:
    candidate = session.get(Candidate, int(candidate_id))
    if candidate is None:
        raise CatalogError(f"candidate {candidate_id} does not exist")
    return candidate


def locate_image(recorded: str, images_dir: str | os.PathLike | None = None) -> Path:
    """The recorded path of an image, or the file of that name in ``images_dir`` if it moved."""
    path = Path(recorded)
    if path.exists() or images_dir is None:
        return path
    moved = Path(images_dir) / path.name
    return moved if moved.exists() else path


def rebuild_difference(
    image: Image, run: Run | None, *, images_dir: str | os.PathLike | None = None
) -> tuple[Any, Any]:
    """Re-read an image and rebuild the difference its run made (one code path for review).

    Uses the references, the registration switch and the references' offsets recorded in
    ``run.parameters`` (looked up in ``images_dir`` by file name if they moved) with
    `blobwatch.difference.blob_difference`; a run that recorded no offsets is registered again.
    The warnings about few or unregistered references are not repeated: the run reported them.

    Returns
    -------
    (BlobImage, DifferenceResult or None)
        The current image, and its difference (None when the run recorded no references,
        e.g. an image that was never processed).

    Raises
    ------
    blobwatch.errors.InputError
        The image or a reference can no longer be read.
    """
    from blobwatch.difference import FewReferencesWarning, RegistrationWarning, blob_difference
    from blobwatch.fits_io import read_blob_image

    current = read_blob_image(locate_image(image.path, images_dir))
    params = (run.parameters or {}) if run is not None else {}
    references = list(params.get("reference_paths") or [])
    if not references:
        return current, None
    refs = [read_blob_image(locate_image(p, images_dir)) for p in references]  # shapes: blob_difference
    offsets = list(params.get("offsets") or [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewReferencesWarning)
        warnings.simplefilter("ignore", RegistrationWarning)
        result = blob_difference(
            current,
            refs,
            register=bool(params.get("register", True)),
            min_references=min(len(refs), int(params.get("min_references", 5))),
            max_references=len(refs),  # exactly the run's references, also beyond the seed's 30
            offsets=[(float(dy), float(dx)) for dy, dx in offsets] if len(offsets) == len(refs) else None,
        )
    return current, result


def measure_candidate(
    session: Session, candidate: Candidate, *, images_dir: str | os.PathLike | None = None
) -> BlobMeasurement:
    """Measure a candidate's blob in its image against the median stack of that image's run
    (rebuilt with `rebuild_difference`)."""
    run = session.get(Run, candidate.run_id) or latest_run(session, candidate.image_id)
    image = session.get(Image, candidate.image_id)
    if run is None or image is None:
        raise CatalogError(f"candidate {candidate.id} has no run or image")
    if not (run.parameters or {}).get("reference_paths"):
        raise CatalogError(f"run {run.id} recorded no reference images; cannot measure")
    current, result = rebuild_difference(image, run, images_dir=images_dir)
    return measure_in_stack(candidate, current.data, result.stack)


def _measured_radius(candidate: Candidate) -> float:
    """Radius (px) of the region around a candidate that a confirm measures."""
    return max(20.0, 2.0 * float(candidate.radius or 0.0))


def measure_in_stack(candidate: Candidate, current: np.ndarray, stack: np.ndarray) -> BlobMeasurement:
    """Measure a candidate's blob in ``1 - current / stack`` (arrays already at hand).

    Raises
    ------
    CatalogError
        No finite pixels near the candidate.
    """
    try:
        return measure_blob(
            loss_map(current, stack), candidate.x, candidate.y, max_radius=_measured_radius(candidate)
        )
    except ValueError as exc:
        raise CatalogError(f"candidate {candidate.id}: {exc}") from None


def same_blob(
    session: Session,
    candidate: Candidate,
    centre: tuple[float, float] | None = None,
    *,
    blobs: Sequence[Blob] | None = None,
) -> Blob | None:
    """The catalog blob that a candidate shows again, or None.

    That is the blob the candidate it is linked to was confirmed as, else the nearest blob whose
    radius plus `DUPLICATE_DISTANCE` holds the candidate's position or its measured ``centre``.
    ``blobs`` is the catalog if already read.
    """
    if candidate.linked_to is not None:
        root = session.scalar(select(Blob).where(Blob.candidate_id == candidate.linked_to))
        if root is not None:
            return root
    if blobs is None:
        blobs = list(session.scalars(select(Blob)))
    for x, y in [(candidate.x, candidate.y)] + ([centre] if centre is not None else []):
        found = known_blob_at(blobs, x, y, margin=DUPLICATE_DISTANCE)
        if found is not None:
            return found
    return None


def _duplicate_error(candidate: Candidate, blob: Blob) -> CatalogError:
    distance = float(np.hypot(blob.x - candidate.x, blob.y - candidate.y))
    return CatalogError(
        f"candidate {candidate.id} is catalog blob {blob.id} again ({distance:.1f} px from its centre"
        + (f", linked to candidate {candidate.linked_to}" if candidate.linked_to is not None else "")
        + f"): not added; record it as that blob seen again (catalog confirm --same-as {blob.id}, "
        f"or 'Confirm: same as blob #{blob.id}' in the review app)"
    )


def confirm_candidate(
    session: Session,
    candidate_id: int,
    *,
    reviewer: str,
    images_dir: str | os.PathLike | None = None,
    measurement: BlobMeasurement | None = None,
    same_as: int | None = None,
    commit: bool = True,
) -> Blob:
    """Confirm a candidate as a new blob: measure it and add it to the catalog.

    A candidate that shows a blob already in the catalog (`same_blob`) is refused, so the
    catalog never holds one blob twice; ``same_as=N`` records it as catalog blob N instead
    (status ``known``, no new blob).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
    candidate_id : int
    reviewer : str
        Who confirmed it (recorded in ``candidates.reviewed_by``).
    images_dir : path-like, optional
        Where to look for the image and its references if they are no longer at their
        recorded paths.
    measurement : BlobMeasurement, optional
        Use this instead of measuring (e.g. a measurement made earlier).
    same_as : int, optional
        The id of the catalog blob the candidate shows again (must be its `same_blob`).
    commit : bool
        Commit the session (default) or leave the transaction to the caller.

    Returns
    -------
    Blob
        The new catalog entry (``source='confirmed'``, ``candidate_id`` set), or blob ``same_as``.

    Raises
    ------
    CatalogError
        Unknown candidate, already confirmed, a known blob, a blob already in the catalog (or
        not blob ``same_as``), or its images cannot be measured.
    """
    if not reviewer or not reviewer.strip():
        raise CatalogError("a reviewer name is required")
    candidate = _get_candidate(session, candidate_id)
    if candidate.status == "confirmed":
        raise CatalogError(f"candidate {candidate.id} is already confirmed")
    if candidate.status == "known":
        raise CatalogError(
            f"candidate {candidate.id} lies on known blob {candidate.known_blob_id}; nothing to add"
        )
    if same_as is not None:
        return _write_with_retry(
            session, lambda: _record_same_blob(session, candidate_id, same_as, reviewer), commit=commit
        )
    duplicate = same_blob(session, candidate)
    if duplicate is not None:  # refused before measuring (which may re-read many images)
        raise _duplicate_error(candidate, duplicate)
    m = measurement or measure_candidate(session, candidate, images_dir=images_dir)

    def apply() -> Blob:
        cand = _get_candidate(session, candidate_id)
        if cand.status in ("confirmed", "known"):
            raise CatalogError(f"candidate {cand.id} changed to {cand.status} meanwhile")
        duplicate = same_blob(session, cand, (m.x, m.y))
        if duplicate is not None:
            raise _duplicate_error(cand, duplicate)
        image = session.get(Image, cand.image_id)
        blob = Blob(
            x=float(m.x),
            y=float(m.y),
            radius=float(m.radius),
            depth=float(m.depth),
            first_seen_mjd=image.mjd if image else None,
            first_seen=image.obs_date if image else None,
            source="confirmed",
            label=f"candidate-{cand.id}",
            candidate_id=cand.id,
        )
        session.add(blob)
        cand.status = "confirmed"
        cand.reason = None
        cand.reviewed_by = reviewer.strip()
        cand.reviewed_at = utcnow()
        session.flush()
        cand.known_blob_id = blob.id
        return blob

    blob = _write_with_retry(session, apply, commit=commit)
    log.info(
        "confirmed candidate %d as blob %d at x=%.1f y=%.1f r=%.1f depth=%.3f",
        candidate_id,
        blob.id,
        blob.x,
        blob.y,
        blob.radius,
        blob.depth,
    )
    return blob


def _record_same_blob(session: Session, candidate_id: int, blob_id: int, reviewer: str) -> Blob:
    """Record a candidate as catalog blob ``blob_id`` seen again (status ``known``).

    The blob must be its `same_blob`, or (when it has none) lie in the region a confirm would
    measure around it, where a measured centre may have met it.
    """
    cand = _get_candidate(session, candidate_id)
    if cand.status in ("confirmed", "known"):
        raise CatalogError(f"candidate {cand.id} changed to {cand.status} meanwhile")
    found = same_blob(session, cand)
    blob = session.get(Blob, blob_id)
    near = blob is not None and np.hypot(blob.x - cand.x, blob.y - cand.y) <= _measured_radius(cand)
    if blob is None or (found.id != blob.id if found is not None else not near):
        raise CatalogError(
            f"candidate {cand.id} is not at catalog blob {blob_id}"
            + (f" (it is at blob {found.id})" if found is not None else "")
        )
    cand.status = "known"
    cand.known_blob_id = blob.id
    cand.reason = f"same as blob {blob.id}"
    cand.reviewed_by = reviewer.strip()
    cand.reviewed_at = utcnow()
    log.info("recorded candidate %d as catalog blob %d", cand.id, blob.id)
    return blob


def _write_with_retry(session: Session, apply: Any, *, commit: bool, attempts: int = 4) -> Any:
    """Run ``apply()`` and commit; on an SQLite write conflict (another process committed since
    this session read) roll back and try again.  Without ``commit`` the caller owns the
    transaction, so there is no retry."""
    import time

    from sqlalchemy.exc import OperationalError

    from blobwatch.monitor.db import is_lock_conflict

    for attempt in range(attempts):
        try:
            result = apply()
            if commit:
                session.commit()
            else:
                session.flush()
            return result
        except OperationalError as exc:
            if not commit or not is_lock_conflict(exc) or attempt == attempts - 1:
                raise
            session.rollback()
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def reject_candidate(
    session: Session,
    candidate_id: int,
    *,
    reason: str,
    reviewer: str,
    commit: bool = True,
) -> Candidate:
    """Record a candidate as a false alarm with a reason (a label for retraining).

    A candidate confirmed earlier is withdrawn: its catalog blob is deleted.

    Raises
    ------
    CatalogError
        Unknown candidate, or an empty reason or reviewer.
    """
    if not reason or not reason.strip():
        raise CatalogError("a reason is required to reject a candidate")
    if not reviewer or not reviewer.strip():
        raise CatalogError("a reviewer name is required")
    _get_candidate(session, candidate_id)

    def apply() -> Candidate:
        candidate = _get_candidate(session, candidate_id)
        if candidate.status == "confirmed":
            for blob in session.scalars(select(Blob).where(Blob.candidate_id == candidate.id)):
                session.delete(blob)
            candidate.known_blob_id = None
        candidate.status = "rejected"
        candidate.reason = reason.strip()
        candidate.reviewed_by = reviewer.strip()
        candidate.reviewed_at = utcnow()
        return candidate

    candidate = _write_with_retry(session, apply, commit=commit)
    log.info("rejected candidate %d: %s", candidate.id, candidate.reason)
    return candidate
