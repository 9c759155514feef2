"""Several authorizers asked in turn, as kube-apiserver's `--authorization-mode=Node,RBAC`.

The first that allows decides; a refusal says why in the words of the first authorizer that had
an opinion (a reason), so a host agent hears the host rules and a user hears RBAC's.
"""

from __future__ import annotations

from evroc_compute.server.auth.authz import Attributes, Authorizer, Decision


class Union:
    def __init__(self, *authorizers: Authorizer) -> None:
        self.authorizers = authorizers

    def authorize(self, attributes: Attributes) -> Decision:
        refusals = []
        for authorizer in self.authorizers:
            decision = authorizer.authorize(attributes)
            if decision.allowed:
                return decision
            refusals.append(decision)
        return next((d for d in refusals if d.reason), Decision(False))
