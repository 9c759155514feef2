"""What bench/wrk.py reads (pure): wrk's result line, the servers' counts, and the checks of
one against the other."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

EC2_NS = "{http://ec2.amazonaws.com/doc/2016-11-15}"


@dataclass(frozen=True)
class WrkResult:
    """What bench/wrk.lua's `done` reported: counts, duration, latency percentiles (ms)."""

    requests: int
    duration_s: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]  # only the kinds that happened
    latency_ms: dict[str, float]

    @property
    def rate(self) -> float:
        """Responses per second (any status)."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


def parse_wrk(stdout: str) -> WrkResult:
    """The `WRK_RESULT {json}` line bench/wrk.lua prints after wrk's own report."""
    lines = [line for line in stdout.splitlines() if line.startswith("WRK_RESULT ")]
    if len(lines) != 1:
        raise ValueError(f"expected one WRK_RESULT line in wrk's output, found {len(lines)}")
    raw = json.loads(lines[0].removeprefix("WRK_RESULT "))
    # errors.status is wrk's count of answers >= 400: the statuses say that, and more exactly
    sockets = {k: int(v) for k, v in raw["errors"].items() if k != "status" and v}
    return WrkResult(
        requests=int(raw["requests"]), duration_s=raw["duration_us"] / 1e6,
        statuses={int(k): int(v) for k, v in raw["statuses"].items()},
        socket_errors=sockets,
        latency_ms={k: v / 1000 for k, v in raw["latency_us"].items()})


def stored_check(stored: int, ok: int, connections: int) -> str:
    """'' when the objects a phase stored match its 2xx answers, else what is wrong. wrk stops
    at its deadline without reading the answers still in flight (at most one per connection):
    those may be stored although wrk never counted them."""
    if stored < ok:
        return f"{ok - stored} answered 2xx but not stored"
    if stored - ok > connections:
        return (f"{stored - ok} stored beyond the 2xx answers (more than the {connections} "
                "requests that can be in flight)")
    return ""


def ratio(ours: float, peer: float) -> float:
    return ours / peer if peer else float("nan")


_CREATES_201 = re.compile(
    r'^apiserver_request_total\{(?=[^}]*verb="CREATE")(?=[^}]*code="201")'
    r'(?=[^}]*resource="virtualmachines")[^}]*\} ([0-9.e+]+)$', re.M)


def created_in_metrics(text: str) -> int:
    """The server's count of VirtualMachine creates answered 201, from /metrics' text."""
    return int(sum(float(v) for v in _CREATES_201.findall(text)))


def ec2_instance_ids(root: ET.Element) -> list[str]:
    """The instance ids in a DescribeInstances or RunInstances answer (the items that have an
    instanceState: not the reservations, network interfaces or volumes around them)."""
    return [item.findtext(f"{EC2_NS}instanceId", "") for item in root.iter(f"{EC2_NS}item")
            if item.find(f"{EC2_NS}instanceState") is not None]
