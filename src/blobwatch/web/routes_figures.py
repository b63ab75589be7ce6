"""The review app's figures and pixels, found through database ids only: an image's current image,
median stack and difference (PNG, and float32 pixels with the pixel viewer's Bokeh figure),
candidate cut-outs, saliency maps, the blob map and the history figure.

Figures are made once by `blobwatch.web.render` and kept in the app's memos (`AppState`): per-image
ones under the image's checksum (also on disk), catalog-wide ones under the review state.
"""

from __future__ import annotations

import json

import numpy as np
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from blobwatch.monitor.db import Image, SubframePrediction
from blobwatch.web import queries, render, viewer
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

router = APIRouter(include_in_schema=False)


def _png_response(png: bytes) -> Response:
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/images/{image_id}/{kind}.png")
def image_png(
    image_id: int,
    kind: ImageKind,
    state: AppState = Depends(get_state),
    session: Session = Depends(db),
) -> Response:
    view = image_or_404(session, image_id)
    if view.run_id is None and kind != "image":
        raise HTTPException(404, f"image {image_id} has not been processed")
    key = (
        "image",
        queries.image_sha256(session, image_id),
        view.run_id,
        kind,
        queries.review_state(session),
    )

    def make() -> bytes:
        arrays = state.pixels.arrays(session, image_id)
        if kind == "difference":  # the same figure as the monitor's report (one code path)
            from blobwatch.monitor.report import CandidateView, difference_figure

            known = np.array(
                [(b.x, b.y, b.radius) for b in queries.list_blobs(session)], dtype=np.float64
            ).reshape(-1, 3)
            shown = [
                CandidateView(
                    c.id, c.x, c.y, c.probability, c.significance, c.radius, c.status, c.reason or ""
                )
                for c in view.candidates
                if c.status != "known"
            ]
            return difference_figure(
                arrays["difference"],
                known,
                shown,
                size_inches=7.5,
                title=f"difference: {view.name}  (green: known blobs; "
                "candidates red, or orange if linked/rejected)",
            )
        # the current image and the median stack share the stack's grey levels
        limits = render.zscale_limits(arrays["stack"]) if "stack" in arrays else None
        return render.image_png(arrays[kind], title=f"{KIND_TITLES[kind]}: {view.name}", limits=limits)

    return _png_response(state.pngs.get(key, make))


@router.get("/images/{image_id}/viewer.json")
def viewer_json(
    image_id: int,
    candidate: int | None = None,
    state: AppState = Depends(get_state),
    session: Session = Depends(db),
) -> Response:
    """The pixel viewer's Bokeh figure (one per image shape), with this image's circles and the view
    to open on (zoomed on ``candidate`` if given); the pixels come apart."""
    view = image_or_404(session, image_id)
    shape = session.execute(select(Image.rows, Image.cols).where(Image.id == image_id)).one()
    if shape[0] and shape[1]:
        rows, cols = int(shape[0]), int(shape[1])
    else:  # not recorded (an older database): the pixels say
        rows, cols = state.pixels.arrays(session, image_id)["image"].shape
    center = half = None
    if candidate is not None:
        cand = next((c for c in view.candidates if c.id == candidate), None)
        if cand is None:
            raise HTTPException(404, f"image {image_id} has no candidate {candidate}")
        center, half = (cand.x, cand.y), 4.0 * CUTOUT_HALF

    # the Bokeh figure and the colour maps are the same for every image of this shape: made and
    # serialized once (a JSON object without its closing brace), this image's part appended
    fixed = state.viewer_specs.get(
        ("viewer", rows, cols),
        lambda: (
            json.dumps({"item": viewer.viewer_item((rows, cols)), "palettes": viewer.palettes()})
            .encode()
            .removesuffix(b"}")
        ),
    )
    markers = viewer.blob_markers(queries.list_blobs(session)) + viewer.candidate_markers(view.candidates)
    rest = {
        "markers": viewer.marker_columns(markers),
        "view": viewer.view_ranges((rows, cols), center, half),
        "shape": [rows, cols],
        "kinds": [k for k in KIND_TITLES if k == "image" or view.run_id is not None],
    }
    body = fixed + b"," + json.dumps(rest).encode().removeprefix(b"{")
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})


@router.get("/images/{image_id}/{kind}.f32")
def image_f32(
    image_id: int,
    kind: ImageKind,
    state: AppState = Depends(get_state),
    session: Session = Depends(db),
) -> Response:
    """An image's pixels as little-endian float32, row 0 first (``X-Shape: rows,cols``),
    with zscale limits (``X-Zscale: lo,hi``) for the viewer's default scale."""
    view = image_or_404(session, image_id)
    arrays = state.pixels.arrays(session, image_id)
    if kind not in arrays:
        raise HTTPException(404, f"image {image_id} has not been processed: no {kind}")

    data = np.ascontiguousarray(arrays[kind], dtype="<f4")
    lo, hi = state.limits.get((image_id, view.run_id, kind), lambda: render.zscale_limits(data))
    return Response(
        data.tobytes(),
        media_type="application/octet-stream",
        headers={
            "X-Shape": f"{data.shape[0]},{data.shape[1]}",
            "X-Zscale": f"{lo!r},{hi!r}",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/candidates/{candidate_id}/{kind}.png")
def cutout_png(
    candidate_id: int,
    kind: ImageKind,
    state: AppState = Depends(get_state),
    session: Session = Depends(db),
) -> Response:
    cand = candidate_or_404(session, candidate_id)

    def make() -> bytes:
        arrays = state.pixels.arrays(session, cand.image_id)
        if kind not in arrays:
            raise HTTPException(404, f"candidate {candidate_id}: no {kind} for its image")
        ring = [render.Circle(cand.x, cand.y, max(cand.radius or 8.0, 4.0) * 1.5, render.CANDIDATE_COLOR)]
        # image and stack share the stack's grey levels, so a new blob looks darker in one
        limits = None
        if kind in ("image", "stack") and "stack" in arrays:
            limits = render.zscale_limits(render.cutout(arrays["stack"], cand.x, cand.y, CUTOUT_HALF))
        return render.cutout_png(
            arrays[kind],
            x=cand.x,
            y=cand.y,
            half=CUTOUT_HALF,
            title=f"#{cand.id} {KIND_TITLES[kind]}",
            circles=ring,
            limits=limits,
        )

    key = (
        "cutout",
        queries.image_sha256(session, cand.image_id),
        candidate_id,
        cand.x,
        cand.y,
        cand.radius,
        kind,
    )
    return _png_response(state.pngs.get(key, make))


@router.get("/subframes/{subframe_id}/saliency.png")
def saliency_png(
    subframe_id: int, state: AppState = Depends(get_state), session: Session = Depends(db)
) -> Response:
    row = session.get(SubframePrediction, subframe_id)
    if row is None or not row.saliency_path:
        raise HTTPException(404, f"no saliency map for subframe id {subframe_id}")
    return _png_response(state.pixels.report_file(row.saliency_path))


@router.get("/blobs/map.png")
def blob_map_png(state: AppState = Depends(get_state), session: Session = Depends(db)) -> Response:
    def make() -> bytes:
        blobs = queries.list_blobs(session)
        arr = {
            k: np.array(
                [getattr(b, k) if getattr(b, k) is not None else np.nan for b in blobs], dtype=np.float32
            )
            for k in ("x", "y", "radius", "depth")
        }
        confirmed = [i for i, b in enumerate(blobs) if b.source == "confirmed"]
        return render.blob_map_png(
            arr["x"],
            arr["y"],
            arr["radius"],
            arr["depth"],
            science_box=queries.science_box(session),
            highlight=confirmed,
            labels=[f"#{blobs[i].id}" for i in confirmed],
        )

    return _png_response(state.summary_pngs.get(("map", queries.review_state(session)), make))


@router.get("/history.png")
def history_png(state: AppState = Depends(get_state), session: Session = Depends(db)) -> Response:
    def make() -> bytes:
        images = [im for im in reversed(queries.list_images(session)) if im.mjd is not None]
        thresholds = [im.threshold for im in images if im.threshold is not None]
        return render.history_png(
            np.array([im.mjd for im in images]),
            np.array([im.known_blobs for im in images]),
            np.array(
                [im.max_probability if im.max_probability is not None else np.nan for im in images],
                dtype=np.float32,
            ),
            np.array([im.alert for im in images], dtype=bool),
            threshold=thresholds[-1] if thresholds else None,
        )

    key = ("history", queries.images_state(session), queries.review_state(session))
    return _png_response(state.summary_pngs.get(key, make))
