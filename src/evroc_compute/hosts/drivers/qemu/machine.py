"""One VM's QEMU process: start, stop, observe, adopt after a restart, hot-plug disks.

Like the QMP client it drives, a machine has explicit run states, and every operation
says in which states it is allowed. The state is always derived from what exists (the
process, its pidfile, QEMU's own run status, a small record file), never only remembered,
so a new agent can adopt a running VM from its work directory without disturbing it:

- QEMU deletes its pidfile when it exits cleanly (guest power-off, quit), so a dead
  process whose pidfile is left behind crashed or was killed;
- the record file keeps what QEMU cannot tell: the SSH port, whether a stop was asked
  for, and why the last start failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import shlex
import shutil
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from . import command_line, processes, qmp
from .command_line import MachinePaths, device_id, node_name
from .errors import MachineError, MachineStateError, QmpError
from .spec import DiskAttachment, MachineSpec, check_serial

log = logging.getLogger(__name__)

_SOCKET_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, minus the terminating NUL
_PORT_ATTEMPTS = 3  # a free port can be taken between choosing it and QEMU binding it
_PORT_TAKEN = "host forwarding rule"  # in QEMU's error when it cannot bind the SSH port
_LOG_TAIL = 1500
_QUIT_TIMEOUT = 5.0
_KILL_TIMEOUT = 10.0
# QEMU run statuses (query-status) in which the guest cannot go on.
_FAILED = frozenset({"internal-error", "io-error", "guest-panicked"})
_STARTING = frozenset({"prelaunch", "inmigrate", "restore-vm"})


class RunState(enum.Enum):
    """What the VM is doing, as far as the host can tell."""

    ABSENT = "Absent"  # no work directory: never started, or removed
    STARTING = "Starting"  # QEMU launched, its monitor not yet reporting a running guest
    RUNNING = "Running"  # QEMU runs the guest (booting or booted: that is the guest's business)
    STOPPING = "Stopping"  # a stop was asked for (or the guest powered off); QEMU still exits
    STOPPED = "Stopped"  # QEMU exited cleanly; disks and logs are kept
    CRASHED = "Crashed"  # QEMU died, was killed, failed to start, or the guest cannot continue

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Observation:
    """The observed state of a VM and the facts it was derived from."""

    state: RunState
    pid: int | None  # the live QEMU process, if any
    qemu_status: str | None  # QEMU's run status ("running", "paused", ...) if its monitor answered
    failure: str | None  # why the last start failed, if it did


def classify(*, has_record: bool, alive: bool, pidfile_left: bool, stop_requested: bool,
             failed_start: bool, qemu_status: str | None) -> RunState:
    """The run state these facts amount to (see the module docstring for the reasoning)."""
    if not alive:
        if not has_record:
            return RunState.ABSENT
        return RunState.CRASHED if failed_start or pidfile_left else RunState.STOPPED
    if qemu_status in _FAILED:
        return RunState.CRASHED
    if stop_requested or qemu_status == "shutdown":
        return RunState.STOPPING
    if qemu_status is None or qemu_status in _STARTING:
        return RunState.STARTING
    return RunState.RUNNING


@dataclass(frozen=True)
class _Record:
    """machine.json: what must survive an agent restart and QEMU cannot tell."""

    ssh_port: int
    stop_requested: bool = False
    failure: str | None = None


class QemuMachine:
    """The VM whose files live in `workdir` (pidfile, QMP socket, logs, record)."""

    def __init__(self, workdir: Path, binary: str = command_line.QEMU_BINARY) -> None:
        self.paths = MachinePaths(workdir.resolve())
        if len(os.fsencode(self.paths.qmp_socket)) > _SOCKET_PATH_MAX:
            raise MachineError(f"work directory {self.paths.workdir} is too long a path for "
                               f"QEMU's monitor socket (at most {_SOCKET_PATH_MAX} bytes)")
        self.binary = binary
        self.state = RunState.ABSENT
        self.history: list[RunState] = []  # every state change seen or caused, in order
        self._lock = asyncio.Lock()  # one operation at a time: QMP serves one client anyway

    @classmethod
    async def adopt(cls, workdir: Path, binary: str = command_line.QEMU_BINARY) -> QemuMachine:
        """The machine in `workdir` as it is now, e.g. after an agent restart; nothing is killed."""
        machine = cls(workdir, binary)
        await machine.observe()
        return machine

    @property
    def ssh_port(self) -> int | None:
        """The loopback port forwarded to the guest's port 22 (changes on every start)."""
        record = self._read_record()
        return record.ssh_port if record is not None else None

    async def observe(self) -> Observation:
        """Look at the process and ask QEMU; updates `state`."""
        async with self._lock:
            return await self._observe()

    async def start(self, spec: MachineSpec, timeout: float = 30.0) -> None:
        """Launch QEMU for `spec` and wait until it runs the guest (not until the guest boots)."""
        async with self._lock:
            current = (await self._observe()).state
            allowed = (RunState.ABSENT, RunState.STOPPED, RunState.CRASHED)
            if current not in allowed:
                raise MachineStateError("start", current, allowed)
            _check_files(spec)
            self.paths.workdir.mkdir(parents=True, exist_ok=True)
            for stale in (self.paths.pidfile, self.paths.qmp_socket):
                stale.unlink(missing_ok=True)
            log.info("starting VM %s with %s acceleration in %s", spec.name, spec.accel.upper(),
                     self.paths.workdir)
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                record = _Record(ssh_port=_free_port())
                self._write_record(record)
                self._set(RunState.STARTING)
                try:
                    await self._launch(spec, record.ssh_port, timeout)
                except MachineError as exc:
                    if _PORT_TAKEN in str(exc) and attempt < _PORT_ATTEMPTS:
                        continue
                    self._write_record(replace(record, failure=str(exc)))
                    self._set(RunState.CRASHED)
                    raise
                self._set(RunState.RUNNING)
                return

    async def stop(self, timeout: float = 30.0) -> None:
        """Power the guest off (ACPI), then quit or kill QEMU if it has not exited after `timeout`.

        Stopping a machine that does not run is a no-op, so a reconciler can always call it.
        """
        async with self._lock:
            observation = await self._observe()
            pid = observation.pid
            if pid is None:
                return
            record = self._read_record() or _Record(ssh_port=0)
            self._write_record(replace(record, stop_requested=True))
            self._set(RunState.STOPPING)
            marker = str(self.paths.pidfile)
            with contextlib.suppress(QmpError):
                async with qmp.session(self.paths.qmp_socket) as session:
                    await session.execute("system_powerdown")
            if not await processes.wait_gone(pid, marker, timeout):
                log.warning("VM in %s ignored the ACPI power-off for %g s; quitting QEMU",
                            self.paths.workdir, timeout)
                with contextlib.suppress(QmpError):
                    async with qmp.session(self.paths.qmp_socket, _QUIT_TIMEOUT) as session:
                        await session.execute("quit")
                if not await processes.wait_gone(pid, marker, _QUIT_TIMEOUT):
                    processes.kill(pid)
                    if not await processes.wait_gone(pid, marker, _KILL_TIMEOUT):
                        raise MachineError(f"QEMU (pid {pid}) survived SIGKILL for "
                                           f"{_KILL_TIMEOUT:g} s")
                # A killed QEMU leaves its pidfile and socket; this stop was asked for.
                self.paths.pidfile.unlink(missing_ok=True)
                self.paths.qmp_socket.unlink(missing_ok=True)
            self._set(RunState.STOPPED)

    async def remove(self) -> None:
        """Kill QEMU if it runs and delete the work directory (disks elsewhere are kept)."""
        async with self._lock:
            pid = processes.read_pid(self.paths.pidfile)
            marker = str(self.paths.pidfile)
            if pid is not None and processes.is_alive(pid, marker):
                processes.kill(pid)
                if not await processes.wait_gone(pid, marker, _KILL_TIMEOUT):
                    raise MachineError(f"QEMU (pid {pid}) survived SIGKILL for {_KILL_TIMEOUT:g} s")
            shutil.rmtree(self.paths.workdir, ignore_errors=True)
            if self.paths.workdir.exists():
                raise MachineError(f"could not delete {self.paths.workdir}")
            self._set(RunState.ABSENT)

    async def attach_disk(self, path: Path, serial: str, format: Literal["qcow2", "raw"] = "qcow2",
                          read_only: bool = False) -> None:
        """Hot-plug a disk as a scsi-hd with `serial` on the virtio-scsi bus; idempotent."""
        disk = DiskAttachment(path.resolve(), serial, format, read_only)
        if not disk.path.is_file():
            raise MachineError(f"cannot attach {disk.path}: no such file")
        async with self._lock:
            await self._require_running("attach a disk to")
            async with qmp.session(self.paths.qmp_socket) as session:
                if device_id(serial) in await _peripherals(session):
                    return
                if node_name(serial) in await _nodes(session):  # left by an unfinished detach
                    await session.execute("blockdev-del", {"node-name": node_name(serial)})
                await session.execute("blockdev-add", command_line.blockdev(disk))
                try:
                    await session.execute("device_add", {
                        "driver": "scsi-hd", "id": device_id(serial), "drive": node_name(serial),
                        "serial": serial, "bus": command_line.SCSI_BUS})
                except QmpError:
                    with contextlib.suppress(QmpError):
                        await session.execute("blockdev-del", {"node-name": node_name(serial)})
                    raise

    async def detach_disk(self, serial: str, timeout: float = 10.0) -> None:
        """Unplug the disk with `serial`, waiting for the guest to release it; idempotent."""
        check_serial(serial)
        async with self._lock:
            await self._require_running("detach a disk from")
            async with qmp.session(self.paths.qmp_socket, timeout + qmp.DEFAULT_TIMEOUT) as session:
                if device_id(serial) in await _peripherals(session):
                    with session.listener("DEVICE_DELETED") as listener:
                        await session.execute("device_del", {"id": device_id(serial)})
                        try:
                            await session.wait_for_event("DEVICE_DELETED", device_id(serial),
                                                         listener, timeout)
                        except TimeoutError:
                            raise MachineError(f"the guest did not release disk {serial} within "
                                               f"{timeout:g} s; QEMU unplugs it when it does") from None
                if node_name(serial) in await _nodes(session):
                    await session.execute("blockdev-del", {"node-name": node_name(serial)})

    async def hotplugged_serials(self) -> set[str]:
        """Serials of the disks attached on the SCSI bus, as QEMU reports them."""
        async with self._lock:
            await self._require_running("list the disks of")
            async with qmp.session(self.paths.qmp_socket) as session:
                prefix = device_id("")
                return {name.removeprefix(prefix)
                        for name, kind in (await _peripherals(session)).items()
                        if kind == "child<scsi-hd>" and name.startswith(prefix)}

    async def _observe(self) -> Observation:
        record = self._read_record()
        pid = processes.read_pid(self.paths.pidfile)
        alive = pid is not None and processes.is_alive(pid, str(self.paths.pidfile))
        status: str | None = None
        if alive:
            with contextlib.suppress(QmpError):
                async with qmp.session(self.paths.qmp_socket, timeout=5.0) as session:
                    status = str((await session.execute("query-status"))["status"])
        state = classify(
            has_record=record is not None, alive=alive, pidfile_left=self.paths.pidfile.exists(),
            stop_requested=record is not None and record.stop_requested,
            failed_start=record is not None and record.failure is not None, qemu_status=status)
        self._set(state)
        return Observation(state=state, pid=pid if alive else None, qemu_status=status,
                           failure=record.failure if record is not None else None)

    async def _require_running(self, action: str) -> None:
        state = (await self._observe()).state
        if state is not RunState.RUNNING:
            raise MachineStateError(action, state, (RunState.RUNNING,))

    async def _launch(self, spec: MachineSpec, ssh_port: int, timeout: float) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise MachineError(f"{self.binary} is not installed (apt-get install -y qemu-system-x86)")
        args = command_line.argv(spec, self.paths, ssh_port, binary)
        with self.paths.qemu_log.open("ab") as qemu_log:
            log_start = qemu_log.tell()
            qemu_log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(args)}\n".encode())
            qemu_log.flush()
            # Not -daemonize: QEMU stays our child, so we can reap it (PID 1 here does not).
            actions: list[tuple[Any, ...]] = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, qemu_log.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, qemu_log.fileno(), 2)]
            if spec.tap_fd == command_line.TAP_FD:  # already in place: let QEMU inherit it
                os.set_inheritable(spec.tap_fd, True)
            elif spec.tap_fd is not None:  # dup2 clears close-on-exec: QEMU inherits the tap
                actions.append((os.POSIX_SPAWN_DUP2, spec.tap_fd, command_line.TAP_FD))
            pid = os.posix_spawn(binary, args, dict(os.environ), setsid=True,
                                 file_actions=actions)
        marker = str(self.paths.pidfile)
        deadline = time.monotonic() + timeout
        while True:
            if _exited(pid):
                raise MachineError(f"QEMU exited while starting {spec.name}: "
                                   f"{self._log_since(log_start)} (full log: {self.paths.qemu_log})")
            if self.paths.qmp_socket.exists():
                with contextlib.suppress(QmpError):
                    async with qmp.session(self.paths.qmp_socket, timeout=2.0) as session:
                        if (await session.execute("query-status"))["status"] == "running":
                            return
            if time.monotonic() >= deadline:
                processes.kill(pid)
                await processes.wait_gone(pid, marker, _KILL_TIMEOUT)
                raise MachineError(f"QEMU did not run {spec.name} within {timeout:g} s: "
                                   f"{self._log_since(log_start)} (full log: {self.paths.qemu_log})")
            await asyncio.sleep(0.1)

    def _log_since(self, offset: int) -> str:
        with self.paths.qemu_log.open("rb") as qemu_log:
            qemu_log.seek(offset)
            lines = qemu_log.read().decode(errors="replace").splitlines()[1:]  # skip the command
        return " ".join(lines).strip()[-_LOG_TAIL:] or "no output"

    def _read_record(self) -> _Record | None:
        try:
            data: dict[str, Any] = json.loads(self.paths.state_file.read_text())
        except FileNotFoundError:
            return None
        return _Record(**data)

    def _write_record(self, record: _Record) -> None:
        partial = self.paths.state_file.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(record)))
        partial.replace(self.paths.state_file)

    def _set(self, state: RunState) -> None:
        if state is not self.state or not self.history:
            self.state = state
            self.history.append(state)


def _exited(pid: int) -> bool:
    """True once our child `pid` has exited (and reaps it).

    Not processes.is_alive: right after posix_spawn the child's command line can still be
    empty, so the pidfile marker would not be found yet.
    """
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited == pid


def _check_files(spec: MachineSpec) -> None:
    files = [d.path for d in (spec.boot_disk, *spec.disks)]
    files += [f for f in (spec.seed_iso, spec.kernel, spec.initrd) if f is not None]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MachineError(f"cannot start {spec.name}: missing files {', '.join(missing)}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _peripherals(session: qmp.Session) -> dict[str, str]:
    """QEMU device id -> type ("child<scsi-hd>") of the devices that have an id."""
    entries = await session.execute("qom-list", {"path": "/machine/peripheral"})
    return {str(e["name"]): str(e["type"]) for e in entries}


async def _nodes(session: qmp.Session) -> set[str]:
    nodes = await session.execute("query-named-block-nodes", {"flat": True})
    return {str(n["node-name"]) for n in nodes}
