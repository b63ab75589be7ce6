"""DS9 and FITS interchange: region files of blobs and candidates, pixel arrays as FITS.

Region files are written with the astropy ``regions`` package in DS9 format, frame ``image``:
the file holds DS9's 1-based positions (x + 1, y + 1) of blobwatch's 0-based pixels, so it
overlays any blob image, difference or median stack opened in DS9.

FITS downloads carry no WCS (blob images are flat-field ratios in detector pixels); a cut-out
records where it lies in the blob image with IRAF's ``LTV1``/``LTV2`` (DS9's *physical*
coordinates are then blob-image coordinates) and with ``XORIGIN``/``YORIGIN`` (0-based).
Every file says where its pixels came from (``provenance`` cards).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch import __version__
from blobwatch.names import header_name, one_line

__all__ = [
    "BLOB_COLOR",
    "CANDIDATE_COLORS",
    "RegionCircle",
    "blob_circles",
    "candidate_circles",
    "catalog_regions_text",
    "pixel_fits_bytes",
    "regions_text",
    "write_regions",
]

#: DS9 colour of catalog blobs (the reports draw them green too).
BLOB_COLOR = "green"
#: DS9 colour of a candidate by review status (open ones red, as in the reports).
CANDIDATE_COLORS = {
    "new": "red",
    "confirmed": "cyan",
    "rejected": "orange",
    "linked": "orange",
    "known": "green",
}


@dataclass(frozen=True)
class RegionCircle:
    """One circle of a region file, in 0-based blob-image pixels.

    Parameters
    ----------
    x, y : float
        Centre (x = column, y = row, 0-based).
    radius : float
        Radius in pixels.
    text : str
        Label shown by DS9.
    color : str
        DS9 colour name.
    tag : str
        DS9 tag (``blob`` or ``candidate``), for selecting a group in DS9.
    """

    x: float
    y: float
    radius: float
    text: str
    color: str
    tag: str


def blob_circles(blobs: Sequence[Any]) -> list[RegionCircle]:
    """Green circles of catalog blobs (objects with ``id``, ``x``, ``y``, ``radius``)."""
    return [RegionCircle(b.x, b.y, b.radius, f"blob {b.id}", BLOB_COLOR, "blob") for b in blobs]


def catalog_regions_text(blobs: Sequence[Any]) -> str:
    """The blob catalog as a DS9 region file (`blob_circles`)."""
    return regions_text(blob_circles(blobs), title=f"blob catalog ({len(blobs)} blobs)")


def candidate_circles(candidates: Sequence[Any]) -> list[RegionCircle]:
    """Circles of candidates (``id``, ``x``, ``y``, ``radius``, ``status``, ``probability``),
    coloured by status (`CANDIDATE_COLORS`); radius 8 px where none was measured."""
    return [
        RegionCircle(
            c.x,
            c.y,
            c.radius or 8.0,
            f"candidate {c.id} {c.status} P={c.probability:.2f}",
            CANDIDATE_COLORS.get(c.status, "red"),
            "candidate",
        )
        for c in candidates
    ]


def regions_text(circles: Sequence[RegionCircle], *, title: str) -> str:
    """The circles as a DS9 region file (``regions`` serialisation), ``title`` as a comment.

    An empty list gives a valid file with no shapes.
    """
    from regions import CirclePixelRegion, PixCoord, RegionMeta, Regions, RegionVisual

    shapes = [
        CirclePixelRegion(
            PixCoord(float(c.x), float(c.y)),
            float(c.radius),
            meta=RegionMeta({"text": _region_text(c.text), "tag": [c.tag]}),
            visual=RegionVisual({"color": c.color}),
        )
        for c in circles
    ]
    head = (
        f"# {one_line(title)}\n# blobwatch {__version__}; image frame = 1-based DS9 pixels "
        "(blobwatch's 0-based x, y plus 1)\n"
    )
    body = Regions(shapes).serialize(format="ds9") if shapes else "image\n"
    return head + body


def _region_text(text: str) -> str:
    """A label DS9 can read: one line, no braces (they delimit the text)."""
    return one_line(text).replace("{", "(").replace("}", ")")


def write_regions(path: str | os.PathLike, circles: Sequence[RegionCircle], *, title: str) -> Path:
    """Write `regions_text` to ``path`` atomically; return the path."""
    from blobwatch.atomic import write_text_atomic

    write_text_atomic(path, regions_text(circles, title=title))
    return Path(path)


def pixel_fits_bytes(
    data: np.ndarray,
    *,
    content: str,
    provenance: Mapping[str, tuple[Any, str]],
    origin: tuple[int, int] = (0, 0),
) -> bytes:
    """A float32 image as a FITS file with a pixel-only header and its provenance.

    Parameters
    ----------
    data : numpy.ndarray
        2-D pixels, 0-based (row, column); NaN where there are none (outside the image).
    content : str
        What the pixels are (``difference``, ``median stack``, ``current image``, ...): ``CONTENT``.
    provenance : mapping
        Header cards ``KEYWORD -> (value, comment)``, e.g. the source image's name and SHA-256,
        the run and its references.  String values are made printable ASCII (`header_name`).
    origin : (int, int)
        0-based (x, y) of ``data[0, 0]`` in the blob image (a cut-out's corner).
    """
    from astropy.io import fits

    from blobwatch.monitor.db import utcnow

    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float32))
    header = hdu.header
    header["ORIGIN"] = ("blobwatch", "software that wrote this file")
    header["BWVERS"] = (__version__, "blobwatch version")
    header["DATE"] = (utcnow().strftime("%Y-%m-%dT%H:%M:%S"), "UTC time written")
    header["CONTENT"] = (content, "what the pixels are")
    x0, y0 = int(origin[0]), int(origin[1])
    header["XORIGIN"] = (x0, "0-based blob-image x of this pixel (1,1)")
    header["YORIGIN"] = (y0, "0-based blob-image y of this pixel (1,1)")
    header["LTV1"] = (-float(x0), "physical x = x - LTV1: blob-image DS9 x")
    header["LTV2"] = (-float(y0), "physical y = y - LTV2: blob-image DS9 y")
    header["LTM1_1"] = (1.0, "no binning")
    header["LTM2_2"] = (1.0, "no binning")
    for key, (value, comment) in provenance.items():
        if value is None:
            continue
        header[key] = (header_name(value) if isinstance(value, str) else value, comment)
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()
