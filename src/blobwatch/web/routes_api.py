"""The review app's JSON API under ``/api``: images with their runs, subframe probabilities and
candidates, candidates by status, and the blob catalog, as the view objects of
`blobwatch.web.queries` (described by the OpenAPI schema at ``/api/openapi.json``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy.orm import Session

from blobwatch.web import queries
from blobwatch.web.state import candidate_or_404, db, image_or_404

router = APIRouter(prefix="/api")


@router.get(
    "/images",
    tags=["images"],
    summary="Every image, newest first",
    response_model=list[queries.ImageView],
)
def api_images(session: Session = Depends(db)) -> list[queries.ImageView]:
    return queries.list_images(session)


@router.get(
    "/images/{image_id}",
    tags=["images"],
    summary="One image with its newest run, 16 subframe probabilities and candidates",
    response_model=queries.ImageView,
    responses={404: {"description": "unknown id"}},
)
def api_image(image_id: int, session: Session = Depends(db)) -> queries.ImageView:
    return image_or_404(session, image_id)


@router.get(
    "/candidates",
    tags=["candidates"],
    summary="Candidates, newest image first (status: new = awaiting review, confirmed, "
    "rejected, known, linked)",
    response_model=list[queries.CandidateView],
)
def api_candidates(
    status: Literal["new", "confirmed", "rejected", "known", "linked"] | None = None,
    image_id: int | None = None,
    session: Session = Depends(db),
) -> list[queries.CandidateView]:
    return queries.list_candidates(session, status=status, image_id=image_id)


@router.get(
    "/candidates/{candidate_id}",
    tags=["candidates"],
    summary="One candidate",
    response_model=queries.CandidateView,
    responses={404: {"description": "unknown id"}},
)
def api_candidate(candidate_id: int, session: Session = Depends(db)) -> queries.CandidateView:
    return candidate_or_404(session, candidate_id)


@router.get(
    "/catalog",
    tags=["catalog"],
    summary="The blob catalog, oldest first",
    response_model=list[queries.BlobView],
)
def api_catalog(session: Session = Depends(db)) -> list[queries.BlobView]:
    return queries.list_blobs(session)


@router.get(
    "/catalog/{blob_id}",
    tags=["catalog"],
    summary="One catalog blob",
    response_model=queries.BlobView,
    responses={404: {"description": "unknown id"}},
)
def api_blob(blob_id: int, session: Session = Depends(db)) -> queries.BlobView:
    blob = queries.get_blob(session, blob_id)
    if blob is None:
        raise HTTPException(404, f"no blob with id {blob_id}")
    return blob
