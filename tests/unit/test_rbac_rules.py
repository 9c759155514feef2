"""RBAC rule matching, escalation coverage, the index and the default policy, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from evroc_compute.api import policy, rbac
from evroc_compute.server.auth.authz import Attributes
from evroc_compute.server.auth.rbac import build
from evroc_compute.server.auth.rules import Rule, allows, uncovered
from evroc_compute.server.auth.users import authenticated

ALICE = authenticated("alice", ("team",))
VM = "compute.evroclabs.net"


def rule(**fields: Any) -> Rule:
    return Rule.parse(fields)


def res(verb: str, resource: str, group: str = VM, *, sub: str = "", name: str = "",
        ns: str = "p") -> Attributes:
    return Attributes(ALICE, verb, resource, group, ns, name, sub)


def url(path: str, verb: str = "get") -> Attributes:
    return Attributes(ALICE, verb, path=path)


MATCHING = [
    # (id, rule, request, allowed)
    ("exact verb group resource", rule(verbs=["get"], apiGroups=[VM], resources=["disks"]),
     res("get", "disks"), True),
    ("another verb", rule(verbs=["get"], apiGroups=[VM], resources=["disks"]),
     res("delete", "disks"), False),
    ("verb star", rule(verbs=["*"], apiGroups=[VM], resources=["disks"]),
     res("deletecollection", "disks"), True),
    ("another group", rule(verbs=["get"], apiGroups=[""], resources=["disks"]),
     res("get", "disks"), False),
    ("group star", rule(verbs=["get"], apiGroups=["*"], resources=["disks"]),
     res("get", "disks"), True),
    ("core group is the empty string", rule(verbs=["get"], apiGroups=[""],
                                            resources=["events"]),
     res("get", "events", ""), True),
    ("resource star", rule(verbs=["get"], apiGroups=[VM], resources=["*"]),
     res("get", "virtualmachines"), True),
    ("a resource does not grant its subresource",
     rule(verbs=["update"], apiGroups=[VM], resources=["virtualmachines"]),
     res("update", "virtualmachines", sub="status", name="web"), False),
    ("resource/subresource grants the subresource",
     rule(verbs=["update"], apiGroups=[VM], resources=["virtualmachines/status"]),
     res("update", "virtualmachines", sub="status", name="web"), True),
    ("resource/subresource does not grant the resource",
     rule(verbs=["update"], apiGroups=[VM], resources=["virtualmachines/status"]),
     res("update", "virtualmachines", name="web"), False),
    ("*/subresource grants that subresource of any resource",
     rule(verbs=["get"], apiGroups=[VM], resources=["*/status"]),
     res("get", "disks", sub="status", name="d"), True),
    ("*/subresource is not another subresource",
     rule(verbs=["get"], apiGroups=[VM], resources=["*/status"]),
     res("get", "disks", sub="finalize", name="d"), False),
    ("resource star grants subresources", rule(verbs=["*"], apiGroups=["*"], resources=["*"]),
     res("update", "virtualmachines", sub="status", name="web"), True),
    ("resourceNames: the named object",
     rule(verbs=["get"], apiGroups=[VM], resources=["disks"], resourceNames=["a"]),
     res("get", "disks", name="a"), True),
    ("resourceNames: another object",
     rule(verbs=["get"], apiGroups=[VM], resources=["disks"], resourceNames=["a"]),
     res("get", "disks", name="b"), False),
    ("resourceNames never grant a list",
     rule(verbs=["list"], apiGroups=[VM], resources=["disks"], resourceNames=["a"]),
     res("list", "disks"), False),
    ("nonResourceURLs exact", rule(verbs=["get"], nonResourceURLs=["/healthz"]),
     url("/healthz"), True),
    ("nonResourceURLs prefix star", rule(verbs=["get"], nonResourceURLs=["/apis/*"]),
     url("/apis/compute.evroclabs.net/v1alpha1"), True),
    ("nonResourceURLs prefix star needs the prefix",
     rule(verbs=["get"], nonResourceURLs=["/apis/*"]), url("/api"), False),
    ("nonResourceURLs star", rule(verbs=["get"], nonResourceURLs=["*"]), url("/metrics"), True),
    ("nonResourceURLs other verb", rule(verbs=["get"], nonResourceURLs=["*"]),
     url("/metrics", "post"), False),
    ("a URL rule grants no resource", rule(verbs=["*"], nonResourceURLs=["*"]),
     res("get", "disks"), False),
    ("a resource rule grants no URL", rule(verbs=["*"], apiGroups=["*"], resources=["*"]),
     url("/metrics"), False),
]


@pytest.mark.parametrize(("granted", "request_", "allowed"), [m[1:] for m in MATCHING],
                         ids=[m[0] for m in MATCHING])
def test_rule_matching(granted: Rule, request_: Attributes, allowed: bool) -> None:
    assert allows(granted, request_) is allowed


EDIT = rule(verbs=["get", "update"], apiGroups=[VM], resources=["disks", "virtualmachines"])
COVERING = [
    ("the same rule", [EDIT], [EDIT], True),
    ("fewer verbs", [EDIT], [rule(verbs=["get"], apiGroups=[VM], resources=["disks"])], True),
    ("a verb not held", [EDIT], [rule(verbs=["delete"], apiGroups=[VM], resources=["disks"])],
     False),
    ("a star is covered only by a star", [EDIT],
     [rule(verbs=["get"], apiGroups=[VM], resources=["*"])], False),
    ("a subresource not held", [EDIT],
     [rule(verbs=["update"], apiGroups=[VM], resources=["virtualmachines/status"])], False),
    ("everything covers anything", [rule(verbs=["*"], apiGroups=["*"], resources=["*"])],
     [rule(verbs=["update"], apiGroups=[VM], resources=["virtualmachines/status"])], True),
    ("names held only for some", [rule(verbs=["get"], apiGroups=[VM], resources=["disks"],
                                       resourceNames=["a"])],
     [rule(verbs=["get"], apiGroups=[VM], resources=["disks"])], False),
    ("URLs", [rule(verbs=["get"], nonResourceURLs=["/apis/*"])],
     [rule(verbs=["get"], nonResourceURLs=["/apis/x"])], True),
]


@pytest.mark.parametrize(("owner", "servant", "covered"), [c[1:] for c in COVERING],
                         ids=[c[0] for c in COVERING])
def test_escalation_coverage(owner: list[Rule], servant: list[Rule], covered: bool) -> None:
    assert (not uncovered(owner, servant)) is covered


def _binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict[str, str]],
             namespace: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "subjects": subjects,
            "roleRef": {"apiGroup": rbac.GROUP, "kind": role_kind, "name": role}}


def test_index_applies_bindings_by_subject_and_namespace() -> None:
    reader = {"metadata": {"name": "reader"}, "rules": [
        {"verbs": ["get"], "apiGroups": [VM], "resources": ["disks"]}]}
    local = {"metadata": {"name": "local", "namespace": "p"}, "rules": [
        {"verbs": ["delete"], "apiGroups": [VM], "resources": ["disks"]}]}
    index = build(
        [local], [reader],
        [_binding("RoleBinding", "a", "ClusterRole", "reader",
                  [{"kind": "User", "name": "alice"}], "p"),
         _binding("RoleBinding", "b", "Role", "local", [{"kind": "Group", "name": "team"}], "p"),
         _binding("RoleBinding", "c", "Role", "local", [{"kind": "User", "name": "alice"}], "q"),
         _binding("RoleBinding", "d", "ClusterRole", "missing",
                  [{"kind": "User", "name": "alice"}], "p"),
         _binding("RoleBinding", "e", "ClusterRole", "reader",
                  [{"kind": "ServiceAccount", "name": "alice", "namespace": "p"}], "r")],
        [_binding("ClusterRoleBinding", "f", "ClusterRole", "reader",
                  [{"kind": "User", "name": "bob"}])])

    def may(user: str, groups: tuple[str, ...], verb: str, namespace: str) -> bool:
        found = index.rules(authenticated(user, groups), namespace)
        return any(allows(r, Attributes(authenticated(user, groups), verb, "disks", VM,
                                        namespace)) for r in found)

    assert may("alice", (), "get", "p")  # a RoleBinding may grant a ClusterRole
    assert not may("alice", (), "get", "q")  # ... in its namespace only
    assert not may("alice", (), "get", "")  # ... never across namespaces
    assert may("carol", ("team",), "delete", "p")  # a Group subject
    assert not may("alice", (), "delete", "q")  # a Role of another namespace grants nothing
    assert not may("alice", (), "get", "r")  # service accounts match no user
    assert may("bob", (), "get", "p") and may("bob", (), "get", "")  # cluster-wide
    found = index.rules(authenticated("alice"), "p")
    assert found[0].source == 'RoleBinding "p/a" of ClusterRole "reader"'


def _policy_index() -> Any:
    return build([], list(policy.CLUSTER_ROLES), [
        _binding("RoleBinding", role, "ClusterRole", role, [{"kind": "User", "name": role}], "p")
        for role in ("admin", "edit", "view")], list(policy.CLUSTER_ROLE_BINDINGS))


PROJECT_ROLES = [
    # (role, verb, group, resource, subresource, allowed in its namespace)
    ("view", "get", VM, "virtualmachines", "", True),
    ("view", "watch", "networking.evroclabs.net", "publicips", "", True),
    ("view", "get", VM, "virtualmachines", "status", True),
    ("view", "create", VM, "virtualmachines", "", False),
    ("view", "get", VM, "virtualmachines", "console", True),
    ("view", "update", VM, "virtualmachines", "console", False),
    ("view", "list", "", "events", "", True),
    ("view", "list", "", "resourcequotas", "", True),
    ("view", "list", rbac.GROUP, "rolebindings", "", False),
    ("edit", "create", VM, "disks", "", True),
    ("edit", "deletecollection", "networking.evroclabs.net", "securitygroups", "", True),
    ("edit", "update", VM, "virtualmachines", "status", False),
    ("edit", "patch", VM, "disks", "status", False),
    ("edit", "create", rbac.GROUP, "rolebindings", "", False),
    ("edit", "create", "", "resourcequotas", "", False),
    ("admin", "create", rbac.GROUP, "rolebindings", "", True),
    ("admin", "update", VM, "virtualmachines", "status", False),
    ("admin", "get", "infra.evroc-compute.io", "virtualmachineinstances", "", False),
    ("admin", "create", "", "resourcequotas", "", False),
]


@pytest.mark.parametrize(("role", "verb", "group", "resource", "sub", "allowed"), PROJECT_ROLES,
                         ids=[f"{r[0]} {r[1]} {r[3]}{'/' + r[4] if r[4] else ''}"
                              for r in PROJECT_ROLES])
def test_default_project_roles(role: str, verb: str, group: str, resource: str, sub: str,
                               allowed: bool) -> None:
    user = authenticated(role)
    request_ = Attributes(user, verb, resource, group, "p", "x" if sub else "", sub)
    assert any(allows(r, request_) for r in _policy_index().rules(user, "p")) is allowed
    elsewhere = Attributes(user, verb, resource, group, "q", "x" if sub else "", sub)
    assert not any(allows(r, elsewhere) for r in _policy_index().rules(user, "q"))


EVERYONE = [
    # what any authenticated user may do, anywhere
    (Attributes(authenticated("x"), "get", path="/apis"), True),
    (Attributes(authenticated("x"), "get", path="/openapi/v3/apis/compute.evroclabs.net/v1alpha1"),
     True),
    (Attributes(authenticated("x"), "get", path="/metrics"), False),
    (Attributes(authenticated("x"), "list", "diskimages", VM), True),
    (Attributes(authenticated("x"), "get", "vmvirtualresources", VM, name="a1a.s"), True),
    (Attributes(authenticated("x"), "update", "diskimages", VM, name="u"), False),
    (Attributes(authenticated("x"), "list", "hosts", "infra.evroc-compute.io"), False),
    (Attributes(authenticated("x"), "list", "leases", "infra.evroc-compute.io"), False),
    (Attributes(authenticated("x"), "get", "credentials", "identity.evroc-compute.io"), False),
    (Attributes(authenticated("x"), "create", "namespaces", ""), False),
    (Attributes(authenticated("x"), "create", "selfsubjectaccessreviews",
                "authorization.k8s.io"), True),
    (Attributes(authenticated("x"), "create", "subjectaccessreviews", "authorization.k8s.io"),
     False),
]


@pytest.mark.parametrize(("request_", "allowed"), EVERYONE,
                         ids=[f"{a.verb} {a.resource or a.path}" for a, _ in EVERYONE])
def test_what_every_authenticated_user_may_do(request_: Attributes, allowed: bool) -> None:
    found = _policy_index().rules(request_.user, request_.namespace)
    assert any(allows(r, request_) for r in found) is allowed


VALIDATION = [
    # (kind, object, field at fault or "" when valid)
    (rbac.ROLE, {"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["events"]}]}, ""),
    (rbac.ROLE, {"rules": [{"apiGroups": [""], "resources": ["events"]}]}, "rules[0].verbs"),
    (rbac.ROLE, {"rules": [{"verbs": ["get"], "resources": ["events"]}]}, "rules[0].apiGroups"),
    (rbac.ROLE, {"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]},
     "rules[0].nonResourceURLs"),
    (rbac.CLUSTER_ROLE, {"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}, ""),
    (rbac.CLUSTER_ROLE, {"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"],
                                    "resources": ["events"]}]}, "rules[0].nonResourceURLs"),
    (rbac.ROLE_BINDING, {"roleRef": {"apiGroup": rbac.GROUP, "kind": "Role", "name": "r"},
                         "subjects": [{"kind": "User", "apiGroup": rbac.GROUP, "name": "a"}]},
     ""),
    (rbac.ROLE_BINDING, {"subjects": []}, "roleRef"),
    (rbac.ROLE_BINDING, {"roleRef": {"apiGroup": "x", "kind": "Role", "name": "r"}},
     "roleRef.apiGroup"),
    (rbac.CLUSTER_ROLE_BINDING, {"roleRef": {"apiGroup": rbac.GROUP, "kind": "Role",
                                             "name": "r"}}, "roleRef.kind"),
    (rbac.ROLE_BINDING, {"roleRef": {"apiGroup": rbac.GROUP, "kind": "Role", "name": "r"},
                         "subjects": [{"kind": "User", "name": "a"}]}, "subjects[0].apiGroup"),
    (rbac.CLUSTER_ROLE_BINDING, {"roleRef": {"apiGroup": rbac.GROUP, "kind": "ClusterRole",
                                             "name": "r"},
                                 "subjects": [{"kind": "ServiceAccount", "name": "a"}]},
     "subjects[0].namespace"),
]


@pytest.mark.parametrize(("kind", "body", "field"), VALIDATION,
                         ids=[f"{v[0].kind} {v[2] or 'valid'}" for v in VALIDATION])
def test_rbac_validation(kind: Any, body: dict[str, Any], field: str) -> None:
    found = kind.semantic_check({"metadata": {"name": "x"}, **body}, None)
    assert [e.field for e in found][:1] == ([field] if field else [])


def test_a_binding_role_ref_is_immutable() -> None:
    old = {"metadata": {"name": "b"}, "roleRef": {"apiGroup": rbac.GROUP, "kind": "ClusterRole",
                                                  "name": "view"}}
    new = {**old, "roleRef": {**old["roleRef"], "name": "edit"}}
    found = rbac.ROLE_BINDING.semantic_check(new, old)
    assert [(e.field, "cannot change roleRef" in e.detail) for e in found] == [("roleRef", True)]
    assert rbac.ROLE_BINDING.semantic_check(old, old) == []
