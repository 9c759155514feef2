"""Authentication: who sent a request, from its client certificate or bearer token.

In order, as kube-apiserver's union authenticator: a client certificate the TLS layer verified
against the client CA (CN = user, O = groups), a bearer token (one the server issued, or an OIDC
ID token when an issuer is configured), else the anonymous user, who may reach only the public
paths. A failure is a 401 Status that says what was wrong with the credential presented, never
whether a user exists: an unknown token and a wrong secret read the same.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from evroc_compute.api.identity import CREDENTIAL
from evroc_compute.server import errors
from evroc_compute.server.auth.users import ANONYMOUS_USER, UserInfo, authenticated
from evroc_compute.store.base import Entry

CERT_PREFIX = "cert-"  # a certificate's Credential is named after its serial number
CLIENT_CERT = "evroc.client_certificate"  # the ASGI scope extension that carries it


@dataclass(frozen=True)
class ClientCertificate:
    """The verified peer certificate of a TLS connection (set by the connection protocol)."""

    common_name: str
    organizations: tuple[str, ...]
    serial: str  # hex


def unauthorized(detail: str) -> errors.ApiError:
    return errors.ApiError(401, "Unauthorized", f"Unauthorized: {detail}")


class TokenAuthenticator(Protocol):
    """A way to read a bearer token (OIDC): the user, None if the token is not its kind, or
    a 401 ApiError if it is its kind and is not valid."""

    def authenticate(self, token: str) -> UserInfo | None: ...


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def certificate_credential_name(serial: str) -> str:
    return f"{CERT_PREFIX}{serial.lower()}"


class Authenticator:
    """Reads credentials from the store's memory (`lookup`), so a revocation or an expiry takes
    effect on the next request."""

    def __init__(self, lookup: Callable[[str], Entry | None],
                 tokens: tuple[TokenAuthenticator, ...] = (),
                 admin_certificates: tuple[str, ...] = ()) -> None:
        self.lookup = lookup
        self.tokens = tokens
        self.admin_certificates = frozenset(s.lower() for s in admin_certificates)

    def authenticate(self, authorization: str, certificate: ClientCertificate | None) -> UserInfo:
        if certificate is not None:
            return self._certificate(certificate)
        if not authorization:
            return ANONYMOUS_USER
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        for other in self.tokens:
            user = other.authenticate(token)
            if user is not None:
                return user
        return self._token(token)

    def _certificate(self, cert: ClientCertificate) -> UserInfo:
        """The PKI's own certificates (admin, controller manager, fleet simulator; by serial
        number) need no record, as kubeadm's; every other certificate, system:masters ones
        included, must have a Credential that is not revoked, so that every issued certificate
        can be revoked."""
        if cert.serial.lower() not in self.admin_certificates:
            spec = self._credential(certificate_credential_name(cert.serial), "certificate")
            if spec is None:
                raise unauthorized("the client certificate is not (or no longer) known to this "
                                   "server; ask an admin for a new one")
            _check_live(spec, "client certificate")
        return authenticated(cert.common_name, cert.organizations)

    def _token(self, token: str) -> UserInfo:
        name, _, secret = token.partition(".")
        spec = self._credential(name, "token") if secret else None
        if spec is None or not hmac.compare_digest(str(spec.get("tokenHash", "")),
                                                   token_hash(secret)):
            raise unauthorized("the bearer token is not valid")
        _check_live(spec, "token")
        return authenticated(spec["user"], tuple(spec.get("groups") or ()), name)

    def _credential(self, name: str, type_: str) -> dict[str, Any] | None:
        if not name or len(name) > 253:
            return None
        entry = self.lookup(CREDENTIAL.key("", name))
        if entry is None or entry.obj.get("metadata", {}).get("deletionTimestamp"):
            return None
        spec: dict[str, Any] = entry.obj.get("spec") or {}
        return spec if spec.get("type") == type_ else None


def _check_live(spec: dict[str, Any], what: str) -> None:
    if spec.get("revoked"):
        raise unauthorized(f"the {what} was revoked")
    expires = spec.get("expirationTimestamp")
    if isinstance(expires, str) and expires:
        when = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if when <= datetime.datetime.now(datetime.UTC):
            raise unauthorized(f"the {what} expired at {expires}")
