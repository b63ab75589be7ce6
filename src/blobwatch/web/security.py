"""Security of the review app: loopback detection, the Host allow-list, the write token and CSRF
protection, and the Content-Security-Policy of the responses (`CSP`).

Every request must name an allowed host in its ``Host`` header (`host_allowed`): the loopback
names, plus those given with ``blobwatch serve --allowed-host``.  A page from a hostile name that
resolves to 127.0.0.1 (DNS rebinding) sends that name, and gets 400 instead of a CSRF token.

Forms use a double-submit token bound to a cookie: the browser holds a random ``bw_csrf``
cookie (SameSite=Strict, HttpOnly) and every form carries ``HMAC(secret, cookie)``; a POST is
accepted only when the two agree and the ``Origin``/``Referer`` headers, when sent, name this
server. The secret is generated when the app starts, so forms from an earlier run are refused.

When a write token is required (the app is bound to a non-loopback address) a write action
must also present the token: in an ``X-Blobwatch-Token`` header, or once through the unlock
form, which gives that browser its own random write session in an HttpOnly cookie (each one can
be revoked alone: `Guard.revoke`).  Wrong tokens are throttled per client address
(`FailureThrottle`: 5 per minute, then 429 until the minute has passed).  Cookies are marked
``Secure`` when the app is served over https.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from urllib.parse import urlsplit

from starlette.requests import Request

from blobwatch.lru import LRUCache

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
#: Content-Security-Policy of every response: nothing from other origins, no inline scripts
#: or styles, no framing.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
#: Pages with the pixel viewer: BokehJS styles its widgets inline (scripts stay 'self').
CSP_VIEWER = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


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


class FailureThrottle:
    """At most ``limit`` failures per client within ``window`` seconds (thread-safe).

    Parameters
    ----------
    limit : int
        Failures allowed in any ``window``; the next attempt waits until the oldest one expires.
    window : float
        Seconds a failure counts.
    clock : callable
        Monotonic time in seconds (a fake one in tests).
    max_clients : int
        Clients remembered (`blobwatch.lru.LRUCache`: the least recently seen, failing or
        asking, are forgotten first).
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 4096,
    ) -> None:
        self.limit, self.window, self._clock = int(limit), float(window), clock
        self._failures: LRUCache[deque[float]] = LRUCache(max_clients)
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.peek(client) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            return 0.0 if len(times) < self.limit else max(times[0] + self.window - now, 0.0)

    def failed(self, client: str) -> None:
        """Record one failure of ``client``."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            times.append(now)
            self._failures.put(client, times)


class Guard:
    """CSRF tokens, write sessions and write-token checks for one running app.

    Parameters
    ----------
    token : str, optional
        The write token; needed when ``require_token`` is true.
    require_token : bool
        Whether write actions must present ``token``.
    secret : bytes, optional
        HMAC key; a fresh random one by default.
    throttle : FailureThrottle, optional
        Limit on wrong write tokens per client (default: 5 per minute).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        require_token: bool = False,
        secret: bytes | None = None,
        throttle: FailureThrottle | None = None,
    ) -> None:
        if require_token and not token:
            raise ValueError("require_token=True needs a non-empty token")
        self.token = token
        self.require_token = require_token
        self._secret = secret or secrets.token_bytes(32)
        self.throttle = throttle or FailureThrottle()
        self._sessions: set[str] = set()  # digests of the write-session cookies given out
        self._sessions_lock = threading.Lock()

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

    def new_write_session(self) -> str:
        """A fresh random write-session value for one browser's cookie (set by the unlock form)."""
        value = secrets.token_urlsafe(32)
        with self._sessions_lock:
            self._sessions.add(self._sign("write:" + value))
        return value

    def revoke(self, cookie_value: str | None = None) -> None:
        """End one browser's write session (its cookie value), or every session when None."""
        with self._sessions_lock:
            if cookie_value is None:
                self._sessions.clear()
            else:
                self._sessions.discard(self._sign("write:" + cookie_value))

    def _session_ok(self, cookie_value: str | None) -> bool:
        if not cookie_value:
            return False
        with self._sessions_lock:
            return self._sign("write:" + cookie_value) in self._sessions

    def token_matches(self, given: str | None) -> bool:
        """True when ``given`` is the write token (constant-time comparison)."""
        return (
            self.token is not None
            and given is not None
            and hmac.compare_digest(given.encode(), self.token.encode())
        )

    def write_allowed(self, request: Request) -> bool:
        """True when a write action may proceed as far as the write token is concerned.

        A wrong ``X-Blobwatch-Token`` header counts as a failure of the client (`throttle`).
        """
        if not self.require_token:
            return True
        given = request.headers.get(TOKEN_HEADER)
        if given is not None:
            if self.token_matches(given):
                return True
            self.throttle.failed(client_key(request))
        return self._session_ok(request.cookies.get(AUTH_COOKIE))


def client_key(request: Request) -> str:
    """The address a request came from (what `FailureThrottle` counts by)."""
    return request.client.host if request.client is not None else "unknown"


def served_over_https(request: Request) -> bool:
    """True when the request came over https: cookies are then marked ``Secure``."""
    return request.url.scheme == "https"


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
