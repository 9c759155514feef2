"""What the control plane needs to know about its cloud: timings, heartbeats, back-off, addresses.

One frozen value passed to every controller and agent, read from the fleet file (hosts/fleet.py)
so that tests run with immediate transitions and `make serve` with realistic seconds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

DEFAULT_SUBNETS: Final = {"se-sto-a": "10.0.1.0/24", "se-sto-b": "10.0.2.0/24",
                          "se-sto-c": "10.0.3.0/24"}


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Seconds each simulated transition takes (all zero: immediate)."""

    provision: float = 0.0  # a disk, from accepted to Ready
    pull: float = 0.0  # the boot image, on the host
    boot: float = 0.0  # from start to the guest up
    stop: float = 0.0  # from ACPI power-down to off
    migrate: float = 0.0  # a live migration

    @classmethod
    def realistic(cls) -> Timing:
        return cls(provision=2.0, pull=3.0, boot=5.0, stop=2.0, migrate=5.0)


@dataclass(frozen=True, kw_only=True)
class Settings:
    timing: Timing = field(default_factory=Timing)
    heartbeat_interval: float = 10.0  # how often an agent renews its hosts' leases
    heartbeat_timeout: float = 40.0  # a lease older than this means the host is lost
    backoff_base: float = 10.0  # first wait after a failed image pull or guest crash
    backoff_max: float = 300.0  # the longest such wait
    public_ip_pool: str = "198.51.100.0/24"
    subnets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SUBNETS))

    def backoff(self, failures: int) -> float:
        """The wait after `failures` consecutive failures (1, 2, ...): doubling, capped."""
        return min(self.backoff_max, self.backoff_base * 2.0 ** max(0, failures - 1))

    def subnet(self, zone: str) -> ipaddress.IPv4Network | None:
        cidr = self.subnets.get(zone)
        return ipaddress.IPv4Network(cidr) if cidr else None
