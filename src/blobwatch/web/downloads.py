"""Catalog downloads: the ECSV table and the DQ mask, made by the monitor's catalog export."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from sqlalchemy.orm import Session


def _export(session: Session) -> dict[str, bytes]:
    from blobwatch.monitor.catalog import export_catalog

    with tempfile.TemporaryDirectory(prefix="blobwatch-web-") as tmp:
        ecsv, mask1024, mask1014 = export_catalog(session, Path(tmp) / "blob_catalog.ecsv")
        return {"ecsv": ecsv.read_bytes(), "1024": mask1024.read_bytes(), "1014": mask1014.read_bytes()}


def catalog_ecsv_bytes(session: Session) -> bytes:
    """The catalog as ECSV (`blobwatch.monitor.catalog.export_catalog`)."""
    return _export(session)["ecsv"]


def catalog_mask_bytes(session: Session, frame: Literal["1014", "1024"] = "1014") -> bytes:
    """The blob mask as FITS: a ``DQ`` extension with 512 inside every known blob.

    ``frame="1014"`` is the science area of the detector, ``"1024"`` the full blob image.
    """
    return _export(session)[frame]
