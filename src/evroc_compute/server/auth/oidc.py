"""OpenID Connect ID tokens as bearer tokens, as kube-apiserver's `--oidc-*` flags read them.

The issuer's keys come from its discovery document (`ISSUER/.well-known/openid-configuration`,
whose `jwks_uri` names the key set); they are cached and fetched again when a token names a key
this server does not know (the issuer rotated its keys), at most once per `refetch_interval`,
so a flood of made-up key ids cannot make the server hammer the issuer. A token is checked as
kube checks it: signature (RS256 or ES256), `iss` equal to the issuer URL, `aud` containing the
client id, `exp` in the future, `nbf` in the past (and, for the console's sign-in, `nonce` equal
to the one that sign-in sent). The user is the username claim, prefixed as
kube prefixes it (`ISSUER#sub` by default unless the claim is `email`; `-` means no prefix), and
the groups are the groups claim. Usernames and groups under `system:` are reserved for the
server's own identities and refused, so an issuer cannot hand out `system:masters`.

Fetching the keys blocks the request that needs them (a few milliseconds against a reachable
issuer, at most `timeout`); it happens once at first use and then only on a key rotation.
"""

from __future__ import annotations

import hmac
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from evroc_compute.server.auth.authn import unauthorized
from evroc_compute.server.auth.users import UserInfo, authenticated

log = logging.getLogger(__name__)
ALGORITHMS = ("RS256", "ES256")
RESERVED = "system:"


@dataclass(frozen=True)
class OidcConfig:
    issuer_url: str
    client_id: str
    username_claim: str = "sub"
    groups_claim: str = ""
    username_prefix: str = ""  # "" : kube's default; "-": none
    groups_prefix: str = ""
    ca_file: str = ""  # the CA that signs the issuer's certificate (default: the system's)
    client_secret: str = ""  # for the console's code exchange; "" for a public client (PKCE)

    def problems(self) -> list[str]:
        """What is wrong with the flags, for the command line to refuse them."""
        found = []
        if not self.issuer_url.startswith("https://"):
            found.append(f"--oidc-issuer-url must be an https:// URL, not {self.issuer_url!r}")
        if not self.client_id:
            found.append("--oidc-client-id is required with --oidc-issuer-url")
        return found

    @property
    def prefix(self) -> str:
        if self.username_prefix == "-":
            return ""
        if self.username_prefix:
            return self.username_prefix
        return "" if self.username_claim == "email" else f"{self.issuer_url}#"


class OidcAuthenticator:
    """A `TokenAuthenticator` for the ID tokens of one issuer."""

    def __init__(self, config: OidcConfig, *, refetch_interval: float = 1.0,
                 timeout: float = 5.0) -> None:
        self.config = config
        self.refetch_interval, self.timeout = refetch_interval, timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._document: dict[str, Any] = {}  # the discovery document, as last fetched
        self._fetched = float("-inf")
        self._lock = threading.Lock()

    def authenticate(self, token: str, nonce: str | None = None) -> UserInfo | None:
        """The token's user; with `nonce`, the token must carry that nonce (the console's
        sign-in checks that the ID token answers the request it made)."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None  # not a JWT: one of the server's own tokens, or garbage
        issuer = self.config.issuer_url
        if claims.get("iss") != issuer:
            raise unauthorized(f"the token's issuer {claims.get('iss')!r} is not trusted by this "
                               f"server (it trusts {issuer})")
        if header.get("alg") not in ALGORITHMS:
            raise unauthorized(f"the token is signed with {header.get('alg')!r}; this server "
                               f"accepts {', '.join(ALGORITHMS)}")
        key = self._key(str(header.get("kid", "")))
        try:
            verified: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(ALGORITHMS), audience=self.config.client_id,
                issuer=issuer, options={"require": ["exp", "iss", "aud"]}, leeway=0)
        except jwt.ExpiredSignatureError:
            raise unauthorized(f"the token expired at {_when(claims.get('exp'))}") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized(f"the token is not valid before {_when(claims.get('nbf'))}") \
                from None
        except jwt.InvalidAudienceError:
            raise unauthorized(f"the token's audience {claims.get('aud')!r} does not include "
                               f"this server's client id {self.config.client_id!r}") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("the token's signature does not verify with the issuer's key "
                               f"{header.get('kid')!r}") from None
        except jwt.PyJWTError as problem:
            raise unauthorized(f"the token is not valid: {problem}") from None
        if nonce is not None and not (isinstance(verified.get("nonce"), str) and
                                      hmac.compare_digest(verified["nonce"].encode(), nonce.encode())):
            raise unauthorized("the ID token's nonce is not the one this sign-in sent (a token "
                               "issued for another sign-in)")
        return self._user(verified)

    def _user(self, claims: dict[str, Any]) -> UserInfo:
        config = self.config
        name = claims.get(config.username_claim)
        if not isinstance(name, str) or not name:
            raise unauthorized(f"the token has no {config.username_claim!r} claim (the "
                               "username claim)")
        if config.username_claim == "email" and claims.get("email_verified") is False:
            raise unauthorized("the token's email is not verified (email_verified is false)")
        groups = claims.get(config.groups_claim, []) if config.groups_claim else []
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise unauthorized(f"the token's {config.groups_claim!r} claim (the groups claim) "
                               "must be a string or a list of strings")
        user = config.prefix + name
        groups = [config.groups_prefix + g for g in groups]
        reserved = [n for n in (user, *groups) if n.startswith(RESERVED)]
        if reserved:
            raise unauthorized(f"the token names {reserved[0]!r}: names beginning with "
                               f"{RESERVED} are reserved for the server's own identities")
        return authenticated(user, tuple(groups), extra={"iss": (config.issuer_url,)})

    # ---- the issuer's keys --------------------------------------------------------------

    def _key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched >= self.refetch_interval:
                self._fetched = time.monotonic()
                try:
                    self._keys = self._fetch_keys()
                except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWTError) as problem:
                    log.warning("fetching the keys of OIDC issuer %s failed: %s",
                                self.config.issuer_url, problem)
                    raise unauthorized(f"the keys of issuer {self.config.issuer_url} cannot be "
                                       "fetched now; retry later") from None
            key = self._keys.get(kid)
        if key is None:
            raise unauthorized(f"the token's key id {kid!r} is not one of issuer "
                               f"{self.config.issuer_url}'s keys")
        return key

    def tls(self) -> ssl.SSLContext | bool:
        """What verifies the issuer's certificate (httpx's `verify`)."""
        return ssl.create_default_context(cafile=self.config.ca_file) if self.config.ca_file \
            else True

    def endpoints(self) -> tuple[str, str]:
        """The issuer's authorization and token endpoints, from its discovery document (fetched
        once; again with the keys). Raises an httpx.HTTPError, ValueError or KeyError."""
        with self._lock:
            if not self._document:
                with httpx.Client(verify=self.tls(), timeout=self.timeout) as http:
                    self._document = self._discover(http)
            document = self._document
        return str(document["authorization_endpoint"]), str(document["token_endpoint"])

    def _discover(self, http: httpx.Client) -> dict[str, Any]:
        issuer = self.config.issuer_url.rstrip("/")
        discovery = http.get(f"{issuer}/.well-known/openid-configuration")
        discovery.raise_for_status()
        document: dict[str, Any] = discovery.json()
        if document.get("issuer") != self.config.issuer_url:
            raise ValueError(f"the discovery document names issuer {document.get('issuer')!r}")
        return document

    def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        with httpx.Client(verify=self.tls(), timeout=self.timeout) as http:
            self._document = document = self._discover(http)
            found = http.get(document["jwks_uri"])
            found.raise_for_status()
            keys = found.json()["keys"]
        return {str(k.get("kid", "")): jwt.PyJWK(k) for k in keys
                if k.get("use", "sig") == "sig" and k.get("kty") in ("RSA", "EC")}


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return "an unknown time"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
