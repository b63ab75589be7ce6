"""What the review app's routers share: its state, a database session per request, records by
id (or 404) and the names of the pixel arrays it serves.

`blobwatch.web.app.create_app` builds one `AppState` and keeps it in ``app.state.web``; a route
asks for it with ``state: AppState = Depends(get_state)`` and for a database session with
``session: Session = Depends(db)`` (closed when the response is sent).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import HTTPException, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from blobwatch.web import queries
from blobwatch.web.cache import Memo
from blobwatch.web.pixels import PixelStore
from blobwatch.web.samp import SampLink
from blobwatch.web.security import Guard

#: The pixel arrays of one image that figures, pixel and FITS routes serve.
ImageKind = Literal["image", "stack", "difference"]
#: Titles of those arrays in figures, pages and FITS headers.
KIND_TITLES = {"image": "current image", "stack": "median stack", "difference": "difference"}
#: Half-width of candidate cut-outs in pixels (a 49x49 box: blobs are 10-20 px across).
CUTOUT_HALF = 24


@dataclass(frozen=True)
class AppState:
    """Everything the routes of one app share (built once by `create_app`).

    Attributes
    ----------
    session_factory : sessionmaker
        Sessions on the monitor's database.
    guard : Guard
        The write token, CSRF secret, write sessions and wrong-token throttle.
    allowed_hosts : frozenset of str
        ``Host`` names answered besides the loopback names.
    images_dir : path-like or None
        Where blob images that moved since they were processed are looked for.
    templates : Jinja2Templates
        The pages' templates (`blobwatch.web.templating`).
    pixels : PixelStore
        Image, median stack and difference arrays by image id.
    samp : SampLink
        The link to DS9 over SAMP.
    pngs, summary_pngs : Memo of bytes
        Per-image figures (also on disk) and catalog-wide ones (in memory only).
    limits : Memo of (float, float)
        zscale limits of the viewer's pixels.
    viewer_specs : Memo of bytes
        The viewer's Bokeh figure per image shape (a good fraction of a second to build).
    """

    session_factory: sessionmaker[Session]
    guard: Guard
    allowed_hosts: frozenset[str]
    images_dir: str | Path | None
    templates: Jinja2Templates
    pixels: PixelStore
    samp: SampLink
    pngs: Memo[bytes]
    summary_pngs: Memo[bytes]
    limits: Memo[tuple[float, float]]
    viewer_specs: Memo[bytes]


def state_of(request: Request) -> AppState:
    """The `AppState` of the app that serves ``request``."""
    state: AppState = request.app.state.web
    return state


async def get_state(request: Request) -> AppState:
    """FastAPI dependency: the app's `AppState` (async: no worker thread needed to fetch it)."""
    return state_of(request)


def db(request: Request) -> Iterator[Session]:
    """FastAPI dependency: a database session for one request."""
    with state_of(request).session_factory() as session:
        yield session


def image_or_404(session: Session, image_id: int) -> queries.ImageView:
    """The image with ``image_id``, or an HTTP 404."""
    view = queries.get_image(session, image_id)
    if view is None:
        raise HTTPException(404, f"no image with id {image_id}")
    return view


def candidate_or_404(session: Session, candidate_id: int) -> queries.CandidateView:
    """The candidate with ``candidate_id``, or an HTTP 404."""
    view = queries.get_candidate(session, candidate_id)
    if view is None:
        raise HTTPException(404, f"no candidate with id {candidate_id}")
    return view
