"""Downloads: the catalog (ECSV, DQ mask, DS9 regions), an image's candidates as DS9 regions,
and the provenance cards of pixel FITS files (`blobwatch.interchange`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from blobwatch.monitor.db import Image, latest_run
from blobwatch.web import queries


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


def image_provenance(session: Session, image_id: int) -> dict[str, tuple[Any, str]]:
    """FITS cards saying which image, run and references pixels of image ``image_id`` come from."""
    image = session.get(Image, image_id)
    if image is None:
        return {}
    run = latest_run(session, image_id)
    params = (run.parameters or {}) if run is not None else {}
    refs = params.get("reference_paths") or []
    return {
        "SRCNAME": (Path(image.path).name, "blob image the pixels come from"),
        "SRCSHA": (image.sha256, ""),  # 64 hex digits leave no room for a comment
        "SRCMJD": (image.mjd, "its observation MJD"),
        "IMAGEID": (image.id, "blobwatch database image id"),
        "RUNID": (run.id if run is not None else None, "blobwatch run that processed it"),
        "NREFS": (len(refs) if run is not None else None, "reference images in the median stack"),
        "REGISTER": (
            bool(params.get("register", True)) if run is not None else None,
            "references registered (sub-pixel)",
        ),
        "REFFIRST": (Path(refs[0]).name if refs else None, "oldest reference"),
        "REFLAST": (Path(refs[-1]).name if refs else None, "newest reference"),
    }


def catalog_regions_bytes(session: Session) -> bytes:
    """The catalog as a DS9 region file (green circles, one per blob)."""
    from blobwatch.interchange import catalog_regions_text

    return catalog_regions_text(queries.list_blobs(session)).encode()


def image_regions_bytes(session: Session, view: queries.ImageView) -> bytes:
    """An image's candidates (coloured by status) and the catalog blobs as a DS9 region file."""
    from blobwatch.interchange import blob_circles, candidate_circles, regions_text

    circles = candidate_circles(view.candidates) + blob_circles(queries.list_blobs(session))
    return regions_text(circles, title=f"candidates of {view.name} and the catalog's blobs").encode()
