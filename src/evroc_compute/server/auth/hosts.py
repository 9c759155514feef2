"""Host agents' authorization, as kube's Node authorizer with the NodeRestriction admission plugin.

A host agent authenticates as `system:host:NAME` (group `system:hosts`). It may read what its
informers watch: Hosts, Leases, VirtualMachineInstances, the VirtualMachines and Disks the
instances run, the SecurityGroups it enforces, and the catalog; and it may write only what is
its own:

- its Host: create it (registration) and write its status;
- its heartbeat Lease `host-NAME`: create, update, patch;
- the instances bound to it (`spec.host` or `spec.migrateTo` is NAME): status, and the instance
  itself (the agent removes its finalizer once the guest is gone, and ends a migration);
- DiskImages labelled as coming from its own image store (registration).

Everything else is refused with a 403 that says what a host may do. As the kubelet may list every
pod, an agent may list every instance, VM and Disk: its informers watch them across projects
(a VM's cloud-init data included), so a host's credential is as trusted as the host itself.

The in-process agent of the simulated fleet acts as `system:fleet-simulator` through the same
rules, for every Host whose `spec.driver` is `sim` (one agent serves them all).

Creates carry their name in the body, which authorizers do not see; `admit_create` checks it,
as NodeRestriction does in admission.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evroc_compute.api.catalog import (
    DISK_IMAGE,
    DISK_STORAGE_CLASS,
    IMAGE_STORE_LABEL,
    VM_VIRTUAL_RESOURCES,
)
from evroc_compute.api.compute import DISK, VIRTUAL_MACHINE
from evroc_compute.api.infra import HOST, LEASE, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.api.kinds import Kind
from evroc_compute.api.networking import SECURITY_GROUP
from evroc_compute.server import errors
from evroc_compute.server.auth.authz import ALLOW, READ_VERBS, Attributes, Decision
from evroc_compute.server.auth.users import FLEET_SIMULATOR, UserInfo
from evroc_compute.store.base import Entry

LEASE_PREFIX = "host-"
WRITE_VERBS = frozenset({"update", "patch"})
NO_OPINION = Decision(False)


def _resource(kind: Kind) -> tuple[str, str]:
    return kind.group, kind.plural


READABLE = frozenset(_resource(k) for k in (
    HOST, LEASE, VIRTUAL_MACHINE_INSTANCE, VIRTUAL_MACHINE, DISK, DISK_IMAGE,
    VM_VIRTUAL_RESOURCES, DISK_STORAGE_CLASS, SECURITY_GROUP))


def decide(a: Attributes, acts_for: Callable[[str], bool],
           instance_hosts: Callable[[str, str], tuple[str, ...]]) -> Decision:
    """Whether an agent may do `a`: `acts_for(host)` says whether it is that host's agent,
    `instance_hosts(namespace, name)` the hosts an instance is bound or migrating to."""
    resource = (a.api_group, a.resource)
    if resource in READABLE and a.verb in READ_VERBS:
        return ALLOW
    if a.verb == "create" and resource in {_resource(HOST), _resource(LEASE),
                                           _resource(DISK_IMAGE)}:
        return ALLOW  # admit_create checks that it is its own
    if a.verb in WRITE_VERBS:
        if resource == _resource(HOST) and a.subresource == "status" and acts_for(a.name):
            return ALLOW
        if resource == _resource(LEASE) and a.name.startswith(LEASE_PREFIX) and \
                acts_for(a.name[len(LEASE_PREFIX):]):
            return ALLOW
        if resource == _resource(VIRTUAL_MACHINE_INSTANCE) and a.subresource in ("", "status") \
                and any(acts_for(h) for h in instance_hosts(a.namespace, a.name)):
            return ALLOW
    return Decision(False, _scope(a.user))


def _scope(user: UserInfo) -> str:
    """What an agent may write, for its refusals."""
    if user.host:
        return (f'host "{user.host}" may write only its own Host status, its Lease '
                f'"{LEASE_PREFIX}{user.host}" and the instances bound to it')
    return ("the fleet simulator may write only the status of simulated hosts, their leases and "
            "the instances bound to them")


class HostAuthorizer:
    """Decides for host agents and the fleet simulator; no opinion on anyone else."""

    def __init__(self, lookup: Callable[[str], Entry | None]) -> None:
        self.lookup = lookup

    def authorize(self, attributes: Attributes) -> Decision:
        user = attributes.user
        if not user.host and user.name != FLEET_SIMULATOR:
            return NO_OPINION
        return decide(attributes, self._acts_for(user), self._instance_hosts)

    def _acts_for(self, user: UserInfo) -> Callable[[str], bool]:
        if user.host:
            return lambda host: bool(host) and host == user.host
        return self._simulated

    def _simulated(self, host: str) -> bool:
        entry = self.lookup(HOST.key("", host)) if host else None
        return entry is not None and (entry.obj.get("spec") or {}).get("driver", "sim") == "sim"

    def _instance_hosts(self, namespace: str, name: str) -> tuple[str, ...]:
        entry = self.lookup(VIRTUAL_MACHINE_INSTANCE.key(namespace, name)) if name else None
        spec = (entry.obj.get("spec") or {}) if entry is not None else {}
        return tuple(h for h in (spec.get("host"), spec.get("migrateTo")) if isinstance(h, str))

    def admit_create(self, user: UserInfo, kind: Kind, decode: Callable[[], Any]) -> None:
        """Refuse an agent's create of what is not its own (the name is in the body, which
        `decode` reads: only for agents, so nobody else pays for it)."""
        if not user.host and user.name != FLEET_SIMULATOR:
            return
        body = decode()
        meta = (body.get("metadata") if isinstance(body, dict) else None) or {}
        name = str(meta.get("name") or "")
        acts_for = self._acts_for(user)
        if kind is HOST:
            own, wanted = bool(user.host) and name == user.host, f'its own Host "{user.host}"'
        elif kind is LEASE:
            own = name.startswith(LEASE_PREFIX) and acts_for(name[len(LEASE_PREFIX):])
            wanted = f'its own Lease "{LEASE_PREFIX}{user.host}"' if user.host else \
                "the leases of simulated hosts"
        elif kind is DISK_IMAGE:
            store = (meta.get("labels") or {}).get(IMAGE_STORE_LABEL, "")
            own = isinstance(store, str) and acts_for(store)
            wanted = f"DiskImages labelled {IMAGE_STORE_LABEL}={user.host or 'HOST'}"
        else:
            return  # the authorizer refused every other create already
        if not own:
            raise errors.forbidden(
                f'{kind.plural}.{kind.group} "{name}" is forbidden: User "{user.name}" may '
                f"create only {wanted}", kind=kind, name=name)
