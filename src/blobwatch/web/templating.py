"""The review app's server-rendered pages: the Jinja2 templates, their filters and the context
every page gets (navigation counts, CSRF token, reviewer name, lock state, the message after a
write action)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from blobwatch import __version__
from blobwatch.web import queries
from blobwatch.web.security import CSRF_FIELD
from blobwatch.web.state import KIND_TITLES, state_of

_TEMPLATES = Path(__file__).parent / "templates"


def make_templates() -> Jinja2Templates:
    """The app's templates with the ``fmt`` and ``utc`` filters."""
    templates = Jinja2Templates(directory=str(_TEMPLATES))
    templates.env.filters["fmt"] = _fmt
    templates.env.filters["utc"] = _utc
    return templates


def page(request: Request, name: str, active: str, session: Session, **context: Any) -> HTMLResponse:
    """Template ``name`` rendered with the context of every page and ``context``; ``active`` is
    the navigation entry to highlight."""
    state = state_of(request)
    done = request.query_params.get("done")
    return state.templates.TemplateResponse(
        request,
        name,
        {
            "active": active,
            "version": __version__,
            "open_count": queries.open_count(session),
            "csrf_field": CSRF_FIELD,
            "csrf_token": request.state.csrf_token,
            "reviewer": request.cookies.get("bw_reviewer", ""),
            "locked": state.guard.require_token and not state.guard.write_allowed(request),
            "require_token": state.guard.require_token,
            "flash": _flash(done, request.query_params),
            "reasons": queries.REJECT_REASONS,
            "cutout_kinds": list(KIND_TITLES.items()),
            **context,
        },
    )


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
