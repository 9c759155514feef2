"""Where an instance runs: the scheduler's decision as a pure function of facts.

Why this module exists: the scheduler has to answer two questions, "which host?" and, when the
answer is "none", "why not?", and the second answer is what a user acts on.  kube-scheduler's
"0/12 nodes are available: ..." is the model, with one difference explained below (each host
is counted once).  The facts are plain frozen dataclasses (`Resources`, `HostState`,
`Request`), the filters are one explicit ordered table (`RULES`), and nothing here reads a
clock, the store or the network: the caller decides that a host is alive (its heartbeat is
fresh) and passes the facts, so the same facts always give the same decision.

Binding is the caller's: it writes the chosen host with optimistic concurrency (the host's
resourceVersion), and on a conflict reads the hosts again and asks again.  An `Unschedulable`
decision is retried when capacity frees (an instance ends, a host joins or is undrained).
`assign_many` places a batch in order against its own copy of the allocations, so a batch
never over-commits a host by itself.

Filters, in order; a host is rejected by the first rule it fails:

1. HostReady ("not ready (heartbeat lost)"): a host without a fresh heartbeat reports stale
   allocations, so nothing else about it can be trusted; it comes first so that its stale
   figures never turn into "insufficient memory".
2. HostSchedulable ("unschedulable (drained)"): an operator's decision about the host; no change
   to the request would make it eligible, so it outranks every request-specific reason.
3. Zone ("in another zone"): the VM's zone (spec.placement.zone, or its boot disk's zone) and
   the zone of its spread placement group are hard constraints; telling a user that a host in
   another zone has "insufficient memory" would send them to resize for nothing.
4. PlacementGroupSpread ("already hosting a member of placement group pg-x"): one member per
   host, whatever is free there; above capacity because capacity frees over time but the member
   stays, so "insufficient memory" would suggest waiting or resizing, neither of which helps.
5. GPU ("insufficient nvidia.com/AD102GL_L40S", per model): the GPU model and count.  Before
   vCPU and memory (a deliberate change from listing it after them): a GPU host is a different
   class of hardware, like Nova's PCI passthrough filter, and a GPU profile's 198-2096 GB of
   memory would otherwise make every CPU-only host read "insufficient memory", hiding that none
   of them has the GPU at all and inviting a smaller profile that still cannot fit.
6. VCPU ("insufficient vCPU").
7. Memory ("insufficient memory").
8. LocalDisk ("insufficient local disk"): only GPU profiles ask for local disk, in proportion to
   their GPUs, so it is rarely the first blocker; it is checked all the same.

Why the first blocker only (kube-scheduler counts every failing filter of every node): a user
acts on the first thing in the way, and counting each host once makes the numbers add up to the
total ("0/12 hosts are available: 8 insufficient memory, 4 in another zone." is 12 hosts).  The
counts are listed by count, largest first, then in rule order (then by label, for the GPU rule's
per-model labels).  One sentence of advice follows when the cause is plain: the VM's zone and
its placement group's zone contradict each other; no host is in the required zone; or every
host left after the first three rules fails the same later rule (then the sentence says how much
the VM needs and the most any of those hosts has free, or that each already runs a member of
the spread group).

Scoring spreads load: among the hosts that pass every filter, a VM without GPUs goes to a host
without GPUs when one fits (GPU hosts are kept for the VMs only they can run); then the one
whose utilisation after placing the VM is lowest wins, utilisation being the larger of its vCPU
and memory fractions; ties go to the host whose name sorts first, so the decision never depends
on the order of the hosts given.  `Placed.score` is the fraction left free by that measure
(1 - utilisation): higher means emptier.

Spread placement groups: `MAX_GROUP_MEMBERS` (5) is enforced by admission, not here; here a
member for which every otherwise eligible host already runs another member is unschedulable,
and the message says so (and notes the limit when the group is over it).  A member counts as
on a host when `Request.group_members_on_hosts` says so or the host lists it in its
`instances`: if the two disagree during a race, rejecting on either never co-locates two
members.  When the group has placed members but no `group_zone` is given, the zone of a
member's host is used: a spread group is zonal.

Cost: `choose` makes one pass over the hosts, keeping each rejected host with its reason so
that the message and its advice never evaluate the rules again (plus one more pass, only when a
group member comes without `group_zone`); each rule is O(1) apart from the GPU rule (per
requested model) and the spread rule (per other member); nothing is quadratic.  `assign_many`
is O(requests x hosts).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

MAX_GROUP_MEMBERS: Final = 5
"""At most this many VMs in a spread placement group (enforced by admission)."""


def _frozen_counts(counts: Mapping[str, int]) -> Mapping[str, int]:
    """A read-only copy, sorted by key, without zero entries (so equal amounts compare equal)."""
    return MappingProxyType({k: counts[k] for k in sorted(counts) if counts[k]})


# ---- facts ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """An amount of compute: vCPUs, memory in bytes, GPUs per model, local disk in GB.

    `gpus` maps a GPU model (e.g. "nvidia.com/AD102GL_L40S") to a count; it is stored read-only
    and without zero counts.  `+` and `-` work field by field (a difference may be negative, e.g.
    the free resources of an over-committed host).
    """

    vcpu: int = 0
    memory_bytes: int = 0
    gpus: Mapping[str, int] = field(default_factory=dict)
    local_disk_gb: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", _frozen_counts(self.gpus))

    def __hash__(self) -> int:
        return hash((self.vcpu, self.memory_bytes, tuple(self.gpus.items()), self.local_disk_gb))

    def fits_in(self, other: Resources) -> bool:
        """True when every amount here is at most the same amount in `other`."""
        return (self.vcpu <= other.vcpu and self.memory_bytes <= other.memory_bytes
                and self.local_disk_gb <= other.local_disk_gb
                and all(n <= other.gpus.get(model, 0) for model, n in self.gpus.items()))

    def _combine(self, other: Resources, sign: int) -> Resources:
        gpus = dict(self.gpus)
        for model, n in other.gpus.items():
            gpus[model] = gpus.get(model, 0) + sign * n
        return Resources(vcpu=self.vcpu + sign * other.vcpu,
                         memory_bytes=self.memory_bytes + sign * other.memory_bytes,
                         gpus=gpus, local_disk_gb=self.local_disk_gb + sign * other.local_disk_gb)

    def __add__(self, other: Resources) -> Resources:
        return self._combine(other, 1)

    def __sub__(self, other: Resources) -> Resources:
        return self._combine(other, -1)


NOTHING: Final = Resources()
"""No resources at all."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HostState:
    """A Host as the scheduler sees it.

    `capacity` is what the host offers to VMs, `allocated` the sum of the resources of the
    instances bound to it (named in `instances`).  `alive` is False when its heartbeat is stale
    (the caller decides, against its own clock); `schedulable` is False while it is drained.
    """

    name: str
    zone: str
    capacity: Resources
    allocated: Resources = NOTHING
    schedulable: bool = True
    alive: bool = True
    instances: frozenset[str] = frozenset()

    @property
    def free(self) -> Resources:
        return self.capacity - self.allocated


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One unbound instance to place.

    `zone` is the zone the VM must run in (spec.placement.zone, or the zone of its boot disk),
    None when any zone will do.  `placement_group` names its spread placement group, if any;
    `group_zone` is the group's zone (None until its first member is placed) and
    `group_members_on_hosts` maps the group's other placed members (instance keys) to their
    hosts.  The request's own instance in that mapping is ignored (it is being placed anew).
    """

    instance: str
    resources: Resources
    zone: str | None = None
    placement_group: str | None = None
    group_zone: str | None = None
    group_members_on_hosts: Mapping[str, str] = field(default_factory=dict)
    # derived in __post_init__: the other members, and the hosts they run on
    _members: frozenset[str] = field(init=False, repr=False, compare=False)
    _member_hosts: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        members = MappingProxyType(dict(sorted(self.group_members_on_hosts.items())))
        object.__setattr__(self, "group_members_on_hosts", members)
        others = {m: h for m, h in members.items() if m != self.instance} \
            if self.placement_group is not None else {}
        object.__setattr__(self, "_members", frozenset(others))
        object.__setattr__(self, "_member_hosts", frozenset(others.values()))

    def __hash__(self) -> int:
        return hash((self.instance, self.resources, self.zone, self.placement_group, self.group_zone,
                     tuple(self.group_members_on_hosts.items())))


# ---- the decision -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Placed:
    """Bind the instance to `host`; `score` is the fraction of it left free (higher is emptier)."""

    host: str
    score: float


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """No host fits: `message` for the user, `rejected` counts hosts per reason (first blocker).

    `rejected` is ordered as in the message: by count, largest first, then by rule order.
    """

    message: str
    rejected: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rejected", MappingProxyType(dict(self.rejected)))

    def __hash__(self) -> int:
        return hash((self.message, tuple(self.rejected.items())))


Decision: TypeAlias = Placed | Unschedulable


# ---- the rules, in order ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rule:
    """One filter: its name, whether a host passes, and the reason label when it does not."""

    name: str
    passes: Callable[[Request, HostState], bool]
    reason: Callable[[Request, HostState], str]


NOT_READY: Final = "not ready (heartbeat lost)"
DRAINED: Final = "unschedulable (drained)"
OTHER_ZONE: Final = "in another zone"
NO_VCPU: Final = "insufficient vCPU"
NO_MEMORY: Final = "insufficient memory"
NO_LOCAL_DISK: Final = "insufficient local disk"


def spread_reason(group: str) -> str:
    """The reason label of a host that already runs a member of spread group `group`."""
    return f"already hosting a member of placement group {group}"


def gpu_reason(model: str) -> str:
    """The reason label of a host without enough free GPUs of `model`."""
    return f"insufficient {model}"


def _free_gpus(host: HostState, model: str) -> int:
    return host.capacity.gpus.get(model, 0) - host.allocated.gpus.get(model, 0)


def _in_zone(r: Request, h: HostState) -> bool:
    return (r.zone is None or h.zone == r.zone) and (r.group_zone is None or h.zone == r.group_zone)


def _spread_ok(r: Request, h: HostState) -> bool:
    return r.placement_group is None or (h.name not in r._member_hosts
                                         and r._members.isdisjoint(h.instances))


def _gpus_ok(r: Request, h: HostState) -> bool:
    return not r.resources.gpus or all(_free_gpus(h, model) >= n for model, n in r.resources.gpus.items())


def _gpu_label(r: Request, h: HostState) -> str:
    return gpu_reason(next(m for m, n in r.resources.gpus.items() if _free_gpus(h, m) < n))


RULES: Final[tuple[Rule, ...]] = (
    Rule("HostReady", lambda r, h: h.alive, lambda r, h: NOT_READY),
    Rule("HostSchedulable", lambda r, h: h.schedulable, lambda r, h: DRAINED),
    Rule("Zone", _in_zone, lambda r, h: OTHER_ZONE),
    Rule("PlacementGroupSpread", _spread_ok, lambda r, h: spread_reason(str(r.placement_group))),
    Rule("GPU", _gpus_ok, _gpu_label),
    Rule("VCPU", lambda r, h: h.capacity.vcpu - h.allocated.vcpu >= r.resources.vcpu,
         lambda r, h: NO_VCPU),
    Rule("Memory", lambda r, h: h.capacity.memory_bytes - h.allocated.memory_bytes
         >= r.resources.memory_bytes, lambda r, h: NO_MEMORY),
    Rule("LocalDisk", lambda r, h: h.capacity.local_disk_gb - h.allocated.local_disk_gb
         >= r.resources.local_disk_gb, lambda r, h: NO_LOCAL_DISK),
)
"""The filters in order: a host is counted under the first one it fails."""

_HOST_RULES: Final = 3
"""RULES[:3] are about the host and the zone; the rest about whether this VM fits there."""


def _first_rejection(request: Request, host: HostState) -> tuple[int, str] | None:
    for i, rule in enumerate(RULES):
        if not rule.passes(request, host):
            return i, rule.reason(request, host)
    return None


def first_rejection(request: Request, host: HostState) -> str | None:
    """The reason label of the first rule `host` fails for `request`, or None if it passes all."""
    found = _first_rejection(request, host)
    return found[1] if found is not None else None


# ---- scoring ----------------------------------------------------------------------------

def _fraction(used: int, capacity: int) -> float:
    if capacity > 0:
        return used / capacity
    return 0.0 if used <= 0 else math.inf


def utilisation_after(resources: Resources, host: HostState) -> float:
    """The host's utilisation once `resources` are added: the larger of vCPU and memory fractions."""
    return max(_fraction(host.allocated.vcpu + resources.vcpu, host.capacity.vcpu),
               _fraction(host.allocated.memory_bytes + resources.memory_bytes,
                         host.capacity.memory_bytes))


# ---- the message ------------------------------------------------------------------------

def _zone(r: Request) -> str | None:
    return r.zone if r.zone is not None else r.group_zone


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _gb(n: int) -> str:
    """Memory as whole GB or GiB when it is one, else GB to two decimals (rounded down)."""
    if n % 10**9 == 0:
        return f"{n // 10**9} GB"
    if n % 2**30 == 0:
        return f"{n // 2**30} GiB"
    return f"{n // 10**7 // 100}.{n // 10**7 % 100:02d} GB"


def _capacity_advice(request: Request, rejected_hosts: Sequence[tuple[HostState, str]], rule: Rule,
                     label: str, where: str) -> str:
    """"No ready host has N free; the most free on one is M": over the hosts this rule rejected."""
    free: Callable[[HostState], int]
    most: Callable[[int], str]
    if rule.name == "GPU":
        model = label.removeprefix("insufficient ")
        free = lambda h: _free_gpus(h, model)  # noqa: E731
        wanted, most = f"{request.resources.gpus[model]} {model}", str
    elif rule.name == "VCPU":
        free = lambda h: h.capacity.vcpu - h.allocated.vcpu  # noqa: E731
        wanted, most = _plural(request.resources.vcpu, "vCPU"), str
    elif rule.name == "Memory":
        free = lambda h: h.capacity.memory_bytes - h.allocated.memory_bytes  # noqa: E731
        wanted, most = f"{_gb(request.resources.memory_bytes)} of memory", _gb
    else:
        free = lambda h: h.capacity.local_disk_gb - h.allocated.local_disk_gb  # noqa: E731
        wanted, most = f"{request.resources.local_disk_gb} GB of local disk", lambda n: f"{n} GB"
    largest = max((free(h) for h, why in rejected_hosts if why == label), default=0)
    return f"No ready host{where} has {wanted} free; the most free on one is {most(max(largest, 0))}."


def _advice(request: Request, rejected_hosts: Sequence[tuple[HostState, str]],
            rejected: Mapping[str, int], rank: Mapping[str, int]) -> str:
    """One sentence when the cause is plain, else ""."""
    zone = _zone(request)
    where = f" in zone {zone}" if zone is not None else ""
    if request.zone is not None and request.group_zone is not None and request.zone != request.group_zone:
        return (f"The VM must run in zone {request.zone} but its placement group "
                f"{request.placement_group} is in zone {request.group_zone}; no host can be in both.")
    fit = [label for label in rejected if rank[label] >= _HOST_RULES]
    if len(fit) == 1:
        label = fit[0]
        rule = RULES[rank[label]]
        if rule.name != "PlacementGroupSpread":
            return _capacity_advice(request, rejected_hosts, rule, label, where)
        advice = (f"Placement group {request.placement_group} runs each member on a different host, "
                  f"and every ready host{where} already runs one of its "
                  f"{_plural(len(request._members), 'other member')}; this member can be placed when "
                  f"another host{where} is ready or a member leaves the group.")
        if len(request._members) + 1 > MAX_GROUP_MEMBERS:
            advice += (f" A spread placement group holds at most {MAX_GROUP_MEMBERS} members; this "
                       f"would be member {len(request._members) + 1}.")
        return advice
    if not fit and set(rejected) == {OTHER_ZONE} and zone is not None:
        return f"No host is in zone {zone}."
    return ""


def _unschedulable(request: Request, rejected_hosts: Sequence[tuple[HostState, str]],
                   rank: Mapping[str, int]) -> Unschedulable:
    """The decision when every host was rejected: `rejected_hosts` pairs each with its reason."""
    if not rejected_hosts:
        return Unschedulable("0/0 hosts are available: no host is registered.", {})
    rejected = Counter(label for _, label in rejected_hosts)
    ordered = dict(sorted(rejected.items(), key=lambda kv: (-kv[1], rank[kv[0]], kv[0])))
    counts = ", ".join(f"{n} {label}" for label, n in ordered.items())
    message = f"0/{len(rejected_hosts)} hosts are available: {counts}."
    advice = _advice(request, rejected_hosts, ordered, rank)
    return Unschedulable(f"{message} {advice}" if advice else message, ordered)


# ---- the functions ----------------------------------------------------------------------

def _with_group_zone(request: Request, hosts: Sequence[HostState]) -> Request:
    """A spread group is zonal: without a given group zone, its placed members' zone applies."""
    if request.placement_group is None or request.group_zone is not None or not request._members:
        return request
    zone = next((h.zone for h in hosts
                 if h.name in request._member_hosts or not request._members.isdisjoint(h.instances)),
                None)
    return request if zone is None else dataclasses.replace(request, group_zone=zone)


def _wastes_gpus(request: Request, host: HostState) -> bool:
    """A VM without GPUs on a GPU host takes capacity only GPU VMs can use."""
    return not request.resources.gpus and bool(host.capacity.gpus)


def choose(request: Request, hosts: Sequence[HostState]) -> Decision:
    """The host for `request` among `hosts` (unique names), or why there is none.

    One pass over the hosts: each is filtered by `RULES` and counted under its first rejection;
    among those that pass, the lowest `utilisation_after` wins, ties broken by name.
    """
    request = _with_group_zone(request, hosts)
    best: HostState | None = None
    best_used = math.inf
    best_order: tuple[bool, float, str] = (True, math.inf, "")
    rejected_hosts: list[tuple[HostState, str]] = []
    rank: dict[str, int] = {}
    for host in hosts:
        found = _first_rejection(request, host)
        if found is not None:
            i, label = found
            rejected_hosts.append((host, label))
            rank.setdefault(label, i)
            continue
        used = utilisation_after(request.resources, host)
        order = (_wastes_gpus(request, host), used, host.name)
        if best is None or order < best_order:
            best, best_used, best_order = host, used, order
    if best is not None:
        return Placed(best.name, 1.0 - best_used)
    return _unschedulable(request, rejected_hosts, rank)


def assign_many(requests: Iterable[Request], hosts: Iterable[HostState]) -> list[Decision]:
    """Place a batch in order, each decision seeing the allocations of the ones before it.

    Works on its own copy of the hosts, so the batch never over-commits a host by itself (the
    caller still binds each decision with optimistic concurrency).  Members of one spread group
    in the same batch see each other's hosts and zone.  Instance keys must be unique in the
    batch and host names unique among the hosts.
    """
    current = list(hosts)
    index = {h.name: i for i, h in enumerate(current)}
    if len(index) != len(current):
        raise ValueError("host names must be unique")
    group_hosts: dict[str, dict[str, str]] = {}
    group_zones: dict[str, str] = {}
    decisions: list[Decision] = []
    for request in requests:
        group = request.placement_group
        if group is not None and group in group_hosts:
            request = dataclasses.replace(
                request,
                group_members_on_hosts={**request.group_members_on_hosts, **group_hosts[group]},
                group_zone=request.group_zone if request.group_zone is not None else group_zones[group])
        decision = choose(request, current)
        if isinstance(decision, Placed):
            i = index[decision.host]
            host = current[i]
            current[i] = dataclasses.replace(host, allocated=host.allocated + request.resources)
            if group is not None:
                group_hosts.setdefault(group, {})[request.instance] = host.name
                group_zones.setdefault(group, host.zone)
        decisions.append(decision)
    return decisions
