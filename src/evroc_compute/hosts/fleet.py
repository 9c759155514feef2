"""The fleet: which hosts exist and how the simulation behaves, from a YAML file or the default.

    timing: realistic            # or immediate, or {provision: 2, pull: 3, boot: 5, stop: 2, migrate: 5}
    heartbeat: {interval: 10, timeout: 40}
    backoff: {base: 10, max: 300}
    publicIPPool: 198.51.100.0/24
    subnets: {se-sto-a: 10.0.1.0/24}
    hosts:
      - {name: sto-a-general-1, zone: se-sto-a, vcpu: 128, memoryGB: 1024}
      - {name: sto-a-l40s-1, zone: se-sto-a, vcpu: 128, memoryGB: 1600, localDiskGB: 32000,
         gpus: {nvidia.com/AD102GL_L40S: 8}}
      - {name: sto-b-general, zone: se-sto-b, vcpu: 64, memoryGB: 512, count: 10}  # -1 .. -10

The default fleet has, in each of se-sto-a, se-sto-b and se-sto-c, four general hosts and one
host of each GPU model, sized so that every VMVirtualResources profile fits somewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evroc_compute.api.catalog import GPU_MODELS
from evroc_compute.api.infra import HOST
from evroc_compute.runtime.settings import DEFAULT_SUBNETS, Settings, Timing

ZONES = ("se-sto-a", "se-sto-b", "se-sto-c")


class FleetError(ValueError):
    """The fleet file is not what it should be; the message says where."""


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    name: str
    zone: str
    vcpu: int
    memory_gb: int
    local_disk_gb: int = 0
    gpus: dict[str, int] = field(default_factory=dict)
    driver: str = "sim"

    def to_object(self) -> dict[str, Any]:
        capacity: dict[str, Any] = {"vcpu": self.vcpu,
                                    "memory": {"amount": self.memory_gb, "unit": "GB"}}
        if self.gpus:
            capacity["gpus"] = [{"model": m, "count": n} for m, n in self.gpus.items()]
        if self.local_disk_gb:
            capacity["localDiskGB"] = self.local_disk_gb
        return {"apiVersion": HOST.api_version, "kind": "Host",
                "metadata": {"name": self.name, "labels": {"topology.evroc.com/zone": self.zone}},
                "spec": {"zone": self.zone, "capacity": capacity, "driver": self.driver}}


@dataclass(frozen=True, kw_only=True)
class Fleet:
    settings: Settings
    hosts: tuple[HostSpec, ...]


def default_hosts() -> tuple[HostSpec, ...]:
    hosts: list[HostSpec] = []
    for zone in ZONES:
        short = zone.removeprefix("se-")
        hosts += [HostSpec(name=f"{short}-general-{i}", zone=zone, vcpu=128, memory_gb=1024)
                  for i in range(1, 5)]
        hosts.append(HostSpec(name=f"{short}-l40s-1", zone=zone, vcpu=128, memory_gb=1600,
                              local_disk_gb=32000, gpus={GPU_MODELS[0]: 8}))
        hosts.append(HostSpec(name=f"{short}-b200-1", zone=zone, vcpu=224, memory_gb=2304,
                              local_disk_gb=32000, gpus={GPU_MODELS[1]: 8}))
    return tuple(hosts)


def default_fleet(timing: Timing | None = None) -> Fleet:
    return Fleet(settings=Settings(timing=timing or Timing.realistic()), hosts=default_hosts())


def _number(raw: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = raw.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise FleetError(f"{where}.{key} must be a number >= 0, not {value!r}")
    return float(value)


def _timing(raw: Any) -> Timing:
    if raw in (None, "realistic"):
        return Timing.realistic()
    if raw == "immediate":
        return Timing()
    if not isinstance(raw, dict):
        raise FleetError(f"timing must be immediate, realistic or a mapping, not {raw!r}")
    names = {f.name for f in dataclasses.fields(Timing)}
    unknown = set(raw) - names
    if unknown:
        raise FleetError(f"timing has unknown keys {sorted(unknown)}; known: {sorted(names)}")
    return Timing(**{k: _number(raw, k, "timing") for k in raw})


def _hosts(raw: Any) -> tuple[HostSpec, ...]:
    if raw is None:
        return default_hosts()
    if not isinstance(raw, list) or not raw:
        raise FleetError("hosts must be a non-empty list")
    out: list[HostSpec] = []
    for i, entry in enumerate(raw):
        where = f"hosts[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("zone"), str):
            raise FleetError(f"{where} needs a name and a zone")
        gpus = entry.get("gpus") or {}
        if not isinstance(gpus, dict) or any(m not in GPU_MODELS for m in gpus):
            raise FleetError(f"{where}.gpus maps a model ({', '.join(GPU_MODELS)}) to a count")
        count = int(_number(entry, "count", where, 1))
        names = [entry["name"]] if "count" not in entry else \
            [f"{entry['name']}-{n}" for n in range(1, count + 1)]
        out += [HostSpec(name=name, zone=entry["zone"], vcpu=int(_number(entry, "vcpu", where)),
                         memory_gb=int(_number(entry, "memoryGB", where)),
                         local_disk_gb=int(_number(entry, "localDiskGB", where, 0)),
                         gpus={str(m): int(n) for m, n in gpus.items()}) for name in names]
    seen: set[str] = set()
    for host in out:
        if host.name in seen:
            raise FleetError(f"host {host.name} is listed twice")
        seen.add(host.name)
    return tuple(out)


def parse_fleet(raw: Any) -> Fleet:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise FleetError("a fleet file is a YAML mapping")
    hosts = _hosts(raw.get("hosts"))
    heartbeat = raw.get("heartbeat") or {}
    backoff = raw.get("backoff") or {}
    subnets = dict(DEFAULT_SUBNETS)
    subnets.update(raw.get("subnets") or {})
    next_subnet = 4
    for zone in sorted({h.zone for h in hosts}):
        while zone not in subnets:
            candidate = f"10.0.{next_subnet}.0/24"
            next_subnet += 1
            if candidate not in subnets.values():
                subnets[zone] = candidate
    settings = Settings(
        timing=_timing(raw.get("timing")),
        heartbeat_interval=_number(heartbeat, "interval", "heartbeat", 10.0),
        heartbeat_timeout=_number(heartbeat, "timeout", "heartbeat", 40.0),
        backoff_base=_number(backoff, "base", "backoff", 10.0),
        backoff_max=_number(backoff, "max", "backoff", 300.0),
        public_ip_pool=str(raw.get("publicIPPool", "198.51.100.0/24")),
        subnets=subnets)
    return Fleet(settings=settings, hosts=hosts)


def load_fleet(path: Path) -> Fleet:
    try:
        return parse_fleet(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as problem:
        raise FleetError(f"cannot read the fleet file {path}: {problem}") from None
