"""A SecurityGroup's status is a pure function of its members, where they run and what their
hosts report; a host's report is a pure function of what it programmed."""

from __future__ import annotations

import pytest

from evroc_compute.api.networking import MAX_LISTED_MEMBERS
from evroc_compute.controllers.securitygroup import Member, group_status, reported
from evroc_compute.hosts.reports import security_group_report

M = Member


@pytest.mark.parametrize(("generation", "members", "programmed", "status", "reason", "message"), [
    (1, [], {}, "True", "NoMembers", "applies to no VM"),
    (3, [M("a", None), M("b", None)], {}, "True", "NoRunningMembers",
     "none of its 2 VMs runs; a host programs it when it starts one"),
    (2, [M("a", "h1"), M("b", "h1"), M("c", "h2")], {"h1": 2, "h2": 2}, "True", "Programmed",
     "programmed on the 2 hosts running its VMs"),
    (2, [M("a", "h1"), M("b", None)], {"h1": 3}, "True", "Programmed",  # a newer report counts
     "programmed on the host running its VMs"),
    (2, [M("a", "h1"), M("c", "h2")], {"h1": 2, "h2": 1}, "False", "Programming",
     "1 of 2 hosts running its VMs have not programmed generation 2 yet: h2"),
    (1, [M("a", "h2"), M("c", "h1")], {"h1": None, "h2": None}, "False", "Programming",
     "2 of 2 hosts running its VMs have not programmed generation 1 yet: h1, h2"),
    (1, [M(f"v{i}", f"h{i}") for i in range(7)], {}, "False", "Programming",
     "7 of 7 hosts running its VMs have not programmed generation 1 yet: "
     "h0, h1, h2, h3, h4 and 2 more"),
])
def test_ready_says_which_hosts_lag(generation: int, members: list[Member],
                                    programmed: dict[str, int | None], status: str, reason: str,
                                    message: str) -> None:
    _, ready = group_status(generation, members, programmed)
    assert (ready.type, ready.status, ready.reason, ready.message) == \
        ("Ready", status, reason, message)
    assert ready.observed_generation == generation


@pytest.mark.parametrize(("names", "listed", "count"), [
    ([], [], 0),
    (["b", "a", "c"], ["a", "b", "c"], 3),
    ([f"vm-{i:03}" for i in range(MAX_LISTED_MEMBERS + 5)][::-1],
     [f"vm-{i:03}" for i in range(MAX_LISTED_MEMBERS)], MAX_LISTED_MEMBERS + 5),
])
def test_applies_to_is_sorted_and_bounded(names: list[str], listed: list[str], count: int) -> None:
    status, _ = group_status(1, [M(n, None) for n in names], {})
    assert status == {"appliesTo": [{"name": n} for n in listed], "appliesToCount": count}


@pytest.mark.parametrize(("programmed", "report"), [
    ({}, []),
    ({"p2": {"web": 3}, "p1": {"db": 1, "app": 2}, "p3": {}},
     [{"namespace": "p1", "name": "app", "generation": 2},
      {"namespace": "p1", "name": "db", "generation": 1},
      {"namespace": "p2", "name": "web", "generation": 3}]),
])
def test_a_host_reports_its_programmed_groups_in_order(
        programmed: dict[str, dict[str, int]], report: list[dict[str, object]]) -> None:
    assert security_group_report(programmed) == report


@pytest.mark.parametrize(("status", "namespace", "name", "generation"), [
    (None, "p", "web", None),
    ({"securityGroups": [{"namespace": "p", "name": "web", "generation": 4}]}, "p", "web", 4),
    ({"securityGroups": [{"namespace": "q", "name": "web", "generation": 4}]}, "p", "web", None),
])
def test_reported_reads_one_groups_generation(status: dict | None, namespace: str, name: str,
                                              generation: int | None) -> None:
    host = {"metadata": {"name": "h"}, **({"status": status} if status else {})}
    assert reported(host, namespace, name) == generation
