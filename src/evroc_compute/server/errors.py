"""Every rejection is a Kubernetes Status: a code, a reason, an actionable message, the field.

Handlers raise `ApiError`; the app turns it into the Status body. Constructors below use
the exact reasons and message shapes kube-apiserver uses, so clients print what users expect.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from evroc_compute.api.kinds import Kind
from evroc_compute.api.schema import FieldError


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, *, name: str = "",
                 kind: Kind | None = None, causes: Iterable[dict[str, Any]] = (),
                 retry_after: int = 0) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.name, self.kind, self.causes = name, kind, list(causes)
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": self.message,
                                "reason": self.reason, "code": self.code}
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.kind is not None:
            details["group"] = self.kind.group
            # kube-apiserver: Invalid names the Kind (kubectl prints `The VirtualMachine "x" is
            # invalid`); NotFound, AlreadyExists and Conflict name the resource (plural).
            details["kind"] = self.kind.kind if self.reason == "Invalid" else self.kind.plural
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body

    def body(self) -> bytes:
        return orjson.dumps(self.status())


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.qualified_resource} "{name}" not found',
                    name=name, kind=kind)


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{namespace}" not found', name=namespace)


def already_exists(kind: Kind, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{kind.qualified_resource} "{name}" already exists',
                    name=name, kind=kind)


def conflict(kind: Kind, name: str, detail: str = "the object has been modified; please apply "
             "your changes to the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {kind.qualified_resource} "{name}": {detail}',
                    name=name, kind=kind)


def invalid(kind: Kind, name: str, errors: list[FieldError]) -> ApiError:
    summary = errors[0].message if len(errors) == 1 else \
        "[" + ", ".join(e.message for e in errors) + "]"
    return ApiError(422, "Invalid", f'{kind.kind}.{kind.group or "core"} "{name}" is invalid: '
                    f"{summary}", name=name, kind=kind,
                    causes=[{"type": e.type, "message": e.detail, "field": e.field}
                            for e in errors])


def bad_request(message: str, *, field: str = "", cause_type: str = "") -> ApiError:
    causes = [{"type": cause_type or "FieldValueInvalid", "message": message, "field": field}] \
        if field else []
    return ApiError(400, "BadRequest", message, causes=causes)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def gone_too_old(requested: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested}")


def method_not_allowed(method: str, what: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    f"the server does not allow this method on the requested resource: "
                    f"{method} {what}")


def unsupported_media_type(content_type: str, accepted: Iterable[str]) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f'the body of the request was in an unknown format ({content_type or "none"})'
                    f" - accepted media types include: {', '.join(accepted)}")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge",
                    f"Request entity too large: limit is {limit} bytes; split the object or "
                    "store large data elsewhere")


def forbidden(message: str, *, kind: Kind | None = None, name: str = "") -> ApiError:
    return ApiError(403, "Forbidden", message, kind=kind, name=name)


def too_many_requests(message: str) -> ApiError:
    return ApiError(429, "TooManyRequests", message, retry_after=1)


def unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message, retry_after=1)


def too_large_resource_version(requested: int, current: int) -> ApiError:
    """A resourceVersion newer than the store's: 504, with the cause client-go looks for
    (`IsTooLargeResourceVersion`), so reflectors fall back to a fresh list."""
    return ApiError(504, "Timeout", f"Too large resource version: {requested}, current: {current}",
                    causes=[{"type": "ResourceVersionTooLarge",
                             "message": "Too large resource version"}], retry_after=1)
