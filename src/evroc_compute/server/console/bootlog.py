"""The serial console of a simulated VM: the boot log its instance's phase implies.

A pure function of the VM and its instance, so following it only needs the lines that were
not yet sent: each phase appends to what the earlier phases printed, and a new boot (a
higher bootCount) starts a new log. Every fact in it is the VM's own (name, vCPUs, memory,
disks, address, SSH keys); the kernel and timings are made up and say so in the first line.
"""

from __future__ import annotations

from typing import Any

_BOOTED = ("Starting", "Running", "Paused", "Stopping", "Migrating")


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _line(seconds: float, text: str) -> str:
    return f"[{seconds:12.6f}] {text}"


def boot_log(vm: dict[str, Any], instance: dict[str, Any] | None) -> list[str]:
    """The console lines of the instance's current boot (none before the guest starts)."""
    phase = _get(instance, "status", "phase") or ""
    if instance is None or phase not in _BOOTED:
        return []
    name = vm["metadata"]["name"]
    resources = _get(instance, "spec", "resources") or {}
    vcpus = resources.get("vcpu", 1)
    memory_mib = (resources.get("memoryBytes") or 0) // 2**20
    disks = _get(instance, "spec", "disks") or []
    boot: dict[str, Any] = next((d for d in disks if d.get("boot")), {})
    address = _get(vm, "status", "networking", "privateIPv4Address") or "10.0.0.2"
    keys = _get(vm, "spec", "osSettings", "ssh", "authorizedKeys") or []
    boot_count = _get(instance, "status", "bootCount") or 1
    lines = [
        f"evroc-compute simulated serial console: {name}, boot {boot_count} "
        f"(a simulated host runs no guest; this log is made from the VM's state)",
        "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
        f"Booting from Hard Disk ({boot.get('image') or boot.get('name') or 'boot disk'})...",
        _line(0.0, "Linux version 6.1.0-evroc-sim (simulated kernel)"),
        _line(0.0, "Command line: root=/dev/vda1 ro console=ttyS0"),
        _line(0.012, f"smpboot: Allowing {vcpus} CPUs, 0 hotplug CPUs"),
        _line(0.031, f"Memory: {memory_mib}MiB available"),
    ]
    lines += [_line(0.84 + i * 0.01, f"virtio_blk virtio{i}: [vd{chr(97 + i)}] {d.get('name')}")
              for i, d in enumerate(disks)]
    lines += [_line(1.92, "EXT4-fs (vda1): mounted filesystem with ordered data mode"),
              _line(2.40, "systemd[1]: Detected virtualization kvm."),
              _line(2.41, f"systemd[1]: Set hostname to <{name}>.")]
    if phase == "Starting":
        return lines
    lines += [
        f"cloud-init[412]: Cloud-init v. 23.1 running 'init' at boot {boot_count}",
        f"cloud-init[412]: ci-info: | eth0 | True | {address} | 255.255.255.0 |",
        f"cloud-init[412]: {len(keys)} SSH key(s) authorized for evroc-user",
        "cloud-init[498]: Cloud-init v. 23.1 finished. Datasource DataSourceNoCloud.",
        "",
        f"Debian GNU/Linux 12 {name} ttyS0",
        "",
        f"{name} login: ",
    ]
    if phase == "Paused":
        lines.append("(the hypervisor paused the guest: its console is silent until it resumes)")
    elif phase == "Migrating":
        lines.append("(the guest is being live-migrated to another host; its console goes on)")
    elif phase == "Stopping":
        lines += [_line(3600.0, "ACPI: Power Button [PWRF]"),
                  "[  OK  ] Stopped target multi-user.target - Multi-User System.",
                  _line(3604.5, "reboot: Power down")]
    return lines


def new_lines(before: list[str], now: list[str]) -> list[str]:
    """What a follower who saw the log as `before` has yet to see: past their common start on
    the same boot (a pause that ended takes nothing back), all of `now` on a new boot."""
    if not before or not now or before[0] != now[0]:
        return now
    common = 0
    for old, new in zip(before, now, strict=False):
        if old != new:
            break
        common += 1
    return now[common:]
