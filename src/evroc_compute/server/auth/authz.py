"""Authorization: what a request asks to do (kube's authorizer.Attributes), and the decision.

The request path asks one `Authorizer` per request, in-process requests of the controllers
included; a refusal is kube's 403 Status, worded as kube-apiserver words it so that tools that
parse it (kubectl, `auth can-i`) read it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from evroc_compute.api.kinds import Kind
from evroc_compute.server import errors
from evroc_compute.server.auth.users import UserInfo

READ_VERBS = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class Attributes:
    """What one request does. A resource request names a resource (and maybe a namespace, a
    name, a subresource); any other request names a path (`/metrics`, `/openapi/v3`)."""

    user: UserInfo
    verb: str  # get list watch create update patch delete deletecollection (or an HTTP verb)
    resource: str = ""  # plural, e.g. virtualmachines; "" for a non-resource request
    api_group: str = ""
    namespace: str = ""  # "" for cluster-scoped kinds and for requests across all namespaces
    name: str = ""
    subresource: str = ""
    path: str = ""  # a non-resource request's path

    @property
    def resource_request(self) -> bool:
        return bool(self.resource)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # why, for refusals and for SubjectAccessReview's status.reason


ALLOW = Decision(True)


class Authorizer(Protocol):
    def authorize(self, attributes: Attributes) -> Decision: ...


def request_verb(method: str, named: bool, watch: bool) -> str:
    """kube's verb for an HTTP request on a resource."""
    if method in ("GET", "HEAD"):
        return "watch" if watch else "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def forbidden(attributes: Attributes, decision: Decision, kind: Kind | None = None) -> errors.ApiError:
    """kube-apiserver's 403: `virtualmachines.compute.evroclabs.net "web" is forbidden: User
    "alice" cannot get resource "virtualmachines" in API group "compute.evroclabs.net" in the
    namespace "team-b"`."""
    a = attributes
    user = a.user.name
    if not a.resource_request:
        message = f'forbidden: User "{user}" cannot {a.verb} path "{a.path}"'
    else:
        resource = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        qualified = f"{a.resource}.{a.api_group}" if a.api_group else a.resource
        subject = f'{qualified} "{a.name}"' if a.name else qualified
        message = (f'{subject} is forbidden: User "{user}" cannot {a.verb} resource '
                   f'"{resource}" in API group "{a.api_group}" {where}')
    if decision.reason:
        message += f": {decision.reason}"
    return errors.forbidden(message, kind=kind, name=a.name)
