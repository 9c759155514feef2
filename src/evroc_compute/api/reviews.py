"""authorization.k8s.io/v1 and authentication.k8s.io/v1: questions to the server, never stored.

SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview (may user X do Y; admins),
SelfSubjectRulesReview (`kubectl auth can-i --list`) and SelfSubjectReview (`kubectl auth
whoami`) are created and answered in the same request (server/reviews.py), as in kube.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api.kinds import Kind
from evroc_compute.api.schema import array, boolean, free_form, obj, string

AUTHORIZATION = "authorization.k8s.io"
AUTHENTICATION = "authentication.k8s.io"

RESOURCE_ATTRIBUTES = obj(
    "A resource request.",
    namespace=string("The namespace (\"\" : every namespace, or cluster-scoped)."),
    verb=string("get, list, watch, create, update, patch, delete, deletecollection, or *."),
    group=string("The API group."), version=string("The API version."),
    resource=string("The resource (plural)."), subresource=string("The subresource."),
    name=string("The object's name (\"\" : any)."))
NON_RESOURCE_ATTRIBUTES = obj("A non-resource request.", path=string("The URL path."),
                              verb=string("The verb (get)."))

_ACCESS_STATUS = obj("The answer.", allowed=boolean("Whether the action is allowed."),
                     denied=boolean("Whether the action is denied outright."),
                     reason=string("Why."), evaluationError=string("What failed to evaluate."))
_WHO: dict[str, Any] = {"user": string("The user."), "groups": array(string(), "Its groups."),
                        "uid": string("Its uid."), "extra": free_form("Extra attributes.")}

_RULES_STATUS = obj(
    "What the user may do in the namespace.",
    resourceRules=array(free_form("A resource rule."), "Rules on resources."),
    nonResourceRules=array(free_form("A non-resource rule."), "Rules on URLs."),
    incomplete=boolean("Whether the list may be incomplete."),
    evaluationError=string("What failed to evaluate."))


def _review(group: str, kind: str, plural: str, description: str,
            spec: dict[str, object] | None, status: dict[str, object]) -> Kind:
    return Kind(group=group, version="v1", kind=kind, plural=plural, namespaced=False,
                description=description, spec=spec, status=status, stored=False,
                managed_fields=False)


SELF_SUBJECT_ACCESS_REVIEW = _review(
    AUTHORIZATION, "SelfSubjectAccessReview", "selfsubjectaccessreviews",
    "Whether the current user may perform an action (kubectl auth can-i).",
    obj("The action.", resourceAttributes=RESOURCE_ATTRIBUTES,
        nonResourceAttributes=NON_RESOURCE_ATTRIBUTES), _ACCESS_STATUS)

SUBJECT_ACCESS_REVIEW = _review(
    AUTHORIZATION, "SubjectAccessReview", "subjectaccessreviews",
    "Whether a given user may perform an action.",
    obj("The user and the action.", (), resourceAttributes=RESOURCE_ATTRIBUTES,
        nonResourceAttributes=NON_RESOURCE_ATTRIBUTES, **_WHO), _ACCESS_STATUS)

SELF_SUBJECT_RULES_REVIEW = _review(
    AUTHORIZATION, "SelfSubjectRulesReview", "selfsubjectrulesreviews",
    "What the current user may do in a namespace (kubectl auth can-i --list).",
    obj("The namespace.", namespace=string("The namespace.")), _RULES_STATUS)

SELF_SUBJECT_REVIEW = _review(
    AUTHENTICATION, "SelfSubjectReview", "selfsubjectreviews",
    "Who the server takes the current user for (kubectl auth whoami).", None,
    obj("The user.", userInfo=obj("The user.", username=string("The name."),
                                  groups=array(string(), "Its groups."), uid=string("Its uid."),
                                  extra=free_form("Extra attributes."))))

KINDS = (SELF_SUBJECT_ACCESS_REVIEW, SUBJECT_ACCESS_REVIEW, SELF_SUBJECT_RULES_REVIEW,
         SELF_SUBJECT_REVIEW)
