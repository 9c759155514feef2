"""What every host agent writes: instance status as a merge patch, its hosts' heartbeats, the
SecurityGroups each host has programmed (Host status.securityGroups) and where its console
endpoint is (Host status.agentEndpoint, QEMU hosts' agents).

An agent is alive for the control plane while it renews one Lease per host (`host-<name>`)
every heartbeat interval; the HostMonitor turns a lease older than the heartbeat timeout into
the host being NotReady and its VMs Unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evroc_compute.api.infra import HOST, LEASE, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.client.base import Client, ClientError
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import key_of


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning status `old` into `new` (removed fields become null)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


async def report(client: Client, instance: dict[str, Any], status: dict[str, Any]) -> None:
    """Write `status` on the instance if it differs from what it shows."""
    patch = status_patch(instance.get("status") or {}, status)
    if patch:
        namespace, name = key_of(instance)
        await client.patch(VIRTUAL_MACHINE_INSTANCE, namespace, name, {"status": patch},
                           subresource="status")


def security_group_report(programmed: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    """Host status.securityGroups for the groups programmed, by project and name."""
    return [{"namespace": project, "name": name, "generation": generation}
            for project, groups in sorted(programmed.items())
            for name, generation in sorted(groups.items())]


async def report_security_groups(client: Client, host: dict[str, Any],
                                 programmed: Mapping[str, Mapping[str, int]]) -> None:
    """Write the host's programmed groups if they differ from what its status shows."""
    wanted = security_group_report(programmed)
    if ((host.get("status") or {}).get("securityGroups") or []) != wanted:
        await client.patch(HOST, None, host["metadata"]["name"],
                           {"status": {"securityGroups": wanted or None}}, subresource="status")


async def report_endpoint(client: Client, host: dict[str, Any], endpoint: dict[str, str]) -> None:
    """Write the host's agent endpoint (URL and serving certificate) if its status shows another."""
    if (host.get("status") or {}).get("agentEndpoint") != endpoint:
        await client.patch(HOST, None, host["metadata"]["name"],
                           {"status": {"agentEndpoint": endpoint}}, subresource="status")


async def renew_lease(client: Client, host: str, now: str, settings: Settings) -> None:
    """Renew (or create) the heartbeat lease of `host`; `now` in RFC 3339."""
    name = f"host-{host}"
    spec = {"holderIdentity": host, "renewTime": now,
            "leaseDurationSeconds": max(1, round(settings.heartbeat_timeout))}
    try:
        await client.patch(LEASE, None, name, {"spec": spec})
    except ClientError as problem:
        if not problem.not_found:
            raise
        await client.create(LEASE, {
            "apiVersion": LEASE.api_version, "kind": "Lease", "metadata": {"name": name},
            "spec": {**spec, "acquireTime": now, "leaseTransitions": 0}})

