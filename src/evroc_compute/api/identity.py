"""identity.evroc-compute.io/v1: the credentials the server issues (admins only).

A Credential is one bearer token or one client certificate of a user. Only a hash of a token is
stored (the token is shown once, by `evroc-compute credentials create`); a certificate is
recorded by its serial number, so that revoking it takes effect although the certificate itself
stays valid until it expires. Revoking sets `spec.revoked` and keeps the record, so a revoked
token is told apart from an unknown one; deleting the record forgets it.
"""

from __future__ import annotations

from evroc_compute.api.kinds import Column, Kind
from evroc_compute.api.schema import array, boolean, obj, string
from evroc_compute.api.tables import age, path

GROUP = "identity.evroc-compute.io"
VERSION = "v1"

CREDENTIAL = Kind(
    group=GROUP, version=VERSION, kind="Credential", plural="credentials", namespaced=False,
    short_names=("cred",), categories=("identity",),
    description="A bearer token or client certificate issued to a user, a host or a service.",
    spec=obj("Who the credential authenticates, and how it is checked.",
             required=("user", "type"),
             user=string("The user name requests made with it carry."),
             groups=array(string("A group."), "The groups of the user."),
             type=string("token or certificate.", enum=("token", "certificate")),
             tokenHash=string("sha256 of the token's secret part, hex (type token)."),
             certificateSerial=string("The certificate's serial number, hex (type certificate)."),
             expirationTimestamp=string("When it stops working (RFC 3339); none: never."),
             revoked=boolean("True: refused from now on.", default=False)),
    status=None,
    columns=(Column("User", "string", path("spec", "user")),
             Column("Type", "string", path("spec", "type")),
             Column("Revoked", "boolean", path("spec", "revoked")),
             Column("Expires", "string", path("spec", "expirationTimestamp")),
             Column("Age", "date", age)),
)

KINDS = (CREDENTIAL,)
