"""The review web app: FastAPI routes, server-rendered Jinja2 pages and a JSON API.

`create_app` builds the app for one database. Pages: Today (``/``), one image
(``/images/{id}``), the review queue (``/queue``), one candidate (``/candidates/{id}``), the
blob map (``/blobs``) and the history (``/history``); figures are rendered on demand by
`blobwatch.web.render` from files found through database ids only. The JSON API lives under
``/api`` and is described by the OpenAPI schema (``/api/openapi.json``), rendered locally at
``/api`` (``/api/docs`` leads there: no Swagger UI, whose assets would come from a CDN).

Write actions (confirm, reject) are HTML form posts protected by `blobwatch.web.security`, and
call `blobwatch.monitor.catalog.confirm_candidate` / `reject_candidate`, the same code path as
``blobwatch catalog confirm/reject``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from blobwatch import __version__
from blobwatch.errors import BlobwatchError
from blobwatch.monitor.db import (
    BLOB_SOURCES,
    IMAGE_STATUSES,
    Candidate,
    Image,
    SubframePrediction,
    open_database,
)
from blobwatch.web import queries, render, viewer
from blobwatch.web.cache import Memo
from blobwatch.web.pixels import PixelStore
from blobwatch.web.samp import SampError, SampLink
from blobwatch.web.security import (
    AUTH_COOKIE,
    CSRF_COOKIE,
    CSRF_FIELD,
    TOKEN_HEADER,
    Guard,
    allowed_host_name,
    client_key,
    host_allowed,
    served_over_https,
)

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
#: Half-width of candidate cut-outs in pixels (a 49x49 box: blobs are 10-20 px across).
CUTOUT_HALF = 24
#: Where a form may send the browser back to: a plain path on this server.
_LOCAL_PATH = re.compile(r"/(?:[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*)?")
ImageKind = Literal["image", "stack", "difference"]
#: The app's cache folder inside the reports folder (figures, rebuilt pixels).
WEB_CACHE = ".web-cache"
_KIND_TITLES = {"image": "current image", "stack": "median stack", "difference": "difference"}
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
#: Pages with the pixel viewer: BokehJS styles its widgets inline (scripts stay 'self').
_CSP_VIEWER = _CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


#: OpenAPI descriptions of the download routes' responses.
_TEXT_FILE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/plain": {}}}}
_FITS_FILE: dict[int | str, dict[str, Any]] = {200: {"content": {"application/fits": {}}}}


def _png_response(png: bytes) -> Response:
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


def _download(data: bytes, filename: str, media_type: str = "text/plain; charset=utf-8") -> Response:
    """A file to save (``Content-Disposition: attachment``) under ``filename`` (made from ids)."""
    return Response(
        data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


#: Database connections the app lends at once: one per worker thread (AnyIO runs FastAPI's sync
#: routes and dependencies on at most 40 threads), so a request never waits for a connection that
#: other requests hold while they render (SQLAlchemy's default of 5 + 10 ran out under 20 clients).
DB_CONNECTIONS = 40


def create_app(
    db_url: str,
    reports_dir: str | Path | None = None,
    *,
    token: str | None = None,
    require_token: bool = False,
    images_dir: str | Path | None = None,
    allowed_hosts: Sequence[str] = (),
) -> FastAPI:
    """Build the review app for the monitor database at ``db_url``.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL of the monitor's database (upgraded if needed; it must exist, see
        `blobwatch.monitor.db.DatabaseNotFoundError`).
    reports_dir : path-like, optional
        Folder of the monitor's reports; report files recorded in the database with relative
        paths are looked up there.
    token : str, optional
        The write token (``$BLOBWATCH_TOKEN`` for ``blobwatch serve``).
    require_token : bool
        Refuse confirm/reject unless the request presents ``token`` (``blobwatch serve`` sets
        this when bound to a non-loopback address).
    images_dir : path-like, optional
        Where to look (by file name) for blob images that moved since they were processed.
    allowed_hosts : sequence of str
        Host names (or addresses) the app answers to besides the loopback names; a request with
        any other ``Host`` gets 400 (`blobwatch.web.security.host_allowed`).
    """
    hosts = frozenset(allowed_host_name(h) for h in allowed_hosts)
    session_factory = open_database(db_url, create=False, pool_size=DB_CONNECTIONS)
    guard = Guard(token=token, require_token=require_token)
    # figures and rebuilt pixels are made once, kept in memory and in the reports folder's
    # cache (keyed by content), and never made under a lock that other requests wait on
    cache_dir = Path(reports_dir) / WEB_CACHE if reports_dir is not None else None
    pixels = PixelStore(reports_dir=reports_dir, images_dir=images_dir, cache_dir=cache_dir)
    samp = SampLink()
    # per-image figures on disk under the image's checksum; catalog-wide ones in memory only
    pngs: Memo[bytes] = Memo(256, cache_dir / "figures" if cache_dir is not None else None, ".png")
    summary_pngs: Memo[bytes] = Memo(8)
    limits: Memo[tuple[float, float]] = Memo(256)  # zscale limits of the viewer's pixels
    viewer_specs: Memo[bytes] = Memo(
        16
    )  # the viewer's Bokeh figure per image shape (a good fraction of a second)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["fmt"] = _fmt
    templates.env.filters["utc"] = _utc

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # read the newest image and rebuild its median stack in the background, so the first
        # visit to Today does not wait for it (figures wait on the same lock if it is not done)
        threading.Thread(target=warm_newest, name="blobwatch-warm", daemon=True).start()
        yield

    def warm_newest() -> None:
        try:
            with session_factory() as session:
                newest = queries.newest_image_id(session)
                if newest is not None:
                    pixels.arrays(session, newest)
        except Exception:  # a missing file is reported when a page asks for it
            log.debug("warming the newest image failed", exc_info=True)

    app = FastAPI(
        lifespan=lifespan,
        title="blobwatch review",
        version=__version__,
        description="Review of new WFC3/IR blob candidates found by the blobwatch monitor. "
        "Pixel coordinates are 0-based (x = column, y = row); `x_ds9`, `y_ds9` "
        "give the 1-based DS9/FITS position.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.session_factory = session_factory
    app.state.guard = guard
    app.state.pixels = pixels
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    # BokehJS from the installed bokeh package (offline; its version is in the page's URL)
    app.mount("/bokeh", StaticFiles(directory=str(viewer.bokehjs_dir())), name="bokeh")

    @app.middleware("http")
    async def csrf_cookie_and_headers(request: Request, call_next: Any) -> Response:
        cookie = request.cookies.get(CSRF_COOKIE)
        value = cookie or guard.new_cookie_value()
        request.state.csrf_token = guard.form_token(value)
        response = await call_next(request)
        if not cookie:
            response.set_cookie(
                CSRF_COOKIE, value, httponly=True, samesite="strict", secure=served_over_https(request)
            )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.middleware("http")
    async def trusted_host(request: Request, call_next: Any) -> Response:
        # added last, so it runs first: nothing (not even a CSRF cookie) for an unknown Host
        if not host_allowed(request.url.hostname, hosts):
            return PlainTextResponse(
                "400: this server does not answer to that Host name "
                "(blobwatch serve --allowed-host NAME allows one)\n",
                status_code=400,
            )
        return await call_next(request)

    def db() -> Iterator[Session]:
        with session_factory() as session:
            yield session

    def page(request: Request, name: str, active: str, session: Session, **context: Any) -> HTMLResponse:
        done = request.query_params.get("done")
        return templates.TemplateResponse(
            request,
            name,
            {
                "active": active,
                "version": __version__,
                "open_count": queries.open_count(session),
                "csrf_field": CSRF_FIELD,
                "csrf_token": request.state.csrf_token,
                "reviewer": request.cookies.get("bw_reviewer", ""),
                "locked": guard.require_token and not guard.write_allowed(request),
                "require_token": guard.require_token,
                "flash": _flash(done, request.query_params),
                "reasons": queries.REJECT_REASONS,
                "cutout_kinds": list(_KIND_TITLES.items()),
                **context,
            },
        )

    def image_or_404(session: Session, image_id: int) -> queries.ImageView:
        view = queries.get_image(session, image_id)
        if view is None:
            raise HTTPException(404, f"no image with id {image_id}")
        return view

    def candidate_or_404(session: Session, candidate_id: int) -> queries.CandidateView:
        view = queries.get_candidate(session, candidate_id)
        if view is None:
            raise HTTPException(404, f"no candidate with id {candidate_id}")
        return view

    # ---------------------------------------------------------------- pages

    def image_page(request: Request, session: Session, image_id: int | None, active: str) -> HTMLResponse:
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
            samp=view is not None and not guard.require_token and samp.available(),
            **viewer_context(),
        )
        response.headers["Content-Security-Policy"] = _CSP_VIEWER
        return response

    def viewer_context() -> dict[str, Any]:
        return {"bokeh_version": viewer.bokeh_version(), "colormaps": list(viewer.palettes())}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def today(request: Request, session: Session = Depends(db)) -> HTMLResponse:
        return image_page(request, session, queries.newest_image_id(session), "today")

    @app.get("/images/{image_id}", response_class=HTMLResponse, include_in_schema=False)
    def image_detail(image_id: int, request: Request, session: Session = Depends(db)) -> HTMLResponse:
        return image_page(request, session, image_id, "history")

    @app.get("/queue", response_class=HTMLResponse, include_in_schema=False)
    def queue(request: Request, session: Session = Depends(db)) -> HTMLResponse:
        return page(
            request,
            "queue.html",
            "queue",
            session,
            candidates=queries.list_candidates(session, status="new"),
            reviewed=queries.recent_reviews(session),
        )

    @app.get("/candidates/{candidate_id}", response_class=HTMLResponse, include_in_schema=False)
    def candidate_detail(candidate_id: int, request: Request, session: Session = Depends(db)) -> HTMLResponse:
        response = page(
            request,
            "candidate.html",
            "queue",
            session,
            candidate=candidate_or_404(session, candidate_id),
            **viewer_context(),
        )
        response.headers["Content-Security-Policy"] = _CSP_VIEWER
        return response

    @app.get("/blobs", response_class=HTMLResponse, include_in_schema=False)
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

    @app.get("/history", response_class=HTMLResponse, include_in_schema=False)
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

    @app.get("/api", response_class=HTMLResponse, include_in_schema=False)
    def api_page(request: Request, session: Session = Depends(db)) -> HTMLResponse:
        schema = app.openapi()
        return page(
            request, "api.html", "api", session, routes=_api_routes(schema), models=_api_models(schema)
        )

    @app.get("/api/docs", include_in_schema=False)
    def api_docs() -> RedirectResponse:
        """The offline API page (where FastAPI would serve Swagger UI from a CDN)."""
        return RedirectResponse("/api", status_code=308)

    # ---------------------------------------------------------------- figures (by id only)

    @app.get("/images/{image_id}/{kind}.png", include_in_schema=False)
    def image_png(image_id: int, kind: ImageKind, session: Session = Depends(db)) -> Response:
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
            arrays = pixels.arrays(session, image_id)
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
            return render.image_png(arrays[kind], title=f"{_KIND_TITLES[kind]}: {view.name}", limits=limits)

        return _png_response(pngs.get(key, make))

    @app.get("/images/{image_id}/viewer.json", include_in_schema=False)
    def viewer_json(image_id: int, candidate: int | None = None, session: Session = Depends(db)) -> Response:
        """The pixel viewer's Bokeh figure (no pixels); zoomed on ``candidate`` if given."""
        view = image_or_404(session, image_id)
        shape = session.execute(select(Image.rows, Image.cols).where(Image.id == image_id)).one()
        if shape[0] and shape[1]:
            rows, cols = int(shape[0]), int(shape[1])
        else:  # not recorded (an older database): the pixels say
            rows, cols = pixels.arrays(session, image_id)["image"].shape
        center = half = None
        if candidate is not None:
            cand = next((c for c in view.candidates if c.id == candidate), None)
            if cand is None:
                raise HTTPException(404, f"image {image_id} has no candidate {candidate}")
            center, half = (cand.x, cand.y), 4.0 * CUTOUT_HALF

        # the Bokeh figure is the same for every image of this shape: built once, sent as it is
        item = viewer_specs.get(
            ("viewer", rows, cols), lambda: json.dumps(viewer.viewer_item((rows, cols))).encode()
        )
        markers = viewer.blob_markers(queries.list_blobs(session)) + viewer.candidate_markers(view.candidates)
        rest = {
            "markers": viewer.marker_columns(markers),
            "view": viewer.view_ranges((rows, cols), center, half),
            "palettes": viewer.palettes(),
            "shape": [rows, cols],
            "kinds": [k for k in _KIND_TITLES if k == "image" or view.run_id is not None],
        }
        body = b'{"item":' + item + b"," + json.dumps(rest).encode()[1:]
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})

    @app.get("/images/{image_id}/{kind}.f32", include_in_schema=False)
    def image_f32(image_id: int, kind: ImageKind, session: Session = Depends(db)) -> Response:
        """An image's pixels as little-endian float32, row 0 first (``X-Shape: rows,cols``),
        with zscale limits (``X-Zscale: lo,hi``) for the viewer's default scale."""
        view = image_or_404(session, image_id)
        arrays = pixels.arrays(session, image_id)
        if kind not in arrays:
            raise HTTPException(404, f"image {image_id} has not been processed: no {kind}")

        data = np.ascontiguousarray(arrays[kind], dtype="<f4")
        lo, hi = limits.get((image_id, view.run_id, kind), lambda: render.zscale_limits(data))
        return Response(
            data.tobytes(),
            media_type="application/octet-stream",
            headers={
                "X-Shape": f"{data.shape[0]},{data.shape[1]}",
                "X-Zscale": f"{lo!r},{hi!r}",
                "Cache-Control": "no-cache",
            },
        )

    @app.get("/candidates/{candidate_id}/{kind}.png", include_in_schema=False)
    def cutout_png(candidate_id: int, kind: ImageKind, session: Session = Depends(db)) -> Response:
        cand = candidate_or_404(session, candidate_id)

        def make() -> bytes:
            arrays = pixels.arrays(session, cand.image_id)
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
                title=f"#{cand.id} {_KIND_TITLES[kind]}",
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
        return _png_response(pngs.get(key, make))

    @app.get("/subframes/{subframe_id}/saliency.png", include_in_schema=False)
    def saliency_png(subframe_id: int, session: Session = Depends(db)) -> Response:
        row = session.get(SubframePrediction, subframe_id)
        if row is None or not row.saliency_path:
            raise HTTPException(404, f"no saliency map for subframe id {subframe_id}")
        return _png_response(pixels.report_file(row.saliency_path))

    @app.get("/blobs/map.png", include_in_schema=False)
    def blob_map_png(session: Session = Depends(db)) -> Response:
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

        return _png_response(summary_pngs.get(("map", queries.review_state(session)), make))

    @app.get("/history.png", include_in_schema=False)
    def history_png(session: Session = Depends(db)) -> Response:
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
        return _png_response(summary_pngs.get(key, make))

    # ---------------------------------------------------------------- downloads

    @app.get(
        "/catalog.ecsv",
        tags=["catalog"],
        summary="Download the blob catalog (ECSV)",
        response_class=Response,
        responses=_TEXT_FILE,
    )
    def catalog_ecsv(session: Session = Depends(db)) -> Response:
        from blobwatch.web.downloads import catalog_ecsv_bytes

        return _download(catalog_ecsv_bytes(session), "blob_catalog.ecsv")

    @app.get(
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

    @app.get(
        "/catalog.reg",
        tags=["catalog"],
        summary="Download the blob catalog as a DS9 region file",
        response_class=Response,
        responses=_TEXT_FILE,
    )
    def catalog_reg(session: Session = Depends(db)) -> Response:
        from blobwatch.web.downloads import catalog_regions_bytes

        return _download(catalog_regions_bytes(session), "blob_catalog.reg")

    @app.get(
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

    @app.get(
        "/images/{image_id}/{kind}.fits",
        tags=["images"],
        summary="Download an image's current image, median stack or difference (FITS, "
        "pixel header with provenance)",
        response_class=Response,
        responses={**_FITS_FILE, 404: {"description": "unknown id or not processed"}},
    )
    def image_fits(image_id: int, kind: ImageKind, session: Session = Depends(db)) -> Response:
        from blobwatch.interchange import pixel_fits_bytes
        from blobwatch.web.downloads import image_provenance

        image_or_404(session, image_id)
        arrays = pixels.arrays(session, image_id)
        if kind not in arrays:
            raise HTTPException(404, f"image {image_id} has not been processed: no {kind}")
        data = pixel_fits_bytes(
            arrays[kind], content=_KIND_TITLES[kind], provenance=image_provenance(session, image_id)
        )
        return _download(data, f"image{image_id}_{kind}.fits", "application/fits")

    @app.get(
        "/candidates/{candidate_id}/{kind}.fits",
        tags=["candidates"],
        summary=f"Download a {2 * CUTOUT_HALF + 1}x{2 * CUTOUT_HALF + 1} px cut-out around a "
        "candidate (FITS; LTV1/LTV2 place it in the blob image)",
        response_class=Response,
        responses={**_FITS_FILE, 404: {"description": "unknown id or not processed"}},
    )
    def cutout_fits(candidate_id: int, kind: ImageKind, session: Session = Depends(db)) -> Response:
        from blobwatch.interchange import pixel_fits_bytes
        from blobwatch.web.downloads import image_provenance

        cand = candidate_or_404(session, candidate_id)
        arrays = pixels.arrays(session, cand.image_id)
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
            content=f"{_KIND_TITLES[kind]} cut-out",
            provenance=provenance,
            origin=(x0, y0),
        )
        return _download(data, f"candidate{candidate_id}_{kind}.fits", "application/fits")

    # ---------------------------------------------------------------- write actions

    async def checked_form(request: Request) -> dict[str, str]:
        form = await request.form()
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        if not guard.csrf_ok(request, fields.get(CSRF_FIELD)):
            raise HTTPException(403, "cross-site request refused: reload the page and try again")
        return fields

    def refuse_if_throttled(request: Request) -> None:
        wait = guard.throttle.retry_after(client_key(request))
        if wait > 0:
            raise HTTPException(
                429,
                f"too many wrong write tokens: try again in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )

    def require_write(request: Request) -> None:
        if guard.require_token and TOKEN_HEADER in request.headers:
            refuse_if_throttled(request)
        if not guard.write_allowed(request):
            raise HTTPException(403, "write token required: unlock the app first (/unlock)")

    def review_fields(fields: dict[str, str]) -> str:
        reviewer = fields.get("reviewer", "").strip()
        if not reviewer or len(reviewer) > 128:
            raise _FormError("give your name (at most 128 characters) as reviewer")
        return reviewer

    def form_again(request: Request, candidate_id: int, problem: str) -> HTMLResponse:
        """The candidate's page with its review form and ``problem`` beside it (status 422)."""
        with session_factory() as session:
            response = page(
                request,
                "candidate.html",
                "queue",
                session,
                candidate=candidate_or_404(session, candidate_id),
                form_error=(candidate_id, problem),
            )
        response.status_code = 422
        return response

    def back(request: Request, fields: dict[str, str], **params: Any) -> RedirectResponse:
        target = fields.get("next", "/queue")
        if not _LOCAL_PATH.fullmatch(target):  # only our own pages: no "//host", "/\\host", scheme
            target = "/queue"
        response = RedirectResponse(f"{target}?{urlencode(params)}", status_code=303)
        if fields.get("reviewer"):
            response.set_cookie(
                "bw_reviewer",
                fields["reviewer"].strip()[:128],
                samesite="strict",
                max_age=3600 * 24 * 365,
                secure=served_over_https(request),
            )
        return response

    def decide(candidate_id: int, verb: str, action: Callable[[Session], Any]) -> Any:
        """Run a catalog decision on one candidate in its own session (404, 409 on refusal)."""
        with session_factory() as session:
            if session.get(Candidate, candidate_id) is None:
                raise HTTPException(404, f"no candidate with id {candidate_id}")
            try:
                return action(session)
            except BlobwatchError as exc:
                session.rollback()
                raise HTTPException(409, f"candidate {candidate_id} not {verb}: {exc}") from exc

    @app.post("/candidates/{candidate_id}/confirm", include_in_schema=False)
    async def confirm(candidate_id: int, request: Request) -> Response:
        from blobwatch.monitor.catalog import confirm_candidate, measure_in_stack

        fields = await checked_form(request)
        require_write(request)
        try:
            reviewer = review_fields(fields)
        except _FormError as exc:
            return await run_in_threadpool(form_again, request, candidate_id, str(exc))
        same_as = fields.get("same_as")
        if same_as is not None:
            if not (same_as.isdigit() and len(same_as) < 19):  # an SQLite integer
                raise HTTPException(422, "same_as must be a catalog blob id")
            blob = await run_in_threadpool(
                decide,
                candidate_id,
                "recorded",
                lambda session: confirm_candidate(
                    session, candidate_id, reviewer=reviewer, same_as=int(same_as)
                ),
            )
            log.info("candidate %d recorded by %s as blob %d seen again", candidate_id, reviewer, blob.id)
            return back(request, fields, done="same", candidate=candidate_id, blob=blob.id)

        def action(session: Session) -> Any:
            # the candidate page usually left its image's stack in memory: measure there rather
            # than re-read the image and its references (same arrays, same measurement)
            cand = session.get(Candidate, candidate_id)
            arrays = pixels.cached(cand.image_id, cand.run_id) if cand is not None else None
            measurement = None
            if cand is not None and arrays is not None and "stack" in arrays:
                try:
                    measurement = measure_in_stack(cand, arrays["image"], arrays["stack"])
                except BlobwatchError:  # confirm_candidate measures again and says why
                    measurement = None
            return confirm_candidate(
                session, candidate_id, reviewer=reviewer, images_dir=images_dir, measurement=measurement
            )

        # measuring may re-read the image and its references: off the event loop
        blob = await run_in_threadpool(decide, candidate_id, "confirmed", action)
        log.info("candidate %d confirmed by %s as blob %d", candidate_id, reviewer, blob.id)
        return back(request, fields, done="confirmed", candidate=candidate_id, blob=blob.id)

    @app.post("/candidates/{candidate_id}/reject", include_in_schema=False)
    async def reject(candidate_id: int, request: Request) -> Response:
        from blobwatch.monitor.catalog import reject_candidate

        fields = await checked_form(request)
        require_write(request)
        reason = fields.get("reason", "")
        try:
            reviewer = review_fields(fields)
            if reason not in queries.REJECT_REASONS:
                raise _FormError(f"reason must be one of: {', '.join(queries.REJECT_REASONS)}")
        except _FormError as exc:
            return await run_in_threadpool(form_again, request, candidate_id, str(exc))
        note = fields.get("note", "").strip()[:500]
        if note:
            reason = f"{reason}: {note}"
        await run_in_threadpool(
            decide,
            candidate_id,
            "rejected",
            lambda session: reject_candidate(session, candidate_id, reason=reason, reviewer=reviewer),
        )
        log.info("candidate %d rejected by %s (%s)", candidate_id, reviewer, reason)
        return back(request, fields, done="rejected", candidate=candidate_id)

    @app.post("/images/{image_id}/ds9", include_in_schema=False)
    async def open_in_ds9(image_id: int, request: Request) -> Response:
        """Send the image's ``kind`` FITS download and its region file to DS9 over SAMP."""
        from blobwatch.web.downloads import image_regions_bytes

        fields = await checked_form(request)
        if guard.require_token:  # DS9 would open on the server's screen, not the reviewer's
            raise HTTPException(404, "open in DS9 is offered only by an app on this machine (loopback)")
        kind = fields.get("kind", "")
        if kind not in _KIND_TITLES:
            raise HTTPException(422, f"kind must be one of: {', '.join(_KIND_TITLES)}")

        def send() -> None:
            with session_factory() as session:
                regions = image_regions_bytes(session, image_or_404(session, image_id))
            url = f"{str(request.base_url).rstrip('/')}/images/{image_id}/{kind}.fits"
            samp.send(url, f"image{image_id}_{kind}", regions)

        try:
            await run_in_threadpool(send)
        except SampError as exc:
            raise HTTPException(409, str(exc)) from None
        return back(request, fields, done="ds9", image=image_id)

    @app.get("/unlock", response_class=HTMLResponse, include_in_schema=False)
    def unlock_page(request: Request, session: Session = Depends(db)) -> HTMLResponse:
        return page(request, "unlock.html", "", session)

    @app.post("/unlock", include_in_schema=False)
    async def unlock(request: Request) -> Response:
        fields = await checked_form(request)
        if not guard.require_token:
            return RedirectResponse("/queue", status_code=303)
        refuse_if_throttled(request)
        if not guard.token_matches(fields.get("token")):
            guard.throttle.failed(client_key(request))
            raise HTTPException(403, "wrong write token")
        response = RedirectResponse("/queue?done=unlocked", status_code=303)
        response.set_cookie(
            AUTH_COOKIE,
            guard.new_write_session(),
            httponly=True,
            samesite="strict",
            secure=served_over_https(request),
        )
        return response

    # ---------------------------------------------------------------- JSON API

    @app.get(
        "/api/images",
        tags=["images"],
        summary="Every image, newest first",
        response_model=list[queries.ImageView],
    )
    def api_images(session: Session = Depends(db)) -> list[queries.ImageView]:
        return queries.list_images(session)

    @app.get(
        "/api/images/{image_id}",
        tags=["images"],
        summary="One image with its newest run, 16 subframe probabilities and candidates",
        response_model=queries.ImageView,
        responses={404: {"description": "unknown id"}},
    )
    def api_image(image_id: int, session: Session = Depends(db)) -> queries.ImageView:
        return image_or_404(session, image_id)

    @app.get(
        "/api/candidates",
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

    @app.get(
        "/api/candidates/{candidate_id}",
        tags=["candidates"],
        summary="One candidate",
        response_model=queries.CandidateView,
        responses={404: {"description": "unknown id"}},
    )
    def api_candidate(candidate_id: int, session: Session = Depends(db)) -> queries.CandidateView:
        return candidate_or_404(session, candidate_id)

    @app.get(
        "/api/catalog",
        tags=["catalog"],
        summary="The blob catalog, oldest first",
        response_model=list[queries.BlobView],
    )
    def api_catalog(session: Session = Depends(db)) -> list[queries.BlobView]:
        return queries.list_blobs(session)

    @app.get(
        "/api/catalog/{blob_id}",
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

    # ---------------------------------------------------------------- errors

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/api") or request.method != "GET":
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}" for e in exc.errors()
        )
        return await http_error(request, StarletteHTTPException(422, f"bad query: {problems}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api") or request.url.path.endswith(
            (".png", ".fits", ".ecsv", ".reg", ".f32", ".json")
        ):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        with session_factory() as session:
            response = page(request, "error.html", "", session, status=exc.status_code, detail=exc.detail)
        response.status_code = exc.status_code
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(OverflowError)
    async def id_out_of_range(request: Request, exc: OverflowError) -> Response:
        # SQLite integers are 64-bit: a larger id (in the path, query or a form) names no row, and
        # binding it raises OverflowError ("Python int too large to convert to SQLite INTEGER")
        return await http_error(request, StarletteHTTPException(404, "no such id (beyond the 64-bit range)"))

    return app


class _FormError(ValueError):
    """A review form field is missing or wrong (shown beside the form, not as an error page)."""


def _flash(done: str | None, params: Any) -> tuple[str, str] | None:
    """The message shown after a write action (built here from ids, never echoed from the URL)."""
    try:
        if done == "confirmed":
            return "ok", (
                f"Candidate #{int(params['candidate'])} confirmed: "
                f"blob #{int(params['blob'])} added to the catalog."
            )
        if done == "same":
            return "ok", (
                f"Candidate #{int(params['candidate'])} recorded as catalog blob "
                f"#{int(params['blob'])} seen again: nothing added to the catalog."
            )
        if done == "rejected":
            return "ok", f"Candidate #{int(params['candidate'])} rejected."
        if done == "ds9":
            return "ok", f"Image #{int(params['image'])} and its regions sent to DS9 over SAMP."
    except (KeyError, TypeError, ValueError):
        return None
    if done == "unlocked":
        return "ok", "Write actions unlocked for this browser."
    return None


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


def _fmt(value: Any, spec: str = ".3f") -> str:
    """Jinja filter: format a number, '–' for None/NaN."""
    if value is None:
        return "–"
    try:
        if value != value:  # NaN
            return "–"
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _utc(iso: str | None) -> str:
    """Jinja filter: an ISO timestamp as ``YYYY-MM-DD HH:MM`` (UTC), '' for None."""
    return (iso or "")[:16].replace("T", " ")


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
