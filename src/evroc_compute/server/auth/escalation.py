"""Privilege escalation prevention, as kube's RBAC storage does it.

Who may write Roles and RoleBindings (a project's admin) must not grant more than they hold:
a role may be written only with rules the writer already has where it applies (or with the
`escalate` verb on it), and a binding only to a role whose every rule the writer has (or with
the `bind` verb on it). Without this, an admin of one project could bind itself cluster-admin
there and write the status that only controllers and hosts may write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evroc_compute.api import rbac
from evroc_compute.api.kinds import Kind
from evroc_compute.server import errors
from evroc_compute.server.auth.authz import Attributes, Authorizer
from evroc_compute.server.auth.rules import Rule, uncovered
from evroc_compute.server.auth.users import MASTERS, UserInfo
from evroc_compute.store.base import Entry

ROLE_KINDS = (rbac.ROLE, rbac.CLUSTER_ROLE)
BINDING_KINDS = (rbac.ROLE_BINDING, rbac.CLUSTER_ROLE_BINDING)


class EscalationCheck:
    def __init__(self, authorizer: Authorizer, rules: Callable[[UserInfo, str], list[Rule]],
                 lookup: Callable[[str], Entry | None]) -> None:
        self.authorizer, self.rules, self.lookup = authorizer, rules, lookup

    def __call__(self, user: UserInfo, kind: Kind, namespace: str, obj: dict[str, Any]) -> None:
        if MASTERS in user.groups or kind not in (*ROLE_KINDS, *BINDING_KINDS):
            return
        name = obj["metadata"].get("name", "")
        if kind in ROLE_KINDS:
            if self._may(user, "escalate", kind.plural, namespace, name):
                return
            granted = [Rule.parse(r) for r in obj.get("rules") or [] if isinstance(r, dict)]
            what = "rules"
        else:
            ref = obj.get("roleRef") or {}
            role_kind = rbac.CLUSTER_ROLE if ref.get("kind") == "ClusterRole" else rbac.ROLE
            role_name = str(ref.get("name", ""))
            if self._may(user, "bind", role_kind.plural, namespace, role_name):
                return
            role = self.lookup(role_kind.key(namespace, role_name))
            if role is None:
                raise errors.forbidden(
                    f'{kind.qualified_resource} "{name}" is forbidden: {ref.get("kind")} '
                    f'"{role_name}" not found, and only who may bind any role may bind a '
                    "missing one", kind=kind, name=name)
            granted = [Rule.parse(r) for r in role.obj.get("rules") or []]
            what = f'{ref.get("kind")} "{role_name}"'
        missing = uncovered(self.rules(user, namespace), granted)
        if missing:
            shown = "; ".join(str(rule.as_dict()) for rule in missing)
            raise errors.forbidden(
                f'{kind.qualified_resource} "{name}" is forbidden: user "{user.name}" (groups='
                f'{list(user.groups)}) is attempting to grant RBAC permissions not currently '
                f"held through {what}: {shown}", kind=kind, name=name)

    def _may(self, user: UserInfo, verb: str, plural: str, namespace: str, name: str) -> bool:
        return self.authorizer.authorize(Attributes(
            user, verb, plural, rbac.GROUP, namespace, name)).allowed
