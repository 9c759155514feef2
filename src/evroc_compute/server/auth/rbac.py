"""Authorization by role: system:masters and the control plane may do everything.

(Role-based access control for everyone else is served by rbac.authorization.k8s.io.)
"""

from __future__ import annotations

from collections.abc import Callable

from evroc_compute.server.auth.authz import ALLOW, Attributes, Decision
from evroc_compute.server.auth.users import CONTROLLER_MANAGER, MASTERS
from evroc_compute.store.base import Entry


class RbacAuthorizer:
    def __init__(self, lookup: Callable[[str], Entry | None]) -> None:
        self.lookup = lookup

    def authorize(self, attributes: Attributes) -> Decision:
        user = attributes.user
        if MASTERS in user.groups or user.name == CONTROLLER_MANAGER:
            return ALLOW
        return Decision(False, "no rule allows it")
