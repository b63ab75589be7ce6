"""Security of the review app: loopback detection, the Host allow-list, the write token and CSRF
protection.

Every request must name an allowed host in its ``Host`` header (`host_allowed`): the loopback
names, plus those given with ``blobwatch serve --allowed-host``.  A page from a hostile name that
resolves to 127.0.0.1 (DNS rebinding) sends that name, and gets 400 instead of a CSRF token.

Forms use a double-submit token bound to a cookie: the browser holds a random ``bw_csrf``
cookie (SameSite=Strict, HttpOnly) and every form carries ``HMAC(secret, cookie)``; a POST is
accepted only when the two agree and the ``Origin``/``Referer`` headers, when sent, name this
server. The secret is generated when the app starts, so forms from an earlier run are refused.

When a write token is required (the app is bound to a non-loopback address) a write action
must also present the token: in an ``X-Blobwatch-Token`` header, or once through the unlock
form, which stores ``HMAC(secret, "write")`` in an HttpOnly cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.requests import Request

#: Cookie that holds the random CSRF value.
CSRF_COOKIE = "bw_csrf"
#: Form field that carries the signed CSRF value.
CSRF_FIELD = "csrf_token"
#: Cookie set by the unlock form once the write token was given.
AUTH_COOKIE = "bw_write"
#: Header that can carry the write token (scripts, tests).
TOKEN_HEADER = "x-blobwatch-token"
#: Environment variable that holds the write token for ``blobwatch serve``.
TOKEN_ENV = "BLOBWATCH_TOKEN"


def is_loopback(host: str) -> bool:
    """True when ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(hostname: str | None, allowed: Collection[str] = ()) -> bool:
    """True when a request's ``Host`` name (without port) is a loopback name or in ``allowed``.

    Names are compared case-insensitively, without a trailing dot; ``allowed`` holds lower-case
    names or addresses (IPv6 without brackets).
    """
    if not hostname:
        return False
    name = hostname.strip().lower().rstrip(".").strip("[]")
    return is_loopback(name) or name in allowed


def allowed_host_name(value: str) -> str:
    """The form `host_allowed` compares: ``value`` in lower case, without brackets or trailing dot.

    Raises
    ------
    ValueError
        ``value`` is empty or holds a port, a path or spaces.
    """
    name = value.strip().lower().rstrip(".")
    bare = name.strip("[]")
    if not bare or any(c in name for c in "/@ \t") or (":" in bare and not _is_ip(bare)):
        raise ValueError(f"{value!r} is not a host name or address (give it without port or scheme)")
    return bare


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class Guard:
    """CSRF tokens and write-token checks for one running app.

    Parameters
    ----------
    token : str, optional
        The write token; needed when ``require_token`` is true.
    require_token : bool
        Whether write actions must present ``token``.
    secret : bytes, optional
        HMAC key; a fresh random one by default.
    """

    def __init__(self, *, token: str | None = None, require_token: bool = False,
                 secret: bytes | None = None) -> None:
        if require_token and not token:
            raise ValueError("require_token=True needs a non-empty token")
        self.token = token
        self.require_token = require_token
        self._secret = secret or secrets.token_bytes(32)

    def _sign(self, value: str) -> str:
        return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def new_cookie_value() -> str:
        """A fresh random value for the CSRF cookie."""
        return secrets.token_urlsafe(24)

    def form_token(self, cookie_value: str) -> str:
        """The token a form must carry for the CSRF cookie ``cookie_value``."""
        return self._sign("csrf:" + cookie_value)

    def csrf_ok(self, request: Request, submitted: str | None) -> bool:
        """True when the CSRF cookie and the submitted form token agree and the origin is ours."""
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not submitted:
            return False
        if not hmac.compare_digest(self.form_token(cookie), submitted):
            return False
        return same_origin(request)

    def auth_cookie_value(self) -> str:
        """Value of the cookie that the unlock form sets."""
        return self._sign("write:" + (self.token or ""))

    def token_matches(self, given: str | None) -> bool:
        """True when ``given`` is the write token (constant-time comparison)."""
        return bool(self.token) and given is not None and hmac.compare_digest(
            given.encode(), self.token.encode())  # type: ignore[union-attr]

    def write_allowed(self, request: Request) -> bool:
        """True when a write action may proceed as far as the write token is concerned."""
        if not self.require_token:
            return True
        if self.token_matches(request.headers.get(TOKEN_HEADER)):
            return True
        cookie = request.cookies.get(AUTH_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie, self.auth_cookie_value())


def same_origin(request: Request) -> bool:
    """False when the ``Origin`` or ``Referer`` header names another site than this server.

    Browsers send ``Origin`` on cross-site form posts; a request that sends neither header
    (curl, test clients) is left to the CSRF token.
    """
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    if referer is not None:
        return urlsplit(referer).netloc == host
    return True
