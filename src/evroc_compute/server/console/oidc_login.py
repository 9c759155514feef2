"""Signing in to the console with the server's OpenID Connect issuer (`serve --oidc-*`): the
authorization-code flow with PKCE (S256), `state` and `nonce`.

- `GET /console/oidc` tells the login page which issuer to offer (404 without one).
- `GET /console/oidc/login` starts a sign-in: a fresh state, nonce and PKCE verifier go into a
  short-lived HttpOnly cookie sealed with an HMAC of the server's key (no table: any server that
  shares the PKI directory finishes a sign-in another one started), and the browser is sent to
  the issuer's `authorization_endpoint`.
- `GET /console/oidc/callback?code=...&state=...` checks the state against the cookie, trades the
  code (with the verifier, and the client secret if there is one) at the `token_endpoint`, and
  checks the ID token with the same `OidcAuthenticator` the API uses, nonce included. The ID
  token then becomes the session exactly as a pasted token does (session.py): the session ends
  when the ID token expires.

A refusal (the issuer's `error=...`, a state that does not match, a bad token) is a Status; a
browser is sent back to the login page, which shows it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass
from urllib.parse import quote, urlencode, urlsplit

import httpx
import orjson

from evroc_compute.server import errors
from evroc_compute.server.auth.authn import unauthorized
from evroc_compute.server.auth.oidc import OidcAuthenticator
from evroc_compute.server.console import session
from evroc_compute.server.http import Request, Response

BASE = "/console/oidc"
CALLBACK = f"{BASE}/callback"
LOGIN_COOKIE = "evroc-oidc-login"
LIFETIME = 600  # seconds a sign-in may spend at the issuer
DEFAULT_SCOPES = "openid email profile"
# The session cookie is SameSite=Strict, and Chromium leaves it off a request that ends a
# redirect chain which passed through the issuer: a 303 to /console/ would land signed out.
# A page of our own that moves on is a same-site navigation, which carries it.
SIGNED_IN_PAGE = (b'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                  b'<meta http-equiv="refresh" content="0;url=/console/">'
                  b"<title>Signed in</title></head><body><p>Signed in. "
                  b'<a href="/console/">Open the console</a>.</p></body></html>')


@dataclass(frozen=True)
class Login:
    """One sign-in in progress, as its cookie carries it."""

    state: str
    nonce: str
    verifier: str  # PKCE: the issuer gets its S256 challenge now and the verifier with the code
    redirect_uri: str
    expires: int

    @classmethod
    def new(cls, redirect_uri: str, now: float) -> Login:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                   secrets.token_urlsafe(48), redirect_uri, int(now) + LIFETIME)


def challenge(verifier: str) -> str:
    """PKCE's S256 code challenge of a verifier (RFC 7636)."""
    return _b64(hashlib.sha256(verifier.encode()).digest())


def seal(login: Login, key: bytes) -> str:
    payload = _b64(orjson.dumps(asdict(login)))
    return f"{payload}.{_mac(payload, key)}"


def unseal(value: str, key: bytes, now: float) -> Login:
    """The sign-in a cookie carries; ValueError saying why it cannot be used."""
    payload, _, mac = value.partition(".")
    if not payload or not hmac.compare_digest(mac.encode(), _mac(payload, key).encode()):
        raise ValueError("this browser has no sign-in in progress here (its sign-in cookie is "
                         "missing or was not made by this server)")
    try:
        login = Login(**orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (ValueError, TypeError):
        raise ValueError("the sign-in cookie is not readable") from None
    if login.expires <= now:
        raise ValueError(f"the sign-in took longer than {LIFETIME // 60} minutes")
    return login


def authorize_url(endpoint: str, client_id: str, scopes: str, login: Login) -> str:
    query = urlencode({"response_type": "code", "client_id": client_id, "scope": scopes,
                       "redirect_uri": login.redirect_uri, "state": login.state,
                       "nonce": login.nonce, "code_challenge": challenge(login.verifier),
                       "code_challenge_method": "S256"})
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def callback_code(query: dict[str, str], login: Login, issuer: str) -> str:
    """The authorization code of a callback that answers `login`, or the refusal."""
    if query.get("error"):
        said = query.get("error_description", "")
        raise unauthorized(f"the issuer {issuer} refused the sign-in: {query['error']}"
                           + (f": {said}" if said else ""))
    if not hmac.compare_digest(query.get("state", "").encode(), login.state.encode()):
        raise errors.forbidden("the callback's state is not the one of the sign-in this browser "
                               "started (a forged or replayed callback); sign in again")
    code = query.get("code", "")
    if not code:
        raise errors.bad_request("the issuer's callback carries no authorization code",
                                 field="code", cause_type="FieldValueRequired")
    return code


def issuer_name(issuer_url: str) -> str:
    """How the login page names the issuer: its host (and port)."""
    return urlsplit(issuer_url).netloc or issuer_url


class OidcLogin:
    """The console's sign-in with one issuer; `key` seals the sign-in cookie."""

    def __init__(self, oidc: OidcAuthenticator, key: bytes, scopes: str = DEFAULT_SCOPES) -> None:
        self.oidc, self.key, self.scopes = oidc, key, scopes

    async def respond(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed(req.method, req.path)
        issuer = self.oidc.config.issuer_url
        if req.path == BASE:
            return Response(200, orjson.dumps({"issuer": issuer, "name": issuer_name(issuer)}),
                            headers=[(b"cache-control", b"no-store")])
        if req.path == f"{BASE}/login":
            return await self._start(req)
        if req.path == CALLBACK:
            return await self._finish(req)
        raise errors.ApiError(404, "NotFound", f"the console has no page {req.path}")

    async def _start(self, req: Request) -> Response:
        authorize, _ = await self._endpoints()
        login = Login.new(f"https://{req.headers.get('host', '')}{CALLBACK}", time.time())
        url = authorize_url(authorize, self.oidc.config.client_id, self.scopes, login)
        return Response(303, b"", b"text/plain", [
            (b"location", url.encode()), (b"cache-control", b"no-store"),
            (b"set-cookie", self._login_cookie(seal(login, self.key), LIFETIME))])

    async def _finish(self, req: Request) -> Response:
        forget = (b"set-cookie", self._login_cookie("", 0))
        try:
            token = await self._sign_in(req)
        except errors.ApiError as refusal:
            if "text/html" not in req.accept:
                raise
            message = refusal.message if refusal.message.startswith(refusal.reason) \
                else f"{refusal.reason}: {refusal.message}"
            return Response(303, b"", b"text/plain", [
                (b"location", f"/console/login?{urlencode({'error': message})}".encode()),
                (b"cache-control", b"no-store"), forget])
        return Response(200, SIGNED_IN_PAGE, b"text/html; charset=utf-8", [
            (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
            forget, *session.login_cookies(token)])

    async def _sign_in(self, req: Request) -> str:
        """The callback's ID token, checked, or the refusal."""
        try:
            login = unseal(session.cookies(req).get(LOGIN_COOKIE, ""), self.key, time.time())
        except ValueError as problem:
            raise errors.bad_request(f"{problem}; sign in again") from None
        code = callback_code(req.query, login, self.oidc.config.issuer_url)
        token = await self._exchange(code, login)
        if not session.valid_token_syntax(token):
            raise unauthorized("the issuer's ID token is too long for a cookie (over 4096 "
                               "characters) or not a JWT; sign in with a token instead")
        await asyncio.to_thread(self.oidc.authenticate, token, login.nonce)  # 401 if not valid
        return token

    async def _exchange(self, code: str, login: Login) -> str:
        """The ID token the issuer's token endpoint gives for `code`."""
        _, endpoint = await self._endpoints()
        config = self.oidc.config
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": login.redirect_uri, "code_verifier": login.verifier,
                "client_id": config.client_id}
        headers = {"accept": "application/json"}
        if config.client_secret:  # client_secret_basic (RFC 6749 2.3.1: both parts form-encoded)
            pair = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
            headers["authorization"] = f"Basic {base64.b64encode(pair.encode()).decode()}"
        try:
            async with httpx.AsyncClient(verify=self.oidc.tls(),
                                         timeout=self.oidc.timeout) as http:
                reply = await http.post(endpoint, data=form, headers=headers)
            answer = reply.json()
        except (httpx.HTTPError, ValueError) as problem:
            raise errors.unavailable(f"the issuer's token endpoint {endpoint} did not answer: "
                                     f"{problem}") from None
        if not isinstance(answer, dict):
            answer = {}
        if reply.status_code != 200:
            said = answer.get("error_description", "")
            raise unauthorized(f"the issuer refused the authorization code: "
                               f"{answer.get('error', reply.status_code)}"
                               + (f": {said}" if said else ""))
        token = answer.get("id_token")
        if not isinstance(token, str) or not token:
            raise unauthorized("the issuer's token answer has no id_token (is `openid` among "
                               "the client's scopes?)")
        return token

    async def _endpoints(self) -> tuple[str, str]:
        try:
            return await asyncio.to_thread(self.oidc.endpoints)
        except (httpx.HTTPError, ValueError, KeyError) as problem:
            raise errors.unavailable(f"the issuer {self.oidc.config.issuer_url} cannot be "
                                     f"reached for its discovery document: {problem}") from None

    def _login_cookie(self, value: str, max_age: int) -> bytes:
        # Lax, not Strict: the issuer's redirect back to the callback is a cross-site navigation.
        return (f"{LOGIN_COOKIE}={value}; Path={BASE}; Secure; HttpOnly; SameSite=Lax; "
                f"Max-Age={max_age}").encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(payload: str, key: bytes) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
