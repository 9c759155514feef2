"""Answer the access and identity reviews (api/reviews.py): POST only, 201, never stored.

The answer is the authorizer's own decision for the attributes asked about, so `kubectl auth
can-i` says exactly what the request itself would meet.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from evroc_compute.api import reviews
from evroc_compute.api.kinds import Kind
from evroc_compute.api.schema import FieldError
from evroc_compute.server import admission, errors
from evroc_compute.server.auth.authz import Attributes, Authorizer
from evroc_compute.server.auth.rules import Rule
from evroc_compute.server.auth.users import UserInfo
from evroc_compute.server.http import Request, Response


class RulesResolver(Protocol):
    def rules(self, user: UserInfo, namespace: str) -> list[Rule]: ...


def answer(kind: Kind, req: Request, authorizer: Authorizer, resolver: RulesResolver) -> Response:
    body = admission.check_identity(kind, req.decode_body())
    problems: list[FieldError] = []
    kind.validator(body, "", problems, [])  # a review has no name: metadata rules do not apply
    if problems:
        raise errors.invalid(kind, "", problems)
    spec: dict[str, Any] = body.get("spec") or {}
    user = req.user
    if kind is reviews.SELF_SUBJECT_REVIEW:
        status: dict[str, Any] = {"userInfo": user.as_dict()}
    elif kind is reviews.SELF_SUBJECT_RULES_REVIEW:
        status = rules_status(resolver.rules(user, str(spec.get("namespace") or "")))
    else:
        if kind is reviews.SUBJECT_ACCESS_REVIEW:
            user = _subject(spec)
        decision = authorizer.authorize(attributes(user, spec))
        status = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
    body["metadata"] = {"creationTimestamp": None}
    body["status"] = status
    return Response(201, orjson.dumps(body))


def attributes(user: UserInfo, spec: dict[str, Any]) -> Attributes:
    resource = spec.get("resourceAttributes")
    if isinstance(resource, dict):
        return Attributes(user, str(resource.get("verb") or ""), str(resource.get("resource")
                                                                      or ""),
                          str(resource.get("group") or ""), str(resource.get("namespace") or ""),
                          str(resource.get("name") or ""), str(resource.get("subresource") or ""))
    other = spec.get("nonResourceAttributes")
    if isinstance(other, dict):
        return Attributes(user, str(other.get("verb") or ""), path=str(other.get("path") or ""))
    raise errors.ApiError(422, "Invalid", "exactly one of spec.resourceAttributes and "
                          "spec.nonResourceAttributes must be set", causes=[{
                              "type": "FieldValueRequired", "field": "spec.resourceAttributes",
                              "message": "Required value: resourceAttributes or "
                                         "nonResourceAttributes"}])


def _subject(spec: dict[str, Any]) -> UserInfo:
    if not spec.get("user") and not spec.get("groups"):
        raise errors.ApiError(422, "Invalid", "spec.user or spec.groups must be set: a "
                              "SubjectAccessReview asks about someone", causes=[{
                                  "type": "FieldValueRequired", "field": "spec.user",
                                  "message": "Required value: user or groups"}])
    extra = {k: tuple(v) for k, v in (spec.get("extra") or {}).items() if isinstance(v, list)}
    return UserInfo(str(spec.get("user") or ""), tuple(spec.get("groups") or ()),
                    str(spec.get("uid") or ""), extra)


def rules_status(rules: list[Rule]) -> dict[str, Any]:
    resource: list[dict[str, Any]] = []
    non_resource: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    for rule in rules:
        shown = rule.as_dict()
        key = orjson.dumps(shown, option=orjson.OPT_SORT_KEYS)
        if key in seen:
            continue
        seen.add(key)
        (non_resource if rule.non_resource_urls else resource).append(shown)
    return {"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": False}
