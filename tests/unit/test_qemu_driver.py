"""The QEMU agent's decisions that need no QEMU: what the host offers, disk serials, addresses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu.spec import check_serial
from evroc_compute.hosts.drivers.qemu.driver import QemuHostConfig, _address_refused, _serial, _Status


def config(cpu: float, memory: float) -> QemuHostConfig:
    return QemuHostConfig(name="h1", zone="se-sto-b", data_dir=Path("/tmp/d"),
                          image_dir=Path("/tmp/i"), accel="tcg", cpu_overcommit=cpu,
                          memory_overcommit=memory)


@pytest.mark.parametrize(("cpu", "memory"), [(1.0, 1.0), (4.0, 1.0), (2.5, 0.5)])
def test_the_host_offers_its_cores_and_memory_times_the_over_commit(cpu: float, memory: float) -> None:
    total_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    host = config(cpu, memory).host_spec().to_object()
    assert host["spec"]["driver"] == "qemu" and host["spec"]["zone"] == "se-sto-b"
    assert host["spec"]["capacity"]["vcpu"] == int((os.cpu_count() or 1) * cpu)
    assert host["spec"]["capacity"]["memory"] == {
        "amount": int(total_kib * 1024 * memory / 10**9), "unit": "GB"}


@pytest.mark.parametrize(("name", "expected"), [("boot", "boot"), ("a" * 20, "a" * 20)])
def test_short_disk_names_are_their_own_serial(name: str, expected: str) -> None:
    assert _serial(name) == expected


def test_long_disk_names_get_distinct_valid_serials_of_at_most_20_bytes() -> None:
    first, second = "database-volume-primary-1", "database-volume-primary-2"
    serials = {_serial(first), _serial(second)}
    assert len(serials) == 2
    for serial in serials:
        assert len(serial) <= 20 and check_serial(serial) == serial


@pytest.mark.parametrize(("conditions", "refused"), [
    ([], False),
    ([{"type": "AddressAssigned", "status": "False", "reason": "SubnetExhausted"}], True),
    ([{"type": "Ready", "status": "False"}], False),
])
def test_a_vm_boots_without_an_address_only_when_none_is_free(conditions: list, refused: bool) -> None:
    assert _address_refused({"status": {"conditions": conditions}}) is refused


def test_a_phase_keeps_its_start_time_until_it_changes() -> None:
    status = _Status({"status": {"phase": "Starting", "phaseSince": "2026-01-01T00:00:00.000000Z"}},
                     now=1_800_000_000.0)
    status.move("Starting", "still booting")
    assert status.new["phaseSince"] == "2026-01-01T00:00:00.000000Z"
    status.move("Running", "up")
    assert status.new["phase"] == "Running" and status.new["phaseSince"].startswith("2027-")
