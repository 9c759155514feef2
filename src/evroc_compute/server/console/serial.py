"""GET .../virtualmachines/NAME/console: a VM's serial console as text, like pods/log.

`tailLines=N` starts N lines from the end; `follow=true` keeps the answer open and streams
what the guest prints next, until the guest stops, the VM is deleted or the client leaves.

QEMU VMs: the console is the file QEMU writes in the VM's work directory on its host
(DATA_DIR/qemu/vms/NAMESPACE/NAME/console.log, read as api/consolelog.py says). A VM whose
host is run by a separate agent is read through that agent's console endpoint, published in
the Host's `status.agentEndpoint` (agents.py); a VM of this server's own host
(`serve --driver qemu`) from the file here, which stays readable while the VM is stopped.
Simulated VMs: the boot log their state implies (bootlog.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from evroc_compute.api import consolelog
from evroc_compute.api.infra import HOST, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.server import errors
from evroc_compute.server.console.agents import AgentConsoles, unreachable
from evroc_compute.server.console.bootlog import boot_log, new_lines
from evroc_compute.server.handlers.common import Context, Target, current
from evroc_compute.server.http import Request, Response, StreamingResponse

TEXT = b"text/plain; charset=utf-8"
STATE_POLL = 0.5  # seconds between looks at a simulated VM's state (in memory)


def tail_lines(req: Request) -> int | None:
    try:
        return consolelog.parse_tail_lines(req.query.get("tailLines"))
    except ValueError as problem:
        raise errors.bad_request(str(problem), field="tailLines",
                                 cause_type="FieldValueInvalid") from None


def not_running(vm: dict[str, Any], name: str) -> errors.ApiError:
    state = (vm.get("status") or {}).get("virtualMachineStatus") or "not started"
    return errors.bad_request(
        f'VirtualMachine "{name}" has no running instance (status {state}): its serial '
        "console begins when the VM starts")


async def serial_console(ctx: Context, req: Request, target: Target, data_dir: Path,
                         agents: AgentConsoles) -> Response | StreamingResponse:
    vm = current(ctx, target).obj  # 404 for a VM that does not exist
    lines, follow = tail_lines(req), req.flag("follow")
    namespace, name = target.namespace or "", target.name
    entry = ctx.store.get(VIRTUAL_MACHINE_INSTANCE.key(namespace, name))
    host_name = ((entry.obj.get("spec") or {}).get("host") or "") if entry is not None else ""
    host = ctx.store.get(HOST.key("", host_name)) if host_name else None
    qemu = host is not None and (host.obj.get("spec") or {}).get("driver") == "qemu"
    endpoint = (host.obj.get("status") or {}).get("agentEndpoint") if host is not None else None
    if qemu and endpoint:
        return await agents.read(host_name, endpoint, namespace, name, lines, follow,
                                 not_running(vm, name))
    path = consolelog.console_path(data_dir / "qemu" / "vms", namespace, name)
    if await asyncio.to_thread(path.is_file):
        text, offset = await asyncio.to_thread(consolelog.read_end, path, lines)
        if not follow:
            return Response(200, text, TEXT)
        return StreamingResponse(consolelog.follow(
            path, text, offset, lambda: ctx.store.get(target.key) is not None), TEXT)
    if entry is None:
        raise not_running(vm, name)
    if qemu:
        raise unreachable(
            f'the serial console of VirtualMachine "{name}" is on host "{host_name}", whose '
            "agent has published no console endpoint (status.agentEndpoint): it is not "
            "running, or is older than this server")
    log = boot_log(vm, entry.obj)
    text = _text(log[-lines:] if lines else [] if lines == 0 else log)
    if not follow:
        return Response(200, text, TEXT)
    return StreamingResponse(_follow_simulated(ctx, target, text, log), TEXT)


def _text(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


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
