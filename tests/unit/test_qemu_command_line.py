"""The QEMU command line (pure) and the run-state decision table (pure)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu import command_line
from evroc_compute.hosts.drivers.qemu.errors import MachineError
from evroc_compute.hosts.drivers.qemu.machine import RunState, classify
from evroc_compute.hosts.drivers.qemu.spec import DiskAttachment, MachineSpec

PATHS = command_line.MachinePaths(Path("/vms/web-1"))


def _spec(**changes: object) -> MachineSpec:
    fields: dict[str, object] = {
        "name": "web-1", "boot_disk": DiskAttachment(Path("/disks/boot.qcow2"), "boot"),
        "disks": (DiskAttachment(Path("/disks/data,1.qcow2"), "data-1"),),
        "seed_iso": Path("/vms/web-1/seed.iso")}
    fields.update(changes)
    return MachineSpec(**fields)  # type: ignore[arg-type]


def _option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == option]


def test_tcg_single_cpu_small_memory_by_default() -> None:
    args = command_line.argv(_spec(), PATHS, 2222)
    assert _option_values(args, "-accel") == ["tcg,tb-size=128"]
    assert _option_values(args, "-smp") == ["1"]
    assert _option_values(args, "-m") == ["256"]
    assert "-daemonize" not in args


def test_boot_disk_is_the_first_virtio_disk_and_permanent_disks_follow() -> None:
    args = command_line.argv(_spec(), PATHS, 2222)
    blockdevs = [json.loads(v) for v in _option_values(args, "-blockdev")]
    assert [b.get("file", b).get("filename") for b in blockdevs] == [
        "/disks/boot.qcow2", "/disks/data,1.qcow2", "/vms/web-1/seed.iso"]
    devices = _option_values(args, "-device")
    assert devices[:2] == ["virtio-blk-pci,drive=disk-boot,id=dev-boot,serial=boot,bootindex=1",
                           "virtio-blk-pci,drive=disk-data-1,id=dev-data-1,serial=data-1"]
    assert "ide-cd,drive=seed,bus=ide.1" in devices
    assert "virtio-scsi-pci,id=scsi0" in devices


def test_ssh_is_forwarded_from_loopback_only() -> None:
    args = command_line.argv(_spec(), PATHS, 2222)
    assert _option_values(args, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"]


def test_a_bridged_nic_is_the_tap_qemu_inherits_with_the_vms_mac() -> None:
    spec = _spec(tap_fd=17, mac_address="52:54:00:aa:bb:cc",
                 private_address=ipaddress.IPv4Interface("10.7.0.9/24"))
    args = command_line.argv(spec, PATHS, 2222)
    assert _option_values(args, "-netdev") == [f"tap,id=net0,fd={command_line.TAP_FD}"]
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc" in args


def test_a_private_address_moves_the_user_network_and_the_forward() -> None:
    spec = _spec(private_address=ipaddress.IPv4Interface("10.7.0.9/24"))
    assert _option_values(command_line.argv(spec, PATHS, 2222), "-netdev") == [
        "user,id=net0,net=10.7.0.0/24,host=10.7.0.2,dhcpstart=10.7.0.9,"
        "hostfwd=tcp:127.0.0.1:2222-10.7.0.9:22"]


def test_monitor_console_and_pidfile_live_in_the_work_directory() -> None:
    args = command_line.argv(_spec(), PATHS, 2222)
    assert _option_values(args, "-pidfile") == ["/vms/web-1/qemu.pid"]
    assert "socket,id=qmp,path=/vms/web-1/qmp.sock,server=on,wait=off" in _option_values(args, "-chardev")
    assert "file,id=console,path=/vms/web-1/console.log" in _option_values(args, "-chardev")


def test_direct_kernel_boot() -> None:
    spec = _spec(kernel=Path("/img/vmlinuz"), initrd=Path("/img/initrd.img"),
                 kernel_cmdline="root=/dev/vda console=ttyS0")
    args = command_line.argv(spec, PATHS, 2222)
    assert (_option_values(args, "-kernel"), _option_values(args, "-initrd"),
            _option_values(args, "-append")) == (
        ["/img/vmlinuz"], ["/img/initrd.img"], ["root=/dev/vda console=ttyS0"])


@pytest.mark.parametrize(("changes", "message"), [
    pytest.param({"initrd": Path("/img/initrd")}, "need a kernel", id="initrd-without-kernel"),
    pytest.param({"memory_mib": 16}, "too small", id="tiny-memory"),
    pytest.param({"disks": (DiskAttachment(Path("/d"), "boot"),)}, "unique", id="duplicate-serial"),
])
def test_inconsistent_specs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(MachineError, match=message):
        _spec(**changes)


@pytest.mark.parametrize("serial", ["", "has space", "x" * 37, "-leading-dash", "a/b"])
def test_serials_must_fit_qemu_ids_and_guest_names(serial: str) -> None:
    with pytest.raises(MachineError, match="invalid disk serial"):
        DiskAttachment(Path("/d"), serial)


@pytest.mark.parametrize(("facts", "state"), [
    pytest.param({}, RunState.ABSENT, id="nothing-is-absent"),
    pytest.param({"has_record": True}, RunState.STOPPED, id="clean-exit-is-stopped"),
    pytest.param({"has_record": True, "pidfile_left": True}, RunState.CRASHED,
                 id="dead-with-pidfile-left-is-crashed"),
    pytest.param({"has_record": True, "failed_start": True}, RunState.CRASHED,
                 id="failed-start-is-crashed"),
    pytest.param({"has_record": True, "alive": True}, RunState.STARTING,
                 id="alive-without-monitor-is-starting"),
    pytest.param({"has_record": True, "alive": True, "qemu_status": "prelaunch"}, RunState.STARTING,
                 id="prelaunch-is-starting"),
    pytest.param({"has_record": True, "alive": True, "qemu_status": "running"}, RunState.RUNNING,
                 id="running-is-running"),
    pytest.param({"has_record": True, "alive": True, "qemu_status": "paused"}, RunState.RUNNING,
                 id="paused-still-holds-the-vm"),
    pytest.param({"has_record": True, "alive": True, "qemu_status": "running", "stop_requested": True},
                 RunState.STOPPING, id="asked-to-stop-is-stopping"),
    pytest.param({"has_record": True, "alive": True, "qemu_status": "shutdown"}, RunState.STOPPING,
                 id="guest-powered-off-is-stopping"),
    pytest.param({"has_record": True, "alive": True, "qemu_status": "guest-panicked"},
                 RunState.CRASHED, id="panicked-guest-is-crashed"),
])
def test_run_state_follows_from_the_observed_facts(facts: dict[str, object], state: RunState) -> None:
    arguments: dict[str, object] = {"has_record": False, "alive": False, "pidfile_left": False,
                                    "stop_requested": False, "failed_start": False,
                                    "qemu_status": None}
    arguments.update(facts)
    assert classify(**arguments) is state  # type: ignore[arg-type]


@pytest.mark.parametrize(("product", "uuid", "expected"), [
    (None, None, []),
    ("OpenStack Nova", "0f7c-42", ["type=1,product=OpenStack Nova,uuid=0f7c-42"]),
    ("A,B", None, ["type=1,product=A,,B"]),  # commas doubled
], ids=["none", "openstack", "escaped"])
def test_the_firmware_names_the_system_only_when_told(
        product: str | None, uuid: str | None, expected: list[str]) -> None:
    args = command_line.argv(_spec(system_product=product, system_uuid=uuid, seed_iso=None),
                             PATHS, 2222)
    assert _option_values(args, "-smbios") == expected
    assert not any("seed" in v for v in _option_values(args, "-blockdev"))
