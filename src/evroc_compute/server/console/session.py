"""The console's session: the bearer token a user pasted, kept in a cookie.

The cookie holds the token itself (HttpOnly, Secure, SameSite=Strict), so every request is
authenticated exactly as kubectl's would be (a revoked or expired token ends the session at
once) and every server behind a load balancer accepts it: there is no session table.

Writes need a CSRF header too (a signed double submit): its value is an HMAC of the token,
which the page learns at login (and from a readable cookie) but a forging site cannot compute,
since it never sees the token. Reads need no header: SameSite=Strict keeps other sites'
requests from carrying the cookie, and a read changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import CookieError, SimpleCookie

from evroc_compute.server import errors
from evroc_compute.server.http import Request

SESSION_COOKIE = "evroc-session"
CSRF_COOKIE = "evroc-csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), b"evroc-compute console csrf", hashlib.sha256).hexdigest()


def cookies(req: Request) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(req.headers.get("cookie", ""))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def session_token(req: Request) -> str:
    """The token of the request's session cookie, "" without one."""
    return cookies(req).get(SESSION_COOKIE, "")


def authorization(req: Request) -> str:
    """The Authorization header the session stands for ("" without a session). A write must
    carry the CSRF header that matches the session, else it is refused with 403."""
    token = session_token(req)
    if not token:
        return ""
    if req.method not in SAFE_METHODS and not hmac.compare_digest(
            req.headers.get(CSRF_HEADER, "").encode(), csrf_token(token).encode()):
        raise errors.forbidden(
            f"{req.method} {req.path} is forbidden: a write made with the console's session "
            f"cookie must carry the {CSRF_HEADER} header of that session (the console sends it; "
            "other clients should send a bearer token instead)")
    return f"Bearer {token}"


def _cookie(name: str, value: str, *, http_only: bool, max_age: int | None = None) -> bytes:
    parts = [f"{name}={value}", "Path=/", "Secure", "SameSite=Strict"]
    if http_only:
        parts.append("HttpOnly")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts).encode()


def login_cookies(token: str) -> list[tuple[bytes, bytes]]:
    """Set-Cookie headers that open a session (browser-session cookies: gone when it closes)."""
    return [(b"set-cookie", _cookie(SESSION_COOKIE, token, http_only=True)),
            (b"set-cookie", _cookie(CSRF_COOKIE, csrf_token(token), http_only=False))]


def logout_cookies() -> list[tuple[bytes, bytes]]:
    return [(b"set-cookie", _cookie(SESSION_COOKIE, "", http_only=True, max_age=0)),
            (b"set-cookie", _cookie(CSRF_COOKIE, "", http_only=False, max_age=0))]


def valid_token_syntax(token: str) -> bool:
    """Whether `token` can be carried by a cookie unchanged (issued tokens and JWTs can)."""
    return 0 < len(token) <= 4096 and all(c.isalnum() or c in "-._~+/=" for c in token)
