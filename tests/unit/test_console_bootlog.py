"""The simulated serial console: what a follower is sent as the instance changes phase."""

from __future__ import annotations

from typing import Any

import pytest

from evroc_compute.server.console.bootlog import boot_log, new_lines

VM: dict[str, Any] = {"metadata": {"name": "web"},
                      "status": {"networking": {"privateIPv4Address": "10.0.1.7"}}}


def instance(phase: str, boot: int = 1) -> dict[str, Any]:
    return {"spec": {"resources": {"vcpu": 2, "memoryBytes": 8 * 2**30},
                     "disks": [{"name": "web-boot", "boot": True, "image": "ubuntu"}]},
            "status": {"phase": phase, "bootCount": boot}}


@pytest.mark.parametrize(("phase", "last"), [
    ("Pending", None), ("Pulling", None), ("Starting", "Set hostname to <web>."),
    ("Running", "web login: "), ("Stopping", "reboot: Power down"),
    ("Paused", "(the hypervisor paused the guest: its console is silent until it resumes)"),
])
def test_each_phase_ends_the_log_where_the_guest_is(phase: str, last: str | None) -> None:
    log = boot_log(VM, instance(phase))
    assert (log[-1].endswith(last) if last else log == [])


def test_the_log_holds_the_vms_own_facts() -> None:
    text = "\n".join(boot_log(VM, instance("Running")))
    assert "Allowing 2 CPUs" in text and "Memory: 8192MiB" in text
    assert "| 10.0.1.7 |" in text and "[vda] web-boot" in text and "(ubuntu)" in text


@pytest.mark.parametrize(("before", "after", "sent"), [
    ("Starting", "Running", "the cloud-init and login lines"),
    ("Running", "Paused", "the paused line"),
    ("Paused", "Running", "nothing"),
    ("Paused", "Stopping", "the power-down lines"),
    ("Running", "Running", "nothing"),
])
def test_a_follower_gets_only_what_is_new(before: str, after: str, sent: str) -> None:
    old, now = boot_log(VM, instance(before)), boot_log(VM, instance(after))
    more = new_lines(old, now)
    expected = {"nothing": [], "the paused line": now[-1:],
                "the cloud-init and login lines": now[len(old):],
                "the power-down lines": now[-3:]}[sent]
    assert more == expected and (sent == "nothing" or more)


def test_a_new_boot_is_sent_whole() -> None:
    first, second = boot_log(VM, instance("Running", 1)), boot_log(VM, instance("Starting", 2))
    assert new_lines(first, second) == second
    assert new_lines([], second) == second
