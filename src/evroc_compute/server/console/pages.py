"""What /console/ serves: the login (open to anyone), the session's login and logout, the
sign-in with the server's OIDC issuer if it has one (oidc_login.py), and the console's own
files (only to a signed-in user; the data they show comes from the API, which authorizes every
request as it does kubectl's).

The files are plain HTML, CSS and JavaScript modules committed as they are served: no
front-end toolchain, no build step, nothing fetched from elsewhere (docs/console.md).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

import orjson

from evroc_compute.server import errors
from evroc_compute.server.auth.authn import Authenticator
from evroc_compute.server.auth.users import UserInfo
from evroc_compute.server.console import oidc_login, session
from evroc_compute.server.http import Request, Response

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
LOGIN_PAGE = f"{PREFIX}/login"
# What the login page needs before there is a session; none of it shows data.
PUBLIC_FILES = frozenset({"login.html", "login.js", "style.css"})
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
]


def is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(f"{PREFIX}/")


def public(req: Request) -> bool:
    """Whether the request may be made without a credential (the login and its files)."""
    name = _file_name(req.path)
    return name in PUBLIC_FILES or (req.path == f"{PREFIX}/session" and req.method == "POST") \
        or _is_oidc(req.path)


def _is_oidc(path: str) -> bool:
    return path == oidc_login.BASE or path.startswith(f"{oidc_login.BASE}/")


async def respond(req: Request, user: UserInfo, authenticator: Authenticator,
                  oidc: oidc_login.OidcLogin | None) -> Response:
    if req.path == f"{PREFIX}/session":
        return _session(req, user, authenticator)
    if _is_oidc(req.path):
        if oidc is None:
            raise errors.ApiError(404, "NotFound", "this server has no OIDC issuer to sign in "
                                  "with (serve --oidc-issuer-url); sign in with a token")
        return await oidc.respond(req)
    name = _file_name(req.path)
    if req.method not in ("GET", "HEAD"):
        raise errors.method_not_allowed(req.method, req.path)
    if name not in PUBLIC_FILES and user.anonymous:
        if name == "index.html":  # a page: send the browser to the login, then back
            return Response(303, b"", b"text/plain", [(b"location", LOGIN_PAGE.encode())])
        raise errors.ApiError(401, "Unauthorized", "Unauthorized: sign in to the console first")
    path = (STATIC / name).resolve()
    if not name or STATIC.resolve() not in path.parents or not path.is_file():
        raise errors.ApiError(404, "NotFound", f"the console has no file {req.path}")
    kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "text/plain"
    return Response(200, path.read_bytes(), f"{kind}; charset=utf-8".encode(),
                    list(_SECURITY_HEADERS))


def _file_name(path: str) -> str:
    """The static file a console path names: pages are .html files, the rest as named."""
    rest = path[len(PREFIX):].strip("/")
    if rest in ("", "index.html"):
        return "index.html"
    if rest == "login":
        return "login.html"
    return rest if rest.startswith(("js/",)) or "/" not in rest else ""


def _session(req: Request, user: UserInfo, authenticator: Authenticator) -> Response:
    """POST signs in with {"token": ...}; GET says who is signed in; DELETE signs out."""
    if req.method == "GET":
        if user.anonymous:
            raise errors.ApiError(401, "Unauthorized", "Unauthorized: not signed in")
        token = session.session_token(req)
        return _json({"user": user.as_dict(),
                      "csrfToken": session.csrf_token(token) if token else ""})
    if req.method == "DELETE":
        return _json({"signedOut": True}, session.logout_cookies())
    if req.method != "POST":
        raise errors.method_not_allowed(req.method, req.path)
    if req.content_type != "application/json":  # a cross-site form cannot send this
        raise errors.unsupported_media_type(req.content_type, ["application/json"])
    body = req.decode_body()
    pasted = body.get("token") if isinstance(body, dict) else None
    token = pasted.strip() if isinstance(pasted, str) else ""
    if not session.valid_token_syntax(token):
        raise errors.bad_request("paste a bearer token: the part after 'token:' in a kubeconfig "
                                 "that `evroc-compute credentials create NAME` printed",
                                 field="token", cause_type="FieldValueInvalid")
    signed_in = authenticator.authenticate(f"Bearer {token}", None)  # 401 if not valid
    return _json({"user": signed_in.as_dict(), "csrfToken": session.csrf_token(token)},
                 session.login_cookies(token))


def _json(value: object, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(200, orjson.dumps(value), headers=[(b"cache-control", b"no-store"),
                                                        *(headers or [])])
