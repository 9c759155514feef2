"""Placement is a pure decision: every filter, the first-blocker counts, the message, spread groups."""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter, defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evroc_compute.scheduler import placement
from evroc_compute.scheduler.placement import (
    DRAINED,
    MAX_GROUP_MEMBERS,
    NO_LOCAL_DISK,
    NO_MEMORY,
    NO_VCPU,
    NOT_READY,
    NOTHING,
    OTHER_ZONE,
    RULES,
    Decision,
    HostState,
    Placed,
    Request,
    Resources,
    Unschedulable,
    assign_many,
    choose,
    first_rejection,
    gpu_reason,
    spread_reason,
    utilisation_after,
)

G = 10**9
L40S = "nvidia.com/AD102GL_L40S"
B200 = "nvidia.com/GB100_B200"
A, B, C = "se-sto-a", "se-sto-b", "se-sto-c"


def res(cpu: int = 0, mem_gb: int = 0, gpus: dict[str, int] | None = None, disk: int = 0) -> Resources:
    return Resources(vcpu=cpu, memory_bytes=mem_gb * G, gpus=gpus or {}, local_disk_gb=disk)


def host(name: str = "h1", zone: str = A, cpu: int = 64, mem_gb: int = 256,
         gpus: dict[str, int] | None = None, disk: int = 0, used: Resources = NOTHING,
         **kw: Any) -> HostState:
    """An empty, live, schedulable host in zone a, changed by the arguments."""
    return HostState(name=name, zone=zone, capacity=res(cpu, mem_gb, gpus, disk), allocated=used, **kw)


def req(instance: str = "ns/vm", cpu: int = 2, mem_gb: int = 8, gpus: dict[str, int] | None = None,
        disk: int = 0, **kw: Any) -> Request:
    """An a1a.s-sized request for any zone, changed by the arguments."""
    return Request(instance=instance, resources=res(cpu, mem_gb, gpus, disk), **kw)


def unschedulable(decision: Decision) -> Unschedulable:
    assert isinstance(decision, Unschedulable), decision
    return decision


def placed(decision: Decision) -> Placed:
    assert isinstance(decision, Placed), decision
    return decision


# ---- the rules --------------------------------------------------------------------------

def test_the_rule_order_is_the_documented_one() -> None:
    documented = re.findall(r"^\d+\. (\w+) \(", placement.__doc__ or "", flags=re.MULTILINE)
    assert documented == [rule.name for rule in RULES] == [
        "HostReady", "HostSchedulable", "Zone", "PlacementGroupSpread", "GPU", "VCPU", "Memory",
        "LocalDisk"]


def test_the_baseline_host_passes_every_rule_for_the_baseline_request() -> None:
    assert first_rejection(req(), host()) is None
    assert placed(choose(req(), [host()])).host == "h1"


# Each row changes one fact of the baseline, so the host fails that rule and no other.
EVERY_FILTER = [
    pytest.param(host(alive=False), req(), NOT_READY,
                 id="a host whose heartbeat is lost is rejected as not ready"),
    pytest.param(host(schedulable=False), req(), DRAINED,
                 id="a drained host is rejected as unschedulable"),
    pytest.param(host(zone=B), req(zone=A), OTHER_ZONE,
                 id="a host outside the VM's required zone is rejected as in another zone"),
    pytest.param(host(zone=B), req(placement_group="pg-x", group_zone=A), OTHER_ZONE,
                 id="a host outside the placement group's zone is rejected as in another zone"),
    pytest.param(host(), req(placement_group="pg-x", group_zone=A,
                             group_members_on_hosts={"ns/other": "h1"}), spread_reason("pg-x"),
                 id="a host named as running another member of the spread group is rejected"),
    pytest.param(host(instances=frozenset({"ns/other"})),
                 req(placement_group="pg-x", group_zone=A, group_members_on_hosts={"ns/other": "h9"}),
                 spread_reason("pg-x"),
                 id="a host listing another member of the spread group among its instances is rejected"),
    pytest.param(host(gpus={L40S: 1}), req(gpus={L40S: 2}), gpu_reason(L40S),
                 id="a host with too few free GPUs of the model is rejected as insufficient <model>"),
    pytest.param(host(gpus={L40S: 4}, used=res(gpus={L40S: 3})), req(gpus={L40S: 2}), gpu_reason(L40S),
                 id="GPUs already allocated on a host are not free"),
    pytest.param(host(cpu=4), req(cpu=8), NO_VCPU,
                 id="a host with too few free vCPUs is rejected as insufficient vCPU"),
    pytest.param(host(used=res(cpu=60)), req(cpu=8), NO_VCPU,
                 id="vCPUs already allocated on a host are not free"),
    pytest.param(host(mem_gb=4), req(mem_gb=8), NO_MEMORY,
                 id="a host with too little free memory is rejected as insufficient memory"),
    pytest.param(host(disk=100), req(disk=200), NO_LOCAL_DISK,
                 id="a host with too little free local disk is rejected as insufficient local disk"),
]


@pytest.mark.parametrize(("the_host", "request_", "label"), EVERY_FILTER)
def test_every_filter_alone(the_host: HostState, request_: Request, label: str) -> None:
    assert first_rejection(request_, the_host) == label
    decision = unschedulable(choose(request_, [the_host]))
    assert decision.rejected == {label: 1}
    assert decision.message.startswith(f"0/1 hosts are available: 1 {label}.")


# A host failing several rules is counted under the first of them only.
FIRST_BLOCKER = [
    pytest.param(host(alive=False, schedulable=False, zone=B, mem_gb=1), req(zone=A), NOT_READY,
                 id="not ready outranks drained, zone and capacity"),
    pytest.param(host(schedulable=False, zone=B, mem_gb=1), req(zone=A), DRAINED,
                 id="drained outranks zone and capacity"),
    pytest.param(host(zone=B, cpu=1, mem_gb=1), req(zone=A), OTHER_ZONE,
                 id="another zone outranks capacity"),
    pytest.param(host(mem_gb=1), req(placement_group="pg-x", group_members_on_hosts={"ns/m1": "h1"}),
                 spread_reason("pg-x"), id="a spread group member on the host outranks capacity"),
    pytest.param(host(cpu=1, mem_gb=1), req(cpu=15, mem_gb=198, gpus={L40S: 1}), gpu_reason(L40S),
                 id="a missing GPU outranks vCPU and memory (a CPU host is the wrong kind of host)"),
    pytest.param(host(cpu=1, mem_gb=1), req(cpu=2, mem_gb=8), NO_VCPU,
                 id="insufficient vCPU outranks insufficient memory"),
    pytest.param(host(mem_gb=1, disk=0), req(mem_gb=8, disk=100), NO_MEMORY,
                 id="insufficient memory outranks insufficient local disk"),
]


@pytest.mark.parametrize(("the_host", "request_", "label"), FIRST_BLOCKER)
def test_a_host_is_counted_under_its_first_blocker(the_host: HostState, request_: Request,
                                                   label: str) -> None:
    assert unschedulable(choose(request_, [the_host])).rejected == {label: 1}


def test_each_host_is_counted_once_so_the_counts_add_up_to_the_total() -> None:
    hosts = [host("h1", alive=False, mem_gb=1), host("h2", schedulable=False, cpu=1),
             host("h3", zone=B, mem_gb=1), host("h4", mem_gb=1, cpu=1), host("h5", mem_gb=1),
             host("h6", zone=C)]
    decision = unschedulable(choose(req(zone=A), hosts))
    assert sum(decision.rejected.values()) == len(hosts)
    assert decision.rejected == {OTHER_ZONE: 2, NOT_READY: 1, DRAINED: 1, NO_VCPU: 1, NO_MEMORY: 1}


# ---- the message ------------------------------------------------------------------------

def _fleet_8_full_in_a_4_in_b() -> list[HostState]:
    hosts = [host(f"a{i}", A, used=res(mem_gb=200 + i)) for i in range(8)]
    return hosts + [host(f"b{i}", B) for i in range(4)]


MESSAGES = [
    pytest.param(
        req(mem_gb=64, zone=A), _fleet_8_full_in_a_4_in_b(),
        "0/12 hosts are available: 8 insufficient memory, 4 in another zone. "
        "No ready host in zone se-sto-a has 64 GB of memory free; the most free on one is 56 GB.",
        id="counts by count then rule order, with how much the best host has free"),
    pytest.param(
        req(zone=A, mem_gb=16),
        [host("h1", schedulable=False), host("h2", schedulable=False), host("h3", mem_gb=8),
         host("h4", mem_gb=8), host("h5", zone=B)],
        "0/5 hosts are available: 2 unschedulable (drained), 2 insufficient memory, 1 in another zone. "
        "No ready host in zone se-sto-a has 16 GB of memory free; the most free on one is 8 GB.",
        id="equal counts are listed in rule order"),
    pytest.param(
        req(cpu=8, mem_gb=16), [host("h1", cpu=4), host("h2", mem_gb=8)],
        "0/2 hosts are available: 1 insufficient vCPU, 1 insufficient memory.",
        id="no advice when more than one capacity rule is the blocker"),
    pytest.param(
        req(cpu=16), [host("h1", cpu=8), host("h2", cpu=12, used=res(cpu=11)), host("h3", alive=False)],
        "0/3 hosts are available: 2 insufficient vCPU, 1 not ready (heartbeat lost). "
        "No ready host has 16 vCPUs free; the most free on one is 8.",
        id="vCPU advice without a zone"),
    pytest.param(
        req(cpu=1, disk=4000), [host("h1", disk=3800), host("h2", disk=16000, used=res(disk=15200))],
        "0/2 hosts are available: 2 insufficient local disk. "
        "No ready host has 4000 GB of local disk free; the most free on one is 3800 GB.",
        id="local disk advice"),
    pytest.param(
        req(zone=A, cpu=15, mem_gb=198, gpus={L40S: 2}),
        [host("g1", gpus={L40S: 4}, cpu=64, mem_gb=1024, used=res(gpus={L40S: 3})),
         host("g2", gpus={L40S: 1}, cpu=64, mem_gb=1024), host("g3", zone=B, gpus={L40S: 4})],
        "0/3 hosts are available: 2 insufficient nvidia.com/AD102GL_L40S, 1 in another zone. "
        "No ready host in zone se-sto-a has 2 nvidia.com/AD102GL_L40S free; the most free on one is 1.",
        id="when every fitting rejection is one GPU model, say how many the VM needs"),
    pytest.param(
        req(zone=C), [host("h1", zone=A), host("h2", zone=B)],
        "0/2 hosts are available: 2 in another zone. No host is in zone se-sto-c.",
        id="no host in the required zone"),
    pytest.param(
        req(zone=A, placement_group="pg-x", group_zone=B), [host("h1", zone=A), host("h2", zone=B)],
        "0/2 hosts are available: 2 in another zone. The VM must run in zone se-sto-a but its "
        "placement group pg-x is in zone se-sto-b; no host can be in both.",
        id="a VM zone that contradicts its placement group's zone is named"),
    pytest.param(
        req(), [],
        "0/0 hosts are available: no host is registered.",
        id="no hosts at all"),
    pytest.param(
        req(mem_gb=8), [host("h1", mem_gb=256, used=Resources(memory_bytes=250_494_000_000))],
        "0/1 hosts are available: 1 insufficient memory. "
        "No ready host has 8 GB of memory free; the most free on one is 5.50 GB.",
        id="memory that is not a whole number of GB is shown to two decimals, rounded down"),
    pytest.param(
        Request(instance="ns/vm", resources=Resources(memory_bytes=16 * 2**30)),
        [HostState(name="h1", zone=A, capacity=Resources(vcpu=4, memory_bytes=8 * 2**30))],
        "0/1 hosts are available: 1 insufficient memory. "
        "No ready host has 16 GiB of memory free; the most free on one is 8 GiB.",
        id="memory in whole GiB is shown in GiB"),
]


@pytest.mark.parametrize(("request_", "hosts", "message"), MESSAGES)
def test_the_message_is_exactly(request_: Request, hosts: list[HostState], message: str) -> None:
    assert unschedulable(choose(request_, hosts)).message == message


def test_rejected_is_ordered_like_the_message() -> None:
    decision = unschedulable(choose(req(mem_gb=64, zone=A), _fleet_8_full_in_a_4_in_b()))
    assert list(decision.rejected.items()) == [(NO_MEMORY, 8), (OTHER_ZONE, 4)]


# ---- GPUs -------------------------------------------------------------------------------

def test_a_gpu_model_mismatch_is_named_by_the_missing_model() -> None:
    hosts = [host(f"b{i}", gpus={B200: 8}, cpu=224, mem_gb=2304, disk=32000) for i in range(3)]
    decision = unschedulable(choose(req(cpu=15, mem_gb=198, gpus={L40S: 1}, disk=3800), hosts))
    assert decision.message == (
        "0/3 hosts are available: 3 insufficient nvidia.com/AD102GL_L40S. "
        "No ready host has 1 nvidia.com/AD102GL_L40S free; the most free on one is 0.")


def test_with_several_gpu_models_the_first_missing_one_is_named() -> None:
    assert first_rejection(req(gpus={L40S: 1, B200: 1}), host(gpus={L40S: 1})) == gpu_reason(B200)
    assert first_rejection(req(gpus={L40S: 1, B200: 1}), host(gpus={B200: 1})) == gpu_reason(L40S)


def test_a_gpu_vm_lands_on_a_host_of_its_model() -> None:
    hosts = [host("b1", gpus={B200: 8}, cpu=224, mem_gb=2304), host("c1", cpu=256, mem_gb=4096),
             host("l1", gpus={L40S: 4}, cpu=64, mem_gb=1024)]
    assert placed(choose(req(cpu=15, mem_gb=198, gpus={L40S: 1}), hosts)).host == "l1"


# ---- spread placement groups ------------------------------------------------------------

SPREAD_FULL = (
    "0/3 hosts are available: 3 already hosting a member of placement group pg-x. "
    "Placement group pg-x runs each member on a different host, and every ready host in zone "
    "se-sto-a already runs one of its 3 other members; this member can be placed when another "
    "host in zone se-sto-a is ready or a member leaves the group.")


def test_a_spread_group_with_more_members_than_hosts_leaves_the_extra_member_unschedulable() -> None:
    hosts = [host(f"h{i}") for i in (1, 2, 3)]
    members = [req(f"ns/m{i}", placement_group="pg-x") for i in (1, 2, 3, 4)]
    decisions = assign_many(members, hosts)
    assert sorted(placed(d).host for d in decisions[:3]) == ["h1", "h2", "h3"]
    assert unschedulable(decisions[3]).message == SPREAD_FULL


def test_the_extra_member_gets_the_same_message_when_the_others_are_already_bound() -> None:
    hosts = [host(f"h{i}", instances=frozenset({f"ns/m{i}"})) for i in (1, 2, 3)]
    request_ = req("ns/m4", placement_group="pg-x",
                   group_members_on_hosts={f"ns/m{i}": f"h{i}" for i in (1, 2, 3)})
    assert unschedulable(choose(request_, hosts)).message == SPREAD_FULL


def test_a_group_over_the_member_limit_is_told_so() -> None:
    hosts = [host(f"h{i}") for i in range(1, MAX_GROUP_MEMBERS + 1)]
    request_ = req("ns/m6", placement_group="pg-x", group_zone=A,
                   group_members_on_hosts={f"ns/m{i}": f"h{i}" for i in range(1, 6)})
    message = unschedulable(choose(request_, hosts)).message
    assert message.endswith("A spread placement group holds at most 5 members; this would be member 6.")


def test_a_member_being_placed_again_does_not_block_its_own_old_host() -> None:
    request_ = req("ns/m1", placement_group="pg-x", group_members_on_hosts={"ns/m1": "h1"})
    assert placed(choose(request_, [host("h1")])).host == "h1"


def test_a_spread_group_is_zonal_in_a_batch() -> None:
    hosts = [host("a1", A, used=res(cpu=32)), host("a2", A, used=res(cpu=32)), host("b1", B)]
    decisions = assign_many([req("ns/m1", placement_group="pg-x"),
                             req("ns/m2", placement_group="pg-x")], hosts)
    assert placed(decisions[0]).host == "b1"
    assert unschedulable(decisions[1]).rejected == {OTHER_ZONE: 2, spread_reason("pg-x"): 1}


def test_a_spread_group_without_a_given_zone_takes_its_placed_members_zone() -> None:
    request_ = req("ns/m2", placement_group="pg-x", group_members_on_hosts={"ns/m1": "a1"})
    hosts = [host("a1", A), host("b1", B)]
    assert unschedulable(choose(request_, hosts)).rejected == {spread_reason("pg-x"): 1, OTHER_ZONE: 1}
    assert placed(choose(request_, [*hosts, host("a2", A)])).host == "a2"


def test_members_of_different_groups_may_share_a_host() -> None:
    decisions = assign_many([req("ns/x", placement_group="pg-x"), req("ns/y", placement_group="pg-y")],
                            [host("h1")])
    assert [placed(d).host for d in decisions] == ["h1", "h1"]


# ---- scoring ----------------------------------------------------------------------------

def test_six_identical_vms_spread_two_two_two_over_three_hosts() -> None:
    hosts = [host(f"h{i}", cpu=16, mem_gb=64) for i in (1, 2, 3)]
    decisions = assign_many([req(f"ns/vm{i}", cpu=2, mem_gb=8) for i in range(6)], hosts)
    assert Counter(placed(d).host for d in decisions) == {"h1": 2, "h2": 2, "h3": 2}
    assert [placed(d).host for d in decisions] == ["h1", "h2", "h3", "h1", "h2", "h3"]


SCORING = [
    pytest.param([host("big", cpu=128, used=res(cpu=64)), host("small", cpu=16)], req(cpu=8), "small",
                 id="the host with the lowest utilisation after placement wins, not the one with most free"),
    pytest.param([host("cpu-free", cpu=64, mem_gb=64, used=res(mem_gb=48)),
                  host("mem-free", cpu=64, mem_gb=64, used=res(cpu=40))], req(cpu=4, mem_gb=4), "mem-free",
                 id="utilisation is the larger of the vCPU and memory fractions"),
    pytest.param([host("b"), host("c"), host("a")], req(), "a",
                 id="ties go to the host whose name sorts first"),
]


@pytest.mark.parametrize(("hosts", "request_", "winner"), SCORING)
def test_scoring_spreads_load(hosts: list[HostState], request_: Request, winner: str) -> None:
    assert placed(choose(request_, hosts)).host == winner


def test_the_score_is_the_fraction_left_free() -> None:
    decision = placed(choose(req(cpu=8, mem_gb=16), [host(cpu=32, mem_gb=128, used=res(cpu=8))]))
    assert decision.score == 0.5
    assert utilisation_after(res(cpu=8, mem_gb=16), host(cpu=32, mem_gb=128, used=res(cpu=8))) == 0.5


# ---- batches ----------------------------------------------------------------------------

def test_a_batch_fills_hosts_then_reports_the_rest_unschedulable() -> None:
    hosts = [host(f"h{i}", cpu=4, mem_gb=16) for i in (1, 2, 3)]
    decisions = assign_many([req(f"ns/vm{i}") for i in range(8)], hosts)
    assert Counter(placed(d).host for d in decisions[:6]) == {"h1": 2, "h2": 2, "h3": 2}
    assert [unschedulable(d).rejected for d in decisions[6:]] == [{NO_VCPU: 3}, {NO_VCPU: 3}]


def test_a_batch_does_not_change_the_hosts_it_was_given() -> None:
    hosts = [host("h1")]
    assign_many([req("ns/vm")], hosts)
    assert hosts == [host("h1")]


def test_a_batch_refuses_duplicate_host_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        assign_many([req()], [host("h1"), host("h1")])


zones = st.sampled_from([A, B, C])
models = st.sampled_from([L40S, B200])


@st.composite
def fleets(draw: st.DrawFn) -> list[HostState]:
    hosts = []
    for i in range(draw(st.integers(0, 8))):
        capacity = Resources(vcpu=draw(st.integers(0, 32)), memory_bytes=draw(st.integers(0, 64)) * G,
                             gpus=draw(st.dictionaries(models, st.integers(0, 4))),
                             local_disk_gb=draw(st.integers(0, 100)))
        allocated = Resources(
            vcpu=draw(st.integers(0, capacity.vcpu)),
            memory_bytes=draw(st.integers(0, capacity.memory_bytes // G)) * G,
            gpus={m: draw(st.integers(0, n)) for m, n in capacity.gpus.items()},
            local_disk_gb=draw(st.integers(0, capacity.local_disk_gb)))
        hosts.append(HostState(name=f"h{i}", zone=draw(zones), capacity=capacity, allocated=allocated,
                               schedulable=draw(st.sampled_from([True, True, True, False])),
                               alive=draw(st.sampled_from([True, True, True, False]))))
    return hosts


@st.composite
def batches(draw: st.DrawFn) -> list[Request]:
    return [Request(instance=f"ns/vm{i}",
                    resources=Resources(vcpu=draw(st.integers(0, 12)),
                                        memory_bytes=draw(st.integers(0, 24)) * G,
                                        gpus=draw(st.just({}) | st.dictionaries(models, st.integers(1, 2))),
                                        local_disk_gb=draw(st.just(0) | st.integers(1, 40))),
                    zone=draw(st.none() | zones),
                    placement_group=draw(st.none() | st.sampled_from(["pg-a", "pg-b"])))
            for i in range(draw(st.integers(0, 30)))]


def _passes(request_: Request, h: HostState, group_hosts: set[str], group_zone: str | None) -> bool:
    """An oracle written apart from the module's rules."""
    return (h.alive and h.schedulable and request_.zone in (None, h.zone)
            and group_zone in (None, h.zone) and h.name not in group_hosts
            and request_.resources.fits_in(h.capacity - h.allocated))


@settings(max_examples=200, deadline=None)
@given(fleets(), batches())
def test_a_batch_never_over_commits_and_every_placed_host_passed_every_filter(
        hosts: list[HostState], requests: list[Request]) -> None:
    decisions = assign_many(requests, hosts)
    assert len(decisions) == len(requests)
    state = {h.name: h for h in hosts}
    group_hosts: dict[str, set[str]] = defaultdict(set)
    group_zones: dict[str, str] = {}
    for request_, decision in zip(requests, decisions, strict=True):
        pg = request_.placement_group
        taken = group_hosts[pg] if pg else set()
        zone = group_zones.get(pg) if pg else None
        feasible = [h for h in state.values() if _passes(request_, h, taken, zone)]
        if isinstance(decision, Placed):
            chosen = state[decision.host]
            assert chosen in feasible
            assert chosen == min(feasible, key=lambda h: (
                not request_.resources.gpus and bool(h.capacity.gpus),
                utilisation_after(request_.resources, h), h.name))
            state[chosen.name] = dataclasses.replace(chosen, allocated=chosen.allocated + request_.resources)
            if pg:
                group_hosts[pg].add(chosen.name)
                group_zones.setdefault(pg, chosen.zone)
        else:
            assert not feasible
            assert sum(decision.rejected.values()) == len(hosts)
            assert decision.message.startswith(f"0/{len(hosts)} hosts are available: ")
    for h in state.values():
        assert h.allocated.fits_in(h.capacity), h


# ---- determinism ------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(fleets(), batches(), st.randoms(use_true_random=False))
def test_decisions_do_not_depend_on_the_order_of_the_hosts(hosts: list[HostState],
                                                           requests: list[Request],
                                                           rnd: random.Random) -> None:
    shuffled = list(hosts)
    rnd.shuffle(shuffled)
    assert assign_many(requests, shuffled) == assign_many(requests, hosts) == assign_many(requests, hosts)


def test_the_same_facts_give_the_same_decision() -> None:
    hosts = _fleet_8_full_in_a_4_in_b()
    assert choose(req(mem_gb=64, zone=A), hosts) == choose(req(mem_gb=64, zone=A), list(reversed(hosts)))
    in_b = Placed("b0", 1 - 8 / 256)
    assert choose(req(zone=B), hosts) == choose(req(zone=B), list(reversed(hosts))) == in_b


# ---- resources --------------------------------------------------------------------------

FITS = [
    pytest.param(res(2, 8), res(2, 8), True, id="equal amounts fit"),
    pytest.param(res(3, 8), res(2, 8), False, id="one vCPU too many does not fit"),
    pytest.param(res(2, 9), res(2, 8), False, id="one GB of memory too many does not fit"),
    pytest.param(res(disk=2), res(disk=1), False, id="too much local disk does not fit"),
    pytest.param(res(gpus={L40S: 1}), res(gpus={B200: 8}), False, id="GPUs of another model do not fit"),
    pytest.param(res(gpus={L40S: 2}), res(gpus={L40S: 2, B200: 1}), True, id="GPUs of the model fit"),
]


@pytest.mark.parametrize(("small", "big", "fits"), FITS)
def test_fits_in(small: Resources, big: Resources, fits: bool) -> None:
    assert small.fits_in(big) is fits


def test_resources_add_and_subtract_field_by_field() -> None:
    a, b = res(4, 16, {L40S: 2}, 100), res(1, 2, {L40S: 1, B200: 1}, 10)
    assert a + b == res(5, 18, {L40S: 3, B200: 1}, 110)
    assert a - b == Resources(vcpu=3, memory_bytes=14 * G, gpus={L40S: 1, B200: -1}, local_disk_gb=90)
    assert (a + b) - b == a


def test_zero_gpu_counts_are_dropped_so_equal_amounts_compare_and_hash_equal() -> None:
    assert res(gpus={L40S: 0}) == Resources() == NOTHING
    assert hash(res(gpus={L40S: 0})) == hash(NOTHING)
    assert res(gpus={L40S: 1, B200: 2}) == res(gpus={B200: 2, L40S: 1})
    assert hash(res(gpus={L40S: 1, B200: 2})) == hash(res(gpus={B200: 2, L40S: 1}))


def test_facts_are_immutable() -> None:
    gpus = {L40S: 1}
    r = res(gpus=gpus)
    gpus[L40S] = 4
    assert r.gpus == {L40S: 1}
    with pytest.raises(TypeError):
        r.gpus[L40S] = 2  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        host().alive = False  # type: ignore[misc]
    members = {"ns/a": "h1"}
    request_ = req(placement_group="pg-x", group_members_on_hosts=members)
    members["ns/b"] = "h2"
    assert request_.group_members_on_hosts == {"ns/a": "h1"}
    assert hash(request_) == hash(req(placement_group="pg-x", group_members_on_hosts={"ns/a": "h1"}))
