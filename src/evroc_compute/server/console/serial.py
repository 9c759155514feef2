"""GET .../virtualmachines/NAME/console: a VM's serial console as text, like pods/log.

`tailLines=N` starts N lines from the end; `follow=true` keeps the answer open and streams
what the guest prints next, until the guest stops, the VM is deleted or the client leaves.

QEMU VMs: the console is the file QEMU writes in the VM's work directory on its host
(DATA_DIR/qemu/vms/NAMESPACE/NAME/console.log). This server reads it when the VM runs on
its own host (`serve --driver qemu`); a VM on a separately run agent's host is refused with
a 503 that says where to read it (`evroc-compute console` on that host): agents serve no
HTTP of their own yet. Simulated VMs: the boot log their state implies (bootlog.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from evroc_compute.api.infra import HOST, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.server import errors
from evroc_compute.server.console.bootlog import boot_log, new_lines
from evroc_compute.server.handlers.common import Context, Target, current
from evroc_compute.server.http import Request, Response, StreamingResponse

TEXT = b"text/plain; charset=utf-8"
FILE_POLL = 0.2  # seconds between reads of a followed console file
STATE_POLL = 0.5  # seconds between looks at a simulated VM's state (in memory)
MAX_READ = 4 * 2**20  # a console's last bytes read for an answer; older output is skipped


def tail_lines(req: Request) -> int | None:
    value = req.query.get("tailLines")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise errors.bad_request(f'tailLines must be a number of lines (0 or more), not "{value}"',
                                 field="tailLines", cause_type="FieldValueInvalid")
    return int(value)


def tail(data: bytes, lines: int | None) -> bytes:
    if lines is None:
        return data
    return b"".join(data.splitlines(keepends=True)[-lines:]) if lines else b""


def console_file(data_dir: Path, namespace: str, name: str) -> Path:
    return data_dir / "qemu" / "vms" / namespace / name / "console.log"


async def serial_console(ctx: Context, req: Request, target: Target,
                         data_dir: Path) -> Response | StreamingResponse:
    vm = current(ctx, target).obj  # 404 for a VM that does not exist
    lines, follow = tail_lines(req), req.flag("follow")
    namespace, name = target.namespace or "", target.name
    path = console_file(data_dir, namespace, name)
    if await asyncio.to_thread(path.is_file):
        text, offset = await asyncio.to_thread(_read_end, path, lines)
        if not follow:
            return Response(200, text, TEXT)
        return StreamingResponse(_follow_file(ctx, target, path, text, offset), TEXT)
    entry = ctx.store.get(VIRTUAL_MACHINE_INSTANCE.key(namespace, name))
    if entry is None:
        state = (vm.get("status") or {}).get("virtualMachineStatus") or "not started"
        raise errors.bad_request(
            f'VirtualMachine "{name}" has no running instance (status {state}): its serial '
            "console begins when the VM starts")
    host_name = (entry.obj.get("spec") or {}).get("host") or ""
    host = ctx.store.get(HOST.key("", host_name)) if host_name else None
    if host is not None and (host.obj.get("spec") or {}).get("driver") == "qemu":
        raise errors.unavailable(
            f'the serial console of VirtualMachine "{name}" is on host "{host_name}", an agent '
            "this server cannot read files from; on that host run: evroc-compute console "
            f"{name} -n {namespace} -f --data-dir <the agent's data dir>")
    log = boot_log(vm, entry.obj)
    text = _text(log[-lines:] if lines else [] if lines == 0 else log)
    if not follow:
        return Response(200, text, TEXT)
    return StreamingResponse(_follow_simulated(ctx, target, text, log), TEXT)


def _text(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def _read_end(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The console's last `lines` lines (all of it without) and where the file ends."""
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - MAX_READ))
        data = file.read(size)
    return tail(data, lines), size


async def _follow_file(ctx: Context, target: Target, path: Path, first: bytes,
                       offset: int) -> AsyncIterator[bytes]:
    if first:
        yield first
    while ctx.store.get(target.key) is not None:
        chunk = await asyncio.to_thread(_read_from, path, offset)
        if chunk is None:
            return  # the VM's files are gone
        if chunk:
            offset += len(chunk)
            yield chunk
        else:
            await asyncio.sleep(FILE_POLL)


def _read_from(path: Path, offset: int) -> bytes | None:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(1 << 16)
    except FileNotFoundError:
        return None


async def _follow_simulated(ctx: Context, target: Target, first: bytes,
                            log: list[str]) -> AsyncIterator[bytes]:
    if first:
        yield first
    instance_key = VIRTUAL_MACHINE_INSTANCE.key(target.namespace or "", target.name)
    while True:
        await asyncio.sleep(STATE_POLL)
        vm, instance = ctx.store.get(target.key), ctx.store.get(instance_key)
        if vm is None or instance is None:
            return  # deleted, or stopped: the guest prints nothing more
        now = boot_log(vm.obj, instance.obj)
        more = new_lines(log, now)
        if more:
            yield _text(more)
        log = now
