"""rbac.authorization.k8s.io/v1: Role, ClusterRole, RoleBinding, ClusterRoleBinding, as kube.

A Role (in a namespace) or ClusterRole lists rules: which verbs on which resources of which API
groups (or which non-resource URLs, ClusterRoles only). A RoleBinding grants a Role or a
ClusterRole to subjects within its namespace; a ClusterRoleBinding grants a ClusterRole
everywhere. A binding's roleRef cannot change (delete and recreate it), as in kube. The server
evaluates them on every request (server/auth/rbac.py); the default roles are seeded from
api/policy.py and may be edited by admins.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api import policy
from evroc_compute.api.kinds import Column, Kind
from evroc_compute.api.schema import (
    FieldError,
    array,
    invalid,
    obj,
    required,
    string,
    string_map,
)
from evroc_compute.api.tables import age, path

GROUP = "rbac.authorization.k8s.io"
VERSION = "v1"

_STRINGS = array(string())

POLICY_RULE = obj(
    "What a rule allows: verbs on resources of API groups (optionally only some names), or "
    "verbs on non-resource URLs.", required=("verbs",),
    verbs=array(string(), "Verbs (get, list, watch, create, update, patch, delete, "
                "deletecollection, bind, escalate) or *."),
    apiGroups=array(string(), "API groups; \"\" is the core group; * is every group."),
    resources=array(string(), "Resources (plural), resource/subresource, */subresource, "
                    "or *."),
    resourceNames=array(string(), "Only these object names; empty: every name."),
    nonResourceURLs=array(string(), "Paths such as /healthz; a trailing * matches a prefix "
                          "(ClusterRoles only)."))

_RULES = ("rules", array(POLICY_RULE, "The rules of this role."))

ROLE_REF = obj("The role granted. It cannot be changed: delete the binding and create another.",
               required=("apiGroup", "kind", "name"),
               apiGroup=string("rbac.authorization.k8s.io."),
               kind=string("Role or ClusterRole."),
               name=string("The role's name."))

SUBJECT = obj("Who is granted the role.", required=("kind", "name"),
              kind=string("User, Group or ServiceAccount.",
                          enum=("User", "Group", "ServiceAccount")),
              apiGroup=string("rbac.authorization.k8s.io for users and groups, \"\" for "
                              "service accounts."),
              name=string("The user's, group's or service account's name."),
              namespace=string("The service account's namespace."))

_BINDING_FIELDS = (("subjects", array(SUBJECT, "Who is granted the role.")),
                   ("roleRef", ROLE_REF))

AGGREGATION_RULE = obj("Not evaluated by this server: list the rules in the role itself.",
                       clusterRoleSelectors=array(obj(
                           "A label selector.", matchLabels=string_map("Labels."),
                           matchExpressions=array({"type": "object",
                                                   "x-kubernetes-preserve-unknown-fields": True},
                                                  "Expressions.")), "Selectors."))


def _rule_errors(rules: Any, *, cluster: bool) -> list[FieldError]:
    """kube's ValidatePolicyRule for each rule."""
    found: list[FieldError] = []
    for i, rule in enumerate(rules or []):
        at = f"rules[{i}]"
        if not rule.get("verbs"):
            found.append(required(f"{at}.verbs", "Required value: verbs must contain at least "
                                  "one value"))
        if rule.get("nonResourceURLs"):
            if not cluster:
                found.append(invalid(f"{at}.nonResourceURLs", rule["nonResourceURLs"],
                                     "namespaced rules cannot apply to non-resource URLs"))
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                found.append(invalid(f"{at}.nonResourceURLs", rule["nonResourceURLs"],
                                     "rules cannot apply to both regular resources and "
                                     "non-resource URLs"))
            continue
        if not rule.get("resources"):
            found.append(required(f"{at}.resources", "Required value: resource rules must "
                                  "supply at least one resource"))
        if not rule.get("apiGroups"):
            found.append(required(f"{at}.apiGroups", "Required value: resource rules must "
                                  "supply at least one api group"))
    return found


def _role_check(cluster: bool) -> Any:
    def check(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
        return _rule_errors(new.get("rules"), cluster=cluster)
    return check


def _binding_check(cluster: bool) -> Any:
    kinds = ("ClusterRole",) if cluster else ("Role", "ClusterRole")

    def check(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
        found: list[FieldError] = []
        ref = new.get("roleRef")
        if not isinstance(ref, dict):
            return [required("roleRef", "Required value: a binding names the role it grants")]
        if ref.get("apiGroup") != GROUP:
            found.append(invalid("roleRef.apiGroup", ref.get("apiGroup"),
                                 f"supported values: \"{GROUP}\""))
        if ref.get("kind") not in kinds:
            found.append(FieldError("roleRef.kind", "FieldValueNotSupported",
                                    f"Unsupported value: \"{ref.get('kind')}\": supported "
                                    f"values: {', '.join(repr(k) for k in kinds)}",
                                    ref.get("kind")))
        if not ref.get("name"):
            found.append(required("roleRef.name"))
        if old is not None and old.get("roleRef") != ref:
            found.append(invalid("roleRef", ref, "cannot change roleRef"))
        for i, subject in enumerate(new.get("subjects") or []):
            found += _subject_errors(subject, f"subjects[{i}]", cluster=cluster)
        return found
    return check


def _subject_errors(subject: dict[str, Any], at: str, *, cluster: bool) -> list[FieldError]:
    kind, group = subject.get("kind"), subject.get("apiGroup", "")
    if not subject.get("name"):
        return [required(f"{at}.name")]
    if kind == "ServiceAccount":
        found = [] if not group else [invalid(f"{at}.apiGroup", group,
                                              'supported values: ""')]
        if cluster and not subject.get("namespace"):
            found.append(required(f"{at}.namespace"))
        return found
    if group != GROUP:
        return [invalid(f"{at}.apiGroup", group, f'supported values: "{GROUP}"')]
    return []


def role_ref(obj_: dict[str, Any]) -> str:
    ref = obj_.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _names(kind: str) -> Any:
    return lambda b: ", ".join(s.get("name", "") for s in b.get("subjects") or []
                               if s.get("kind") == kind)


_ROLE_COLUMNS = (Column("Created At", "date", path("metadata", "creationTimestamp"),
                        "When the role was created."),)
_BINDING_COLUMNS = (
    Column("Role", "string", role_ref, "The role granted."),
    Column("Age", "date", age, "Time since creation."),
    Column("Users", "string", _names("User"), "Users granted the role.", priority=1),
    Column("Groups", "string", _names("Group"), "Groups granted the role.", priority=1),
    Column("ServiceAccounts", "string", _names("ServiceAccount"),
           "Service accounts granted the role.", priority=1))

ROLE = Kind(
    group=GROUP, version=VERSION, kind="Role", plural="roles", namespaced=True,
    description="Role is a namespaced, logical grouping of PolicyRules that can be referenced "
    "as a unit by a RoleBinding.", spec=None, status=None, fields=(_RULES,),
    semantic_check=_role_check(False), columns=_ROLE_COLUMNS)

CLUSTER_ROLE = Kind(
    group=GROUP, version=VERSION, kind="ClusterRole", plural="clusterroles", namespaced=False,
    description="ClusterRole is a cluster level, logical grouping of PolicyRules that can be "
    "referenced as a unit by a RoleBinding or ClusterRoleBinding.", spec=None, status=None,
    fields=(_RULES, ("aggregationRule", AGGREGATION_RULE)),
    semantic_check=_role_check(True), columns=_ROLE_COLUMNS, seed=policy.CLUSTER_ROLES)

ROLE_BINDING = Kind(
    group=GROUP, version=VERSION, kind="RoleBinding", plural="rolebindings", namespaced=True,
    description="RoleBinding grants a Role or ClusterRole to subjects within its namespace.",
    spec=None, status=None, fields=_BINDING_FIELDS, semantic_check=_binding_check(False),
    columns=_BINDING_COLUMNS)

CLUSTER_ROLE_BINDING = Kind(
    group=GROUP, version=VERSION, kind="ClusterRoleBinding", plural="clusterrolebindings",
    namespaced=False, description="ClusterRoleBinding grants a ClusterRole to subjects in every "
    "namespace and at the cluster scope.", spec=None, status=None, fields=_BINDING_FIELDS,
    semantic_check=_binding_check(True), columns=_BINDING_COLUMNS,
    seed=policy.CLUSTER_ROLE_BINDINGS)

KINDS = (ROLE, CLUSTER_ROLE, ROLE_BINDING, CLUSTER_ROLE_BINDING)


# A project (namespace) whose creator is still to be bound as its admin carries PENDING_ADMIN
# (the user's name) from its creation; once bound it carries REQUESTER instead (for people).
PENDING_ADMIN = "evroc-compute.io/bind-admin"
REQUESTER = "evroc-compute.io/requester"


def settled_annotations(annotations: dict[str, str]) -> dict[str, str]:
    """A project's annotations once its creator is bound."""
    settled = {k: v for k, v in annotations.items() if k != PENDING_ADMIN}
    if PENDING_ADMIN in annotations:
        settled[REQUESTER] = annotations[PENDING_ADMIN]
    return settled


def admin_binding(namespace: str, user: str) -> dict[str, Any]:
    """The RoleBinding that makes a project's creator its admin."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RoleBinding",
            "metadata": {"name": policy.PROJECT_ADMIN_BINDING, "namespace": namespace},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"apiGroup": GROUP, "kind": "User", "name": user}]}
