"""FITS ingest: turn a CSM-monitor file into a blob image, and write FITS outputs atomically.

Three kinds of input become a `BlobImage` (a 2-D float32 array normalized to about 1, NaN where
unusable, with its observation time and provenance); each may be gzip-compressed (``.fits.gz``):

``blob``
    A Quicklook ``blob.fits`` image: a 2-D image in the primary HDU or the first image extension.
``cube``
    A Quicklook difference or median-stack file of shape (3, 1024, 1024): the first plane is used.
``flt``
    A WFC3/IR flt-style file (SCI/ERR/DQ extensions, 1014x1014 science area): SCI is divided by
    its sigma-clipped median, pixels with DQ flags are set to NaN, and the image is padded to
    1024x1024 with a 5-pixel non-finite border like a Quicklook blob image.

A blob image must also pass the data-quality gates of `blobwatch.quality`.  Only regular files
of at most `MAX_FILE_BYTES` are read.  Every problem with a file raises
`blobwatch.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import stat
import threading
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.time import Time
from erfa import ErfaWarning

from blobwatch.atomic import atomic_path
from blobwatch.errors import InputError
from blobwatch.quality import CUBE_PLANES, quality_problem

__all__ = [
    "AUXILIARY_EXTNAMES",
    "EXPECTED_FILTER",
    "FLT_BORDER",
    "MAX_FILE_BYTES",
    "MIN_SIZE",
    "BlobImage",
    "FilterWarning",
    "file_sha256",
    "format_shape",
    "read_blob_image",
    "read_blob_images",
    "regular_file_size",
    "write_fits",
]

log = logging.getLogger(__name__)

#: The CSM monitor observes dark-Earth airglow in F153M.
EXPECTED_FILTER = "F153M"
#: Smallest accepted image side: one classifier subframe.
MIN_SIZE = 256
#: Extensions of a WFC3 flt file that are never the image (without SCI the file is refused).
AUXILIARY_EXTNAMES = frozenset({"ERR", "DQ", "SAMP", "TIME"})
#: Width of the non-finite reference-pixel border added around a 1014x1014 flt science array.
FLT_BORDER = 5

#: Largest file read, and largest decompressed ``.fits.gz`` content (bytes): a 1024x1024 flt
#: file is about 20 MiB, so this only stops a runaway read.
MAX_FILE_BYTES = 1 << 30

_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)
_PARSE_LOCK = threading.Lock()
_BLOCK = 2880


class FilterWarning(UserWarning):
    """The file was taken in a filter other than F153M (the CSM monitor's filter)."""


@dataclass(frozen=True)
class BlobImage:
    """One blob image ready for differencing.

    Attributes
    ----------
    data : numpy.ndarray
        2-D float32 array (row, col), normalized background of about 1, NaN where unusable.
    mjd : float
        Observation start time (MJD, UTC).
    path : str or None
        The file it came from (None for in-memory images).
    filter : str or None
        The FILTER keyword, if present.
    provenance : dict
        ``kind`` ('blob', 'cube' or 'flt'), ``sha256`` of the file, ``hdu`` used, original
        ``shape`` and, for flt files, ``sci_median`` and ``n_dq_flagged``.
    """

    data: np.ndarray
    mjd: float
    path: str | None = None
    filter: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (rows, cols)."""
        return tuple(self.data.shape)

    @property
    def name(self) -> str:
        """Short name for messages and headers: the file name, or ``<memory>``."""
        return os.path.basename(self.path) if self.path else "<memory>"


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_fits(
    path: str | os.PathLike,
    data: np.ndarray,
    header: fits.Header | None = None,
    *,
    extensions: list[fits.ImageHDU] | None = None,
) -> Path:
    """Write ``data`` as the primary HDU of a FITS file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; replaced only when the write succeeds.
    data : numpy.ndarray
        Image written as float32.
    header : astropy.io.fits.Header, optional
        Keywords for the primary header.
    extensions : list of astropy.io.fits.ImageHDU, optional
        Extra HDUs appended after the primary.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    hdus = fits.HDUList([fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header)])
    for ext in extensions or []:
        hdus.append(ext)
    with atomic_path(path) as tmp:
        hdus.writeto(tmp, overwrite=True, output_verify="silentfix")
    return Path(path)


def _image_hdu_index(hdul: fits.HDUList) -> int | None:
    """Index of the primary HDU if it holds an image of >= 2 dimensions, else the first such
    extension that is not an flt auxiliary array (`AUXILIARY_EXTNAMES`: errors and flags are not data)."""
    for index, hdu in enumerate(hdul):
        if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            continue
        if str(hdu.header.get("EXTNAME", "")).strip().upper() in AUXILIARY_EXTNAMES:
            continue
        naxis = hdu.header.get("NAXIS", 0)
        if isinstance(hdu, fits.CompImageHDU):
            naxis = hdu.header.get("ZNAXIS", naxis)
        if naxis >= 2:
            return index
    return None


def _find_ext(hdul: fits.HDUList, extname: str) -> int | None:
    """Index of the first HDU with EXTNAME ``extname`` (case-insensitive) or None."""
    for index, hdu in enumerate(hdul):
        if str(hdu.header.get("EXTNAME", "")).strip().upper() == extname:
            return index
    return None


def _calendar_mjd(mjd: float, source: str, path: str) -> float:
    """``mjd`` if it is a calendar date a ``datetime`` can hold (years 1-9999), else `InputError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ErfaWarning)  # "dubious year" before 1960 or far ahead
            Time(mjd, format="mjd", scale="utc").to_datetime()
    except ValueError:  # ErfaError is a ValueError
        raise InputError(path, f"{source} (MJD {mjd:g}) is not a date between years 1 and 9999") from None
    return mjd


def _observation_mjd(headers: list[fits.Header], path: str) -> float:
    """MJD from EXPSTART, or from DATE-OBS (+ TIME-OBS), searching ``headers`` in order."""
    for header in headers:
        value = header.get("EXPSTART")
        if value is not None and not isinstance(value, bool):
            try:
                mjd = float(value)
            except (TypeError, ValueError):
                raise InputError(path, f"EXPSTART {value!r} is not an MJD") from None
            if not np.isfinite(mjd):
                raise InputError(path, f"EXPSTART {value!r} is not an MJD")
            return _calendar_mjd(mjd, "EXPSTART", path)
    for header in headers:
        date = header.get("DATE-OBS")
        if not date:
            continue
        date = str(date).strip()
        time_obs = header.get("TIME-OBS")
        stamp = date if ("T" in date or not time_obs) else f"{date}T{str(time_obs).strip()}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ErfaWarning)  # "dubious year": judged below
            try:
                mjd = float(Time(stamp, format="isot" if "T" in stamp else "iso", scale="utc").mjd)
            except ValueError:
                try:
                    mjd = float(Time(stamp, scale="utc").mjd)
                except ValueError:
                    raise InputError(path, f"cannot parse DATE-OBS/TIME-OBS {stamp!r}") from None
        return _calendar_mjd(mjd, "DATE-OBS", path)
    raise InputError(path, "no observation time (EXPSTART or DATE-OBS/TIME-OBS)")


def _flt_to_blob(
    hdul: fits.HDUList, sci_index: int, path: str, dq_bits: int | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalize an flt SCI array by its sigma-clipped median, NaN DQ-flagged pixels, pad the border."""
    sci = np.asarray(hdul[sci_index].data, dtype=np.float32)
    if sci.ndim != 2:
        raise InputError(path, f"SCI extension is {sci.ndim}-D, not a 2-D image")
    sci = np.array(sci, dtype=np.float32, copy=True)
    n_flagged = 0
    dq_index = _find_ext(hdul, "DQ")
    if dq_index is not None and hdul[dq_index].data is not None:
        dq = np.asarray(hdul[dq_index].data)
        if dq.shape != sci.shape:
            raise InputError(
                path, f"DQ shape {format_shape(dq.shape)} does not match SCI {format_shape(sci.shape)}"
            )
        flagged = (dq.astype(np.int64) & (dq_bits if dq_bits is not None else ~0)) != 0
        n_flagged = int(flagged.sum())
        sci[flagged] = np.nan
    finite = np.isfinite(sci)
    if not finite.any():
        raise InputError(path, "all pixels are non-finite")
    _, median, _ = sigma_clipped_stats(sci[finite], sigma=3.0, maxiters=5)
    if not np.isfinite(median) or median <= 0:
        raise InputError(path, f"SCI sigma-clipped median is {median:g}; cannot normalize")
    sci /= np.float32(median)
    padded = np.full((sci.shape[0] + 2 * FLT_BORDER, sci.shape[1] + 2 * FLT_BORDER), np.nan, dtype=np.float32)
    padded[FLT_BORDER:-FLT_BORDER, FLT_BORDER:-FLT_BORDER] = sci
    return padded, {"sci_median": float(median), "n_dq_flagged": n_flagged}


def regular_file_size(path: str | os.PathLike) -> int:
    """The size of ``path`` if it is a regular file (after symlinks) of at most `MAX_FILE_BYTES`.

    Only ``stat`` is used, so a FIFO cannot block and ``/dev/zero`` is never read.

    Raises
    ------
    blobwatch.errors.InputError
        Missing, a directory, not a regular file (FIFO, device, socket) or too large.
    """
    spath = os.fspath(path)
    try:
        info = os.stat(spath)
    except FileNotFoundError:
        raise InputError(spath, "file not found") from None
    except OSError as exc:
        raise InputError(spath, f"cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(spath, "is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(info.st_mode)), "special file")
        raise InputError(spath, f"not a regular file (a {kind})")
    if info.st_size > MAX_FILE_BYTES:
        raise InputError(spath, f"file is {info.st_size} bytes, larger than {MAX_FILE_BYTES >> 20} MiB")
    return info.st_size


def _gunzip(raw: bytes, path: str) -> bytes:
    """The content of a gzip file (``.fits.gz``), at most `MAX_FILE_BYTES`."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            content = fh.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"corrupt gzip file ({exc or type(exc).__name__})") from None
    if len(content) > MAX_FILE_BYTES:
        raise InputError(path, f"gzip content is larger than {MAX_FILE_BYTES >> 20} MiB")
    return content


def _problem(exc: Exception) -> str:
    """Name the problem behind an astropy/numpy read error."""
    text = str(exc).lower()
    if any(word in text for word in ("truncat", "end of file", "too small", "not enough", "eof")):
        return "truncated FITS file"
    return "corrupt FITS file"


def format_shape(shape: tuple[int, ...]) -> str:
    """``(1024, 1024)`` as ``1024x1024`` (for messages)."""
    return "x".join(str(int(s)) for s in shape)


def read_blob_image(
    path: str | os.PathLike,
    *,
    expected_shape: tuple[int, int] | None = None,
    dq_bits: int | None = None,
    require_time: bool = True,
    check_quality: bool = True,
) -> BlobImage:
    """Read a blob image, a Quicklook cube or an flt-style file as a `BlobImage`.

    Parameters
    ----------
    path : str or os.PathLike
        The FITS file.
    expected_shape : (int, int), optional
        Shape the image must have (that of the references); a mismatch is an `InputError`.
    dq_bits : int, optional
        For flt files: DQ bits that make a pixel unusable (default: any non-zero DQ value).
    require_time : bool
        If False (for difference images), a file without a usable observation time is read
        with ``mjd = nan`` instead of being rejected.
    check_quality : bool
        Apply the blob-image data-quality gates of `blobwatch.quality` (finite fraction, level,
        noise, WFC3/IR date); False for difference images.

    Returns
    -------
    BlobImage

    Raises
    ------
    blobwatch.errors.InputError
        Not FITS, truncated, no 2-D image, a cube without 3 planes, smaller than 256x256, all
        non-finite, wrong shape, no observation time, fails a quality gate.  A filter other than
        F153M only warns (`FilterWarning`).
    """
    image, notes = _read(
        path,
        expected_shape=expected_shape,
        dq_bits=dq_bits,
        require_time=require_time,
        check_quality=check_quality,
    )
    for note in notes:
        warnings.warn(note, FilterWarning, stacklevel=2)
    return image


def _read(
    path: str | os.PathLike,
    *,
    expected_shape: tuple[int, int] | None = None,
    dq_bits: int | None = None,
    require_time: bool = True,
    check_quality: bool = True,
) -> tuple[BlobImage, list[str]]:
    """`read_blob_image` without warnings: returns the image and the warning texts (thread-safe)."""
    spath = os.fspath(path)
    regular_file_size(spath)
    try:
        with open(spath, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # bounded even if the file grew since the check
    except OSError as exc:
        raise InputError(spath, f"cannot read file ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InputError(spath, f"file is larger than {MAX_FILE_BYTES >> 20} MiB")
    sha256 = hashlib.sha256(raw).hexdigest()  # of the file as stored (compressed or not)
    if raw.startswith(_GZIP_MAGIC):
        raw = _gunzip(raw, spath)
    if not raw.startswith(_FITS_MAGIC):
        raise InputError(spath, "not a FITS file")
    if len(raw) % _BLOCK:
        raise InputError(spath, f"truncated FITS file ({len(raw)} bytes, not a multiple of 2880)")

    try:
        return _parse(
            raw,
            spath,
            sha256,
            expected_shape=expected_shape,
            dq_bits=dq_bits,
            require_time=require_time,
            check_quality=check_quality,
        )
    except InputError:
        raise
    except Exception as exc:  # astropy raises TypeError, KeyError, VerifyError, ... for a corrupt header
        raise InputError(spath, f"{_problem(exc)} ({type(exc).__name__}: {exc})") from None


def _parse(
    raw: bytes,
    spath: str,
    sha256: str,
    *,
    expected_shape: tuple[int, int] | None,
    dq_bits: int | None,
    require_time: bool,
    check_quality: bool,
) -> tuple[BlobImage, list[str]]:
    """The `BlobImage` in the bytes of a FITS file (the second half of `_read`)."""
    try:
        with _PARSE_LOCK, warnings.catch_warnings():
            # astropy warns (process-wide state, hence the lock) about truncation: checked below.
            warnings.simplefilter("ignore")
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, fits.verify.VerifyError) as exc:
        raise InputError(spath, f"{_problem(exc)} ({exc})") from None
    if not isinstance(hdul[0], fits.PrimaryHDU):
        hdul.close()
        raise InputError(spath, "not a standard FITS file (SIMPLE is not T)")
    needed = max(
        (info["datLoc"] + info["datSpan"] for info in (hdu.fileinfo() for hdu in hdul) if info),
        default=0,
    )
    if needed > len(raw):
        hdul.close()
        raise InputError(spath, f"truncated FITS file ({len(raw)} bytes, the headers need {needed})")

    with hdul:
        sci_index = _find_ext(hdul, "SCI")
        provenance: dict[str, Any] = {"sha256": sha256}
        try:
            if sci_index is not None:
                data, extra = _flt_to_blob(hdul, sci_index, spath, dq_bits)
                provenance.update(kind="flt", hdu=sci_index, **extra)
                image_header = hdul[sci_index].header
                provenance["shape"] = list(hdul[sci_index].data.shape)
            else:
                index = _image_hdu_index(hdul)
                if index is None and any(_find_ext(hdul, name) is not None for name in AUXILIARY_EXTNAMES):
                    raise InputError(spath, "no SCI extension (ERR, DQ, SAMP and TIME are not image data)")
                if index is None:
                    raise InputError(spath, "no 2-D image in any HDU")
                image_header = hdul[index].header
                array = hdul[index].data
                if array is None:
                    raise InputError(spath, "no 2-D image in any HDU")
                provenance["shape"] = list(array.shape)
                if array.ndim == 2:
                    provenance.update(kind="blob", hdu=index)
                elif array.ndim == 3:
                    if array.shape[0] != CUBE_PLANES:
                        raise InputError(spath, f"cube has {array.shape[0]} planes, not {CUBE_PLANES}")
                    array = array[0]
                    provenance.update(kind="cube", hdu=index, plane=0)
                else:
                    raise InputError(spath, f"no 2-D image ({array.ndim}-D data in HDU {index})")
                data = np.asarray(array, dtype=np.float32)
                if not data.flags.writeable or not data.flags.c_contiguous:
                    data = np.array(data, dtype=np.float32, order="C")
        except InputError:
            raise
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(spath, f"{_problem(exc)} ({exc})") from None
        headers = [image_header, hdul[0].header] if image_header is not hdul[0].header else [image_header]
        extname = image_header.get("EXTNAME")
        if extname:
            provenance["extname"] = str(extname)

        rows, cols = data.shape
        if rows < MIN_SIZE or cols < MIN_SIZE:
            raise InputError(spath, f"image is {rows}x{cols}, smaller than {MIN_SIZE}x{MIN_SIZE}")
        if expected_shape is not None and tuple(data.shape) != tuple(expected_shape):
            raise InputError(
                spath, f"shape {rows}x{cols} does not match the references ({format_shape(expected_shape)})"
            )
        if not np.isfinite(data).any():
            raise InputError(spath, "all pixels are non-finite")

        try:
            mjd = _observation_mjd(headers, spath)
        except InputError:
            if require_time:
                raise
            mjd = float("nan")
        problem = quality_problem(data, mjd) if check_quality else None
        if problem is not None:
            raise InputError(spath, problem)
        filt = None
        for header in headers:
            if header.get("FILTER") is not None:
                filt = str(header["FILTER"]).strip()
                break
        notes = []
        if filt is not None and filt.upper() != EXPECTED_FILTER:
            notes.append(f"{spath}: filter {filt} is not {EXPECTED_FILTER} (the CSM monitor's filter)")
    return BlobImage(data=data, mjd=mjd, path=spath, filter=filt, provenance=provenance), notes


def read_blob_images(
    paths: Sequence[str | os.PathLike],
    *,
    expected_shape: tuple[int, int] | None = None,
    workers: int | None = None,
) -> list[BlobImage]:
    """Read several blob images with `read_blob_image`, in parallel threads, in order.

    File reading and SHA-256 hashing release the GIL, so a few threads overlap them.  The first
    bad file (in the given order) raises its `InputError`; warnings are re-issued in order.

    Parameters
    ----------
    paths : sequence of path-like
        Files to read.
    expected_shape : (int, int), optional
        Shape every image must have.
    workers : int, optional
        Threads (default: number of CPUs, at most 8).
    """
    workers = max(1, workers or min(os.cpu_count() or 1, 8))

    def one(path: str | os.PathLike) -> tuple[BlobImage | None, InputError | None, list[str]]:
        try:
            image, notes = _read(path, expected_shape=expected_shape)
            return image, None, notes
        except InputError as exc:
            return None, exc, []

    if workers == 1 or len(paths) < 2:
        results = [one(path) for path in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, paths))
    images: list[BlobImage] = []
    for image, error, notes in results:
        for note in notes:
            warnings.warn(note, FilterWarning, stacklevel=2)
        if error is not None:
            raise error
        assert image is not None  # one() returns an image or an error
        images.append(image)
    return images
