"""The review web app's factory: `create_app` builds the shared state, the middleware, the error
pages and includes the routers.

The routes live in one module per area: `blobwatch.web.routes_pages` (Today, one image, the
review queue, one candidate, the blob map, the history and the API reference),
`routes_figures` (PNG figures, the pixel viewer's pixels and figure), `routes_downloads`
(catalog, region and FITS files), `routes_actions` (confirm, reject, DS9, unlock) and
`routes_api` (the JSON API under ``/api``, described by ``/api/openapi.json``). What they share
is one `blobwatch.web.state.AppState` in ``app.state.web``.

Every response passes two middlewares: the Host allow-list (400 for a name not allowed, before
anything else) and the CSRF cookie with the security headers (`blobwatch.web.security.CSP`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from blobwatch import __version__
from blobwatch.monitor.db import open_database
from blobwatch.web import (
    queries,
    routes_actions,
    routes_api,
    routes_downloads,
    routes_figures,
    routes_pages,
    viewer,
)
from blobwatch.web.cache import Memo
from blobwatch.web.pixels import PixelStore
from blobwatch.web.samp import SampLink
from blobwatch.web.security import (
    CSP,
    CSRF_COOKIE,
    Guard,
    allowed_host_name,
    host_allowed,
    served_over_https,
)
from blobwatch.web.state import AppState, state_of
from blobwatch.web.templating import make_templates, page

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
#: The app's cache folder inside the reports folder (figures, rebuilt pixels).
WEB_CACHE = ".web-cache"
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
    # figures and rebuilt pixels are made once, kept in memory and in the reports folder's
    # cache (keyed by content), and never made under a lock that other requests wait on
    cache_dir = Path(reports_dir) / WEB_CACHE if reports_dir is not None else None
    state = AppState(
        session_factory=open_database(db_url, create=False, pool_size=DB_CONNECTIONS),
        guard=Guard(token=token, require_token=require_token),
        allowed_hosts=frozenset(allowed_host_name(h) for h in allowed_hosts),
        images_dir=images_dir,
        templates=make_templates(),
        pixels=PixelStore(reports_dir=reports_dir, images_dir=images_dir, cache_dir=cache_dir),
        samp=SampLink(),
        # per-image figures on disk under the image's checksum; catalog-wide ones in memory only
        pngs=Memo(256, cache_dir / "figures" if cache_dir is not None else None, ".png"),
        summary_pngs=Memo(8),
        limits=Memo(256),
        viewer_specs=Memo(16),
    )
    app = FastAPI(
        lifespan=_lifespan,
        title="blobwatch review",
        version=__version__,
        description="Review of new WFC3/IR blob candidates found by the blobwatch monitor. "
        "Pixel coordinates are 0-based (x = column, y = row); `x_ds9`, `y_ds9` "
        "give the 1-based DS9/FITS position.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.web = state
    # the parts tests, benchmarks and operators look at directly
    app.state.session_factory = state.session_factory
    app.state.guard = state.guard
    app.state.pixels = state.pixels
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    # BokehJS from the installed bokeh package (offline; its version is in the page's URL)
    app.mount("/bokeh", StaticFiles(directory=str(viewer.bokehjs_dir())), name="bokeh")
    app.middleware("http")(_csrf_cookie_and_headers)
    # added last, so it runs first: nothing (not even a CSRF cookie) for an unknown Host
    app.middleware("http")(_trusted_host)
    for module in (routes_pages, routes_figures, routes_downloads, routes_actions, routes_api):
        app.include_router(module.router)
    app.exception_handler(RequestValidationError)(_bad_request)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(OverflowError)(_id_out_of_range)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # read the newest image and rebuild its median stack in the background, so the first
    # visit to Today does not wait for it (figures wait on the same lock if it is not done)
    threading.Thread(target=_warm_newest, args=(app.state.web,), name="blobwatch-warm", daemon=True).start()
    yield


def _warm_newest(state: AppState) -> None:
    try:
        with state.session_factory() as session:
            newest = queries.newest_image_id(session)
            if newest is not None:
                state.pixels.arrays(session, newest)
    except Exception:  # a missing file is reported when a page asks for it
        log.debug("warming the newest image failed", exc_info=True)


# ---------------------------------------------------------------- middleware


async def _csrf_cookie_and_headers(request: Request, call_next: Any) -> Response:
    guard = state_of(request).guard
    cookie = request.cookies.get(CSRF_COOKIE)
    value = cookie or guard.new_cookie_value()
    request.state.csrf_token = guard.form_token(value)
    response: Response = await call_next(request)
    if not cookie:
        response.set_cookie(
            CSRF_COOKIE, value, httponly=True, samesite="strict", secure=served_over_https(request)
        )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


async def _trusted_host(request: Request, call_next: Any) -> Response:
    if not host_allowed(request.url.hostname, state_of(request).allowed_hosts):
        return PlainTextResponse(
            "400: this server does not answer to that Host name "
            "(blobwatch serve --allowed-host NAME allows one)\n",
            status_code=400,
        )
    response: Response = await call_next(request)
    return response


# ---------------------------------------------------------------- errors


async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
    if request.url.path.startswith("/api") or request.method != "GET":
        return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}" for e in exc.errors()
    )
    return await _http_error(request, StarletteHTTPException(422, f"bad query: {problems}"))


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if request.url.path.startswith("/api") or request.url.path.endswith(
        (".png", ".fits", ".ecsv", ".reg", ".f32", ".json")
    ):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    with state_of(request).session_factory() as session:
        response = page(request, "error.html", "", session, status=exc.status_code, detail=exc.detail)
    response.status_code = exc.status_code
    response.headers.update(exc.headers or {})
    return response


async def _id_out_of_range(request: Request, exc: OverflowError) -> Response:
    # SQLite integers are 64-bit: a larger id (in the path, query or a form) names no row, and
    # binding it raises OverflowError ("Python int too large to convert to SQLite INTEGER")
    return await _http_error(request, StarletteHTTPException(404, "no such id (beyond the 64-bit range)"))
