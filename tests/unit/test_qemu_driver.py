"""The QEMU driver's decisions that need no QEMU: what the host offers, disk serials, addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu import driver
from evroc_compute.hosts.drivers.qemu.driver import QemuHostConfig, _address_refused, _serial
from evroc_compute.hosts.drivers.qemu.spec import check_serial


def config(cpu: float, memory: float) -> QemuHostConfig:
    return QemuHostConfig(name="h1", zone="se-sto-b", data_dir=Path("/tmp/d"),
                          image_dir=Path("/tmp/i"), accel="tcg", cpu_overcommit=cpu,
                          memory_overcommit=memory)


@pytest.mark.parametrize(("cpu", "memory", "vcpu", "memory_gb"), [
    (1.0, 1.0, 6, 16), (4.0, 1.0, 24, 16), (2.5, 0.5, 15, 8), (0.1, 0.01, 1, 1)],
    ids=["as-is", "cpu-overcommit", "fractions-round-down", "never-below-one"])
def test_the_host_offers_its_cores_and_memory_times_the_over_commit(
        monkeypatch: pytest.MonkeyPatch, cpu: float, memory: float, vcpu: int, memory_gb: int) -> None:
    # A machine with 6 cores and 16.5 GB of RAM (the figures are the test's, not this host's).
    monkeypatch.setattr(driver.os, "cpu_count", lambda: 6)
    monkeypatch.setattr(driver, "_memory_bytes", lambda: 16_500_000_000)
    host = config(cpu, memory).host_spec().to_object()
    assert host["spec"]["driver"] == "qemu" and host["spec"]["zone"] == "se-sto-b"
    assert host["spec"]["capacity"]["vcpu"] == vcpu
    assert host["spec"]["capacity"]["memory"] == {"amount": memory_gb, "unit": "GB"}


def test_the_memory_offered_is_this_machines_memtotal() -> None:
    total_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    assert driver._memory_bytes() == total_kib * 1024


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


def test_the_metadata_service_as_cloud_init_source_needs_bridged_networking() -> None:
    base = {"name": "h1", "zone": "se-sto-a", "data_dir": Path("/tmp/d"),
            "image_dir": Path("/tmp/i"), "accel": "tcg", "cloud_init_source": "metadata"}
    with pytest.raises(ValueError, match="needs bridged networking"):
        QemuHostConfig(**base)  # type: ignore[arg-type]
    assert QemuHostConfig(**base, network="bridged").cloud_init_source == "metadata"  # type: ignore[arg-type]
