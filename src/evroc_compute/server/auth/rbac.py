"""Role-based access control: kube's RBAC authorizer over the rbac.authorization.k8s.io objects.

A request is allowed when a rule granted to its user or one of its groups allows it: rules of
ClusterRoles bound by ClusterRoleBindings apply everywhere, rules bound by a RoleBinding apply
in that binding's namespace. Members of system:masters are allowed everything without asking
(kube's break-glass group). ServiceAccount subjects are accepted but match no one: this server
authenticates no service accounts.

Asking must not scan bindings: the objects are compiled into an index by subject (user or
group -> rules, per namespace), rebuilt from the store's memory whenever one of the four kinds
changed. Changes are noticed through store watches drained without waiting at each request,
so a binding written (on this server, or caught up from another) counts from the next request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evroc_compute.api import policy, rbac
from evroc_compute.api.kinds import Kind
from evroc_compute.server.auth.authz import ALLOW, Attributes, Decision
from evroc_compute.server.auth.rules import Rule, first_allowing
from evroc_compute.server.auth.users import MASTERS, UserInfo
from evroc_compute.store.base import Store, Watch

log = logging.getLogger(__name__)

Subject = tuple[str, str]  # ("User" | "Group", name)
WATCHED = (rbac.ROLE, rbac.CLUSTER_ROLE, rbac.ROLE_BINDING, rbac.CLUSTER_ROLE_BINDING)


@dataclass
class Index:
    """Rules by subject: `cluster` apply everywhere, `namespaced[ns]` in namespace ns."""

    cluster: dict[Subject, list[Rule]] = field(default_factory=dict)
    namespaced: dict[str, dict[Subject, list[Rule]]] = field(default_factory=dict)

    def rules(self, user: UserInfo, namespace: str) -> list[Rule]:
        """Every rule that applies to `user` in `namespace` ("" : cluster-wide only)."""
        found: list[Rule] = []
        local = self.namespaced.get(namespace) if namespace else None
        for subject in subjects(user):
            found += self.cluster.get(subject, ())
            if local:
                found += local.get(subject, ())
        return found


def subjects(user: UserInfo) -> list[Subject]:
    return [("User", user.name), *(("Group", g) for g in user.groups)]


def build(roles: list[dict[str, Any]], cluster_roles: list[dict[str, Any]],
          bindings: list[dict[str, Any]], cluster_bindings: list[dict[str, Any]]) -> Index:
    """Compile the RBAC objects into an Index (a binding to a missing role grants nothing)."""
    by_cluster_role = {r["metadata"]["name"]: r.get("rules") or [] for r in cluster_roles}
    by_role = {(r["metadata"]["namespace"], r["metadata"]["name"]): r.get("rules") or []
               for r in roles}
    index = Index()
    for binding in cluster_bindings:
        ref = binding.get("roleRef") or {}
        granted = by_cluster_role.get(ref.get("name", ""))
        if ref.get("kind") == "ClusterRole" and granted is not None:
            _grant(index.cluster, binding, granted, "ClusterRoleBinding")
    for binding in bindings:
        ref, namespace = binding.get("roleRef") or {}, binding["metadata"]["namespace"]
        granted = by_cluster_role.get(ref.get("name", "")) if ref.get("kind") == "ClusterRole" \
            else by_role.get((namespace, ref.get("name", "")))
        if granted is not None:
            _grant(index.namespaced.setdefault(namespace, {}), binding, granted, "RoleBinding")
    return index


def _grant(into: dict[Subject, list[Rule]], binding: dict[str, Any],
           rules: list[dict[str, Any]], binding_kind: str) -> None:
    ref = binding["roleRef"]
    meta = binding["metadata"]
    where = f'{meta["namespace"]}/' if meta.get("namespace") else ""
    source = f'{binding_kind} "{where}{meta["name"]}" of {ref["kind"]} "{ref["name"]}"'
    compiled = [Rule.parse(rule, source) for rule in rules]
    for subject in binding.get("subjects") or []:
        if subject.get("kind") in ("User", "Group"):
            into.setdefault((subject["kind"], subject.get("name", "")), []).extend(compiled)


class RbacAuthorizer:
    def __init__(self, store: Callable[[], Store | None]) -> None:
        self.store = store
        self._watches: list[Watch] = []
        self._index = Index()

    def index(self) -> Index:
        """The index as of the store's memory now (rebuilt if any RBAC object changed)."""
        store = self.store()
        if store is None:
            return self._index
        stale = not self._watches
        for watch in self._watches:
            events, closed = watch.drain()
            stale = stale or bool(events) or closed
        if stale:
            self._rebuild(store)
        return self._index

    def _rebuild(self, store: Store) -> None:
        for watch in self._watches:
            watch.close()
        # Watch first, then read: a change between the two is seen again, never missed.
        self._watches = [store.watch(kind.key_prefix(None), store.revision) for kind in WATCHED]
        self._index = build(*(_objects(store, kind) for kind in WATCHED))

    def authorize(self, attributes: Attributes) -> Decision:
        user = attributes.user
        if MASTERS in user.groups:
            return ALLOW
        rule = first_allowing(self.index().rules(user, attributes.namespace), attributes)
        if rule is None:
            return Decision(False, "")
        return Decision(True, f"RBAC: allowed by {rule.source}")

    def rules(self, user: UserInfo, namespace: str) -> list[Rule]:
        """What `user` may do in `namespace` (SelfSubjectRulesReview)."""
        if MASTERS in user.groups:
            return [Rule.parse(rule) for rule in policy.EVERYTHING]
        return self.index().rules(user, namespace)

    def close(self) -> None:
        for watch in self._watches:
            watch.close()
        self._watches = []


def _objects(store: Store, kind: Kind) -> list[dict[str, Any]]:
    return [entry.obj for entry in store.current(kind.key_prefix(None))]
