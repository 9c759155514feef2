"""A small OpenID Connect issuer for the tests: HTTPS on loopback with its own CA, a discovery
document, a key set, and the authorization-code flow with PKCE (an authorize endpoint that
approves at once as `Issuer.user`, or refuses with `Issuer.deny`, and a token endpoint)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from evroc_compute.server.auth.pki import Pki

CLIENT_ID = "evroc-compute"


@dataclass
class Issuer:
    url: str
    ca: Path
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    published: list[str] = field(default_factory=list)  # the kids its key set shows
    fetches: int = 0
    # The authorization-code flow: who the authorize endpoint signs in (at once, no page),
    # or the error it answers instead; the client secret the token endpoint wants, if any.
    user: str = "alice"
    groups: list[str] = field(default_factory=lambda: ["developers", "team-a"])
    deny: tuple[str, str] | None = None  # (error, error_description)
    client_secret: str = ""
    nonce: str | None = None  # puts this nonce in ID tokens instead of the one asked for
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_refusals: list[str] = field(default_factory=list)

    def add_key(self, kid: str, key: Any) -> None:
        self.keys[kid] = key
        self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            key = self.keys[kid]
            codec = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
            jwk = codec.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, kid: str = "rsa-1", *, key: Any = None, lifetime: float = 300,
              **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": CLIENT_ID, "sub": "alice", "iat": now,
                "exp": now + lifetime, "groups": ["developers", "team-a"], **claims}
        signer = key or self.keys[kid]
        algorithm = "RS256" if isinstance(signer, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, signer, algorithm=algorithm, headers={"kid": kid})

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.url, "jwks_uri": f"{self.url}/keys",
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"]}

    def authorize(self, query: dict[str, str]) -> str:
        """Where the authorize endpoint sends the browser back to (it asks nothing)."""
        self.authorize_requests.append(query)
        back = query["redirect_uri"]
        if self.deny is not None:
            answer = {"error": self.deny[0], "error_description": self.deny[1]}
        elif query.get("client_id") != CLIENT_ID or query.get("response_type") != "code" \
                or query.get("code_challenge_method") != "S256":
            answer = {"error": "invalid_request", "error_description": "not a PKCE code request"}
        else:
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"user": self.user, "nonce": query.get("nonce", ""),
                                "challenge": query["code_challenge"], "redirect_uri": back}
            answer = {"code": code}
        return f"{back}?{urlencode({**answer, 'state': query.get('state', '')})}"

    def exchange(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (status, JSON answer)."""
        grant = self.codes.pop(form.get("code", ""), None)  # a code is good once
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        client = _basic(authorization)
        problem = ("unknown or used code" if grant is None else
                   "wrong redirect_uri" if form.get("redirect_uri") != grant["redirect_uri"] else
                   "PKCE verifier does not match" if challenge != grant["challenge"] else
                   "bad client credentials" if self.client_secret and client != (CLIENT_ID,
                                                                                 self.client_secret)
                   else "")
        if form.get("grant_type") != "authorization_code":
            problem = "unsupported grant_type"
        if problem or grant is None:
            self.token_refusals.append(problem)
            return 400, {"error": "invalid_grant", "error_description": problem}
        nonce = grant["nonce"] if self.nonce is None else self.nonce
        id_token = self.token(sub=grant["user"], nonce=nonce, groups=self.groups)
        return 200, {"id_token": id_token, "access_token": secrets.token_urlsafe(16),
                     "token_type": "Bearer", "expires_in": 300}


def _basic(authorization: str) -> tuple[str, str]:
    """client_secret_basic's (client id, secret): both form-decoded (RFC 6749 2.3.1)."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme != "Basic":
        return "", ""
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    return unquote_plus(user), unquote_plus(password)


@contextmanager
def running_issuer(directory: Path) -> Iterator[Issuer]:
    """An issuer on a free loopback port, its CA and serving certificate in `directory`."""
    pki = Pki(directory)
    pki.ensure(["127.0.0.1"])
    state: dict[str, Issuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = state["issuer"]
            path, _, query = self.path.partition("?")
            if path == "/.well-known/openid-configuration":
                self._json(200, found.discovery())
            elif path == "/keys":
                found.fetches += 1
                self._json(200, found.jwks())
            elif path == "/authorize":
                self.send_response(302)
                self.send_header("location", found.authorize(dict(parse_qsl(query))))
                self.send_header("content-length", "0")
                self.end_headers()
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/token":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            self._json(*state["issuer"].exchange(dict(parse_qsl(body)),
                                                 self.headers.get("authorization", "")))

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.serving_cert, pki.serving_key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    found = state["issuer"] = Issuer(f"https://127.0.0.1:{httpd.server_address[1]}", pki.ca_cert)
    found.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    found.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        httpd.shutdown()
        httpd.server_close()
