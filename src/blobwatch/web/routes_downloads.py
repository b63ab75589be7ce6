"""The review app's downloads (files to save, in the OpenAPI schema): the blob catalog as ECSV, a
DS9 region file and a FITS mask, an image's regions, and an image's arrays or a candidate's
cut-out as FITS with provenance. The bytes are made by `blobwatch.web.downloads` and
`blobwatch.interchange`."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from sqlalchemy.orm import Session

from blobwatch.web import render
from blobwatch.web.state import (
    CUTOUT_HALF,
    KIND_TITLES,
    AppState,
    ImageKind,
    candidate_or_404,
    db,
    get_state,
    image_or_404,
)

router = APIRouter()

#: OpenAPI descriptions of the download routes' responses.
_TEXT_FILE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/plain": {}}}}
_FITS_FILE: dict[int | str, dict[str, Any]] = {200: {"content": {"application/fits": {}}}}


def _download(data: bytes, filename: str, media_type: str = "text/plain; charset=utf-8") -> Response:
    """A file to save (``Content-Disposition: attachment``) under ``filename`` (made from ids)."""
    return Response(
        data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@router.get(
    "/catalog.ecsv",
    tags=["catalog"],
    summary="Download the blob catalog (ECSV)",
    response_class=Response,
    responses=_TEXT_FILE,
)
def catalog_ecsv(session: Session = Depends(db)) -> Response:
    from blobwatch.web.downloads import catalog_ecsv_bytes

    return _download(catalog_ecsv_bytes(session), "blob_catalog.ecsv")


@router.get(
    "/catalog/mask.fits",
    tags=["catalog"],
    summary="Download the blob mask (FITS, DQ=512 inside each known blob)",
    response_class=Response,
    responses=_FITS_FILE,
)
def catalog_mask(frame: Literal["1014", "1024"] = "1014", session: Session = Depends(db)) -> Response:
    """``frame=1014``: the detector's science area; ``1024``: the full blob image."""
    from blobwatch.web.downloads import catalog_mask_bytes

    return _download(catalog_mask_bytes(session, frame), f"blob_mask{frame}.fits", "application/fits")


@router.get(
    "/catalog.reg",
    tags=["catalog"],
    summary="Download the blob catalog as a DS9 region file",
    response_class=Response,
    responses=_TEXT_FILE,
)
def catalog_reg(session: Session = Depends(db)) -> Response:
    from blobwatch.web.downloads import catalog_regions_bytes

    return _download(catalog_regions_bytes(session), "blob_catalog.reg")


@router.get(
    "/images/{image_id}/candidates.reg",
    tags=["images"],
    summary="Download an image's candidates and the catalog's blobs as a DS9 region file",
    response_class=Response,
    responses={**_TEXT_FILE, 404: {"description": "unknown id"}},
)
def image_reg(image_id: int, session: Session = Depends(db)) -> Response:
    from blobwatch.web.downloads import image_regions_bytes

    view = image_or_404(session, image_id)
    return _download(image_regions_bytes(session, view), f"image{image_id}_candidates.reg")


@router.get(
    "/images/{image_id}/{kind}.fits",
    tags=["images"],
    summary="Download an image's current image, median stack or difference (FITS, "
    "pixel header with provenance)",
    response_class=Response,
    responses={**_FITS_FILE, 404: {"description": "unknown id or not processed"}},
)
def image_fits(
    image_id: int,
    kind: ImageKind,
    state: AppState = Depends(get_state),
    session: Session = Depends(db),
) -> Response:
    from blobwatch.interchange import pixel_fits_bytes
    from blobwatch.web.downloads import image_provenance

    image_or_404(session, image_id)
    arrays = state.pixels.arrays(session, image_id)
    if kind not in arrays:
        raise HTTPException(404, f"image {image_id} has not been processed: no {kind}")
    data = pixel_fits_bytes(
        arrays[kind], content=KIND_TITLES[kind], provenance=image_provenance(session, image_id)
    )
    return _download(data, f"image{image_id}_{kind}.fits", "application/fits")


@router.get(
    "/candidates/{candidate_id}/{kind}.fits",
    tags=["candidates"],
    summary=f"Download a {2 * CUTOUT_HALF + 1}x{2 * CUTOUT_HALF + 1} px cut-out around a "
    "candidate (FITS; LTV1/LTV2 place it in the blob image)",
    response_class=Response,
    responses={**_FITS_FILE, 404: {"description": "unknown id or not processed"}},
)
def cutout_fits(
    candidate_id: int,
    kind: ImageKind,
    state: AppState = Depends(get_state),
    session: Session = Depends(db),
) -> Response:
    from blobwatch.interchange import pixel_fits_bytes
    from blobwatch.web.downloads import image_provenance

    cand = candidate_or_404(session, candidate_id)
    arrays = state.pixels.arrays(session, cand.image_id)
    if kind not in arrays:
        raise HTTPException(404, f"candidate {candidate_id}: no {kind} for its image")
    x0, y0 = int(round(cand.x)) - CUTOUT_HALF, int(round(cand.y)) - CUTOUT_HALF
    provenance = {
        **image_provenance(session, cand.image_id),
        "CANDID": (cand.id, "blobwatch candidate id"),
        "CANDX": (cand.x, "candidate x (0-based blob-image column)"),
        "CANDY": (cand.y, "candidate y (0-based blob-image row)"),
    }
    data = pixel_fits_bytes(
        render.cutout(arrays[kind], cand.x, cand.y, CUTOUT_HALF),
        content=f"{KIND_TITLES[kind]} cut-out",
        provenance=provenance,
        origin=(x0, y0),
    )
    return _download(data, f"candidate{candidate_id}_{kind}.fits", "application/fits")
