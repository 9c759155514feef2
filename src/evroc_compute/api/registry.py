"""The kinds this server serves: every group's kinds in one Registry."""

from __future__ import annotations

from evroc_compute.api import (
    catalog,
    compute,
    core,
    events,
    identity,
    infra,
    networking,
    quota,
    rbac,
    reviews,
)
from evroc_compute.api.kinds import Registry


def default_registry() -> Registry:
    return Registry([*core.KINDS, *events.KINDS, *compute.KINDS, *catalog.KINDS,
                     *networking.KINDS, *quota.KINDS, *infra.KINDS, *identity.KINDS,
                     *rbac.KINDS, *reviews.KINDS])
