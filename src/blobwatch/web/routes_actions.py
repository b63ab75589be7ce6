"""The review app's write actions: confirm or reject a candidate, send an image to DS9, and unlock
writing with the write token.

Each is an HTML form post checked by `blobwatch.web.security` (CSRF token, then the write token
where one is required, wrong tokens throttled per client) and answered with a redirect back to
a page of this server. Confirm and reject call `blobwatch.monitor.catalog.confirm_candidate` /
`reject_candidate`, the same code path as ``blobwatch catalog confirm/reject``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from blobwatch.errors import BlobwatchError
from blobwatch.monitor.db import Candidate
from blobwatch.web import queries
from blobwatch.web.samp import SampError
from blobwatch.web.security import AUTH_COOKIE, CSRF_FIELD, TOKEN_HEADER, client_key, served_over_https
from blobwatch.web.state import KIND_TITLES, AppState, candidate_or_404, db, image_or_404, state_of
from blobwatch.web.templating import page

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: Where a form may send the browser back to: a plain path on this server.
_LOCAL_PATH = re.compile(r"/(?:[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*)?")


class _FormError(ValueError):
    """A review form field is missing or wrong (shown beside the form, not as an error page)."""


async def _checked_form(request: Request) -> dict[str, str]:
    """The posted form's text fields; 403 unless its CSRF token fits the browser's cookie."""
    form = await request.form()
    fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    if not state_of(request).guard.csrf_ok(request, fields.get(CSRF_FIELD)):
        raise HTTPException(403, "cross-site request refused: reload the page and try again")
    return fields


def _refuse_if_throttled(request: Request) -> None:
    wait = state_of(request).guard.throttle.retry_after(client_key(request))
    if wait > 0:
        raise HTTPException(
            429,
            f"too many wrong write tokens: try again in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )


def _require_write(request: Request) -> None:
    guard = state_of(request).guard
    if guard.require_token and TOKEN_HEADER in request.headers:
        _refuse_if_throttled(request)
    if not guard.write_allowed(request):
        raise HTTPException(403, "write token required: unlock the app first (/unlock)")


def _review_fields(fields: dict[str, str]) -> str:
    reviewer = fields.get("reviewer", "").strip()
    if not reviewer or len(reviewer) > 128:
        raise _FormError("give your name (at most 128 characters) as reviewer")
    return reviewer


def _form_again(request: Request, candidate_id: int, problem: str) -> HTMLResponse:
    """The candidate's page with its review form and ``problem`` beside it (status 422)."""
    with state_of(request).session_factory() as session:
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


def _back(request: Request, fields: dict[str, str], **params: Any) -> RedirectResponse:
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


def _decide(state: AppState, candidate_id: int, verb: str, action: Callable[[Session], Any]) -> Any:
    """Run a catalog decision on one candidate in its own session (404, 409 on refusal)."""
    with state.session_factory() as session:
        if session.get(Candidate, candidate_id) is None:
            raise HTTPException(404, f"no candidate with id {candidate_id}")
        try:
            return action(session)
        except BlobwatchError as exc:
            session.rollback()
            raise HTTPException(409, f"candidate {candidate_id} not {verb}: {exc}") from exc


@router.post("/candidates/{candidate_id}/confirm")
async def confirm(candidate_id: int, request: Request) -> Response:
    from blobwatch.monitor.catalog import confirm_candidate, measure_in_stack

    state = state_of(request)
    fields = await _checked_form(request)
    _require_write(request)
    try:
        reviewer = _review_fields(fields)
    except _FormError as exc:
        return await run_in_threadpool(_form_again, request, candidate_id, str(exc))
    same_as = fields.get("same_as")
    if same_as is not None:
        if not (same_as.isdigit() and len(same_as) < 19):  # an SQLite integer
            raise HTTPException(422, "same_as must be a catalog blob id")
        blob = await run_in_threadpool(
            _decide,
            state,
            candidate_id,
            "recorded",
            lambda session: confirm_candidate(session, candidate_id, reviewer=reviewer, same_as=int(same_as)),
        )
        log.info("candidate %d recorded by %s as blob %d seen again", candidate_id, reviewer, blob.id)
        return _back(request, fields, done="same", candidate=candidate_id, blob=blob.id)

    def action(session: Session) -> Any:
        # the candidate page usually left its image's stack in memory: measure there rather
        # than re-read the image and its references (same arrays, same measurement)
        cand = session.get(Candidate, candidate_id)
        arrays = state.pixels.cached(cand.image_id, cand.run_id) if cand is not None else None
        measurement = None
        if cand is not None and arrays is not None and "stack" in arrays:
            try:
                measurement = measure_in_stack(cand, arrays["image"], arrays["stack"])
            except BlobwatchError:  # confirm_candidate measures again and says why
                measurement = None
        return confirm_candidate(
            session, candidate_id, reviewer=reviewer, images_dir=state.images_dir, measurement=measurement
        )

    # measuring may re-read the image and its references: off the event loop
    blob = await run_in_threadpool(_decide, state, candidate_id, "confirmed", action)
    log.info("candidate %d confirmed by %s as blob %d", candidate_id, reviewer, blob.id)
    return _back(request, fields, done="confirmed", candidate=candidate_id, blob=blob.id)


@router.post("/candidates/{candidate_id}/reject")
async def reject(candidate_id: int, request: Request) -> Response:
    from blobwatch.monitor.catalog import reject_candidate

    fields = await _checked_form(request)
    _require_write(request)
    reason = fields.get("reason", "")
    try:
        reviewer = _review_fields(fields)
        if reason not in queries.REJECT_REASONS:
            raise _FormError(f"reason must be one of: {', '.join(queries.REJECT_REASONS)}")
    except _FormError as exc:
        return await run_in_threadpool(_form_again, request, candidate_id, str(exc))
    note = fields.get("note", "").strip()[:500]
    if note:
        reason = f"{reason}: {note}"
    await run_in_threadpool(
        _decide,
        state_of(request),
        candidate_id,
        "rejected",
        lambda session: reject_candidate(session, candidate_id, reason=reason, reviewer=reviewer),
    )
    log.info("candidate %d rejected by %s (%s)", candidate_id, reviewer, reason)
    return _back(request, fields, done="rejected", candidate=candidate_id)


@router.post("/images/{image_id}/ds9")
async def open_in_ds9(image_id: int, request: Request) -> Response:
    """Send the image's ``kind`` FITS download and its region file to DS9 over SAMP."""
    from blobwatch.web.downloads import image_regions_bytes

    state = state_of(request)
    fields = await _checked_form(request)
    if state.guard.require_token:  # DS9 would open on the server's screen, not the reviewer's
        raise HTTPException(404, "open in DS9 is offered only by an app on this machine (loopback)")
    kind = fields.get("kind", "")
    if kind not in KIND_TITLES:
        raise HTTPException(422, f"kind must be one of: {', '.join(KIND_TITLES)}")

    def send() -> None:
        with state.session_factory() as session:
            regions = image_regions_bytes(session, image_or_404(session, image_id))
        url = f"{str(request.base_url).rstrip('/')}/images/{image_id}/{kind}.fits"
        state.samp.send(url, f"image{image_id}_{kind}", regions)

    try:
        await run_in_threadpool(send)
    except SampError as exc:
        raise HTTPException(409, str(exc)) from None
    return _back(request, fields, done="ds9", image=image_id)


@router.get("/unlock", response_class=HTMLResponse)
def unlock_page(request: Request, session: Session = Depends(db)) -> HTMLResponse:
    return page(request, "unlock.html", "", session)


@router.post("/unlock")
async def unlock(request: Request) -> Response:
    guard = state_of(request).guard
    fields = await _checked_form(request)
    if not guard.require_token:
        return RedirectResponse("/queue", status_code=303)
    _refuse_if_throttled(request)
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
