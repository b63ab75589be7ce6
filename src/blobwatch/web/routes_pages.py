"""The review app's HTML pages: Today (``/``), one image (``/images/{id}``), the review queue
(``/queue``), one candidate (``/candidates/{id}``), the blob map (``/blobs``), the history
(``/history``) and the API reference (``/api``, rendered here from the OpenAPI schema: no Swagger
UI, whose assets would come from a CDN)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from blobwatch.monitor.db import BLOB_SOURCES, IMAGE_STATUSES
from blobwatch.web import queries, viewer
from blobwatch.web.security import CSP_VIEWER
from blobwatch.web.state import AppState, candidate_or_404, db, get_state, image_or_404
from blobwatch.web.templating import page

router = APIRouter(include_in_schema=False)


def _image_page(
    request: Request, state: AppState, session: Session, image_id: int | None, active: str
) -> HTMLResponse:
    view = image_or_404(session, image_id) if image_id is not None else None
    older, newer = queries.neighbours(session, view.id) if view else (None, None)
    # "open in DS9" only where DS9 runs on the server's machine: a loopback-only app
    response = page(
        request,
        "image.html",
        active,
        session,
        image=view,
        older=older,
        newer=newer,
        grid=queries.subframe_grid(view.subframes) if view else [],
        samp=view is not None and not state.guard.require_token and state.samp.available(),
        **_viewer_context(),
    )
    response.headers["Content-Security-Policy"] = CSP_VIEWER
    return response


def _viewer_context() -> dict[str, Any]:
    return {"bokeh_version": viewer.bokeh_version(), "colormaps": list(viewer.palettes())}


@router.get("/", response_class=HTMLResponse)
def today(
    request: Request, state: AppState = Depends(get_state), session: Session = Depends(db)
) -> HTMLResponse:
    return _image_page(request, state, session, queries.newest_image_id(session), "today")


@router.get("/images/{image_id}", response_class=HTMLResponse)
def image_detail(
    image_id: int, request: Request, state: AppState = Depends(get_state), session: Session = Depends(db)
) -> HTMLResponse:
    return _image_page(request, state, session, image_id, "history")


@router.get("/queue", response_class=HTMLResponse)
def queue(request: Request, session: Session = Depends(db)) -> HTMLResponse:
    return page(
        request,
        "queue.html",
        "queue",
        session,
        candidates=queries.list_candidates(session, status="new"),
        reviewed=queries.recent_reviews(session),
    )


@router.get("/candidates/{candidate_id}", response_class=HTMLResponse)
def candidate_detail(candidate_id: int, request: Request, session: Session = Depends(db)) -> HTMLResponse:
    response = page(
        request,
        "candidate.html",
        "queue",
        session,
        candidate=candidate_or_404(session, candidate_id),
        **_viewer_context(),
    )
    response.headers["Content-Security-Policy"] = CSP_VIEWER
    return response


@router.get("/blobs", response_class=HTMLResponse)
def blob_map(
    request: Request,
    q: str = "",
    blob: int | None = None,
    source: str = "",
    min_radius: float | None = None,
    min_depth: float | None = None,
    page_no: int = Query(1, alias="page"),
    per: int = queries.PAGE_SIZE,
    session: Session = Depends(db),
) -> HTMLResponse:
    """The catalog table, filtered (label or id ``q``, one ``blob`` id, ``source``, ``min_radius`` px,
    ``min_depth`` in %) and paginated (``page``, ``per``) on the server."""
    _one_of("source", source, BLOB_SOURCES)
    blobs = queries.list_blobs(session)
    shown = queries.filter_blobs(
        blobs,
        q=q,
        blob_id=blob,
        source=source,
        min_radius=min_radius,
        min_depth=min_depth / 100.0 if min_depth is not None else None,
    )
    filters = {"q": q, "blob": blob, "source": source, "min_radius": min_radius, "min_depth": min_depth}
    return page(
        request,
        "blobs.html",
        "blobs",
        session,
        n_blobs=len(blobs),
        table=queries.paginate(shown, page_no, per),
        filters=filters,
        sources=BLOB_SOURCES,
        query=_query_string(filters, per),
    )


@router.get("/history", response_class=HTMLResponse)
def history(
    request: Request,
    q: str = "",
    status: str = "",
    alert: Literal["", "yes", "no"] = "",
    mjd_min: float | None = None,
    mjd_max: float | None = None,
    page_no: int = Query(1, alias="page"),
    per: int = queries.PAGE_SIZE,
    session: Session = Depends(db),
) -> HTMLResponse:
    """The image table, filtered (name ``q``, ``status``, ``alert``, MJD range) and
    paginated (``page``, ``per``) on the server; the figure shows every image."""
    _one_of("status", status, IMAGE_STATUSES)
    images = queries.list_images(session)
    shown = queries.filter_images(
        images,
        q=q,
        status=status,
        alert={"yes": True, "no": False}.get(alert),
        mjd_min=mjd_min,
        mjd_max=mjd_max,
    )
    filters = {"q": q, "status": status, "alert": alert, "mjd_min": mjd_min, "mjd_max": mjd_max}
    return page(
        request,
        "history.html",
        "history",
        session,
        n_images=len(images),
        table=queries.paginate(shown, page_no, per),
        filters=filters,
        statuses=IMAGE_STATUSES,
        query=_query_string(filters, per),
    )


@router.get("/api", response_class=HTMLResponse)
def api_page(request: Request, session: Session = Depends(db)) -> HTMLResponse:
    schema = request.app.openapi()
    return page(request, "api.html", "api", session, routes=_api_routes(schema), models=_api_models(schema))


@router.get("/api/docs")
def api_docs() -> RedirectResponse:
    """The offline API page (where FastAPI would serve Swagger UI from a CDN)."""
    return RedirectResponse("/api", status_code=308)


def _one_of(name: str, value: str, allowed: Sequence[str]) -> None:
    """422 unless ``value`` is empty (no filter) or one of ``allowed``."""
    if value and value not in allowed:
        raise HTTPException(422, f"{name} must be one of: {', '.join(allowed)}")


def _query_string(filters: dict[str, Any], per: int) -> str:
    """The filters (and a page size other than the default) as a query string for page links."""
    params = {k: v for k, v in filters.items() if v not in (None, "")}
    if per != queries.PAGE_SIZE:
        params["per"] = per
    return urlencode(params)


def _api_routes(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the locally rendered API page, from the OpenAPI schema."""
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            rows.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "tags": ", ".join(op.get("tags", [])),
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": p.get("required", False),
                            "type": _schema_type(p.get("schema", {})),
                        }
                        for p in op.get("parameters", [])
                    ],
                }
            )
    return rows


def _api_models(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Fields of the response objects, from the OpenAPI schema."""
    wanted = ("ImageView", "SubframeView", "CandidateView", "BlobView")
    components = schema.get("components", {}).get("schemas", {})
    return [
        {
            "name": name,
            "fields": [
                (field, _schema_type(spec)) for field, spec in components[name].get("properties", {}).items()
            ],
        }
        for name in wanted
        if name in components
    ]


def _schema_type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " | ".join(_schema_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    return str(schema.get("type", "object"))
