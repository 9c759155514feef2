"""A child process kept running: `serve --controllers process` runs its control plane so.

The child is started at once and again whenever it exits (after 0.5 s, doubling to 30 s while
it keeps dying young; a run of a minute resets the wait). Its output goes to the parent's
stderr line by line: a text line with `NAME[pid] ` before it, a JSON line (`--log-format json`)
with `"process": "NAME"` and `"pid"` added. It ends with the parent: stopped with SIGTERM (SIGKILL
after 5 s) on `stop()`, and on Linux sent SIGTERM by the kernel if the parent dies without
stopping it (kill -9).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence

import orjson

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _end_with_parent() -> None:  # pragma: no cover - runs in the forked child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def labelled(line: bytes, name: str, pid: int) -> bytes:
    """A child's log line as the parent's log shows it."""
    text = line.rstrip(b"\n")
    if text.startswith(b"{"):
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            return orjson.dumps({**record, "process": name, "pid": pid}) + b"\n"
    return f"{name}[{pid}] ".encode() + text + b"\n"


def next_wait(wait: float, ran: float, *, first: float = 0.5, most: float = 30.0,
              steady: float = 60.0) -> float:
    """The pause before the next start, after a run of `ran` seconds that followed `wait`."""
    return first if ran >= steady else min(most, max(first, wait * 2))


# Before each start: more arguments, and the sockets the child inherits (closed here once it has).
Prepare = Callable[[], tuple[list[str], list[socket.socket]]]


class Supervisor:
    def __init__(self, name: str, argv: Sequence[str],
                 prepare: Prepare = lambda: ([], [])) -> None:
        self.name = name
        self.argv = list(argv)
        self.prepare = prepare
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"supervise-{self.name}")

    async def _run(self) -> None:
        wait = 0.0
        while not self._stopping:
            began = time.monotonic()
            inherited: list[socket.socket] = []
            try:
                extra, inherited = self.prepare()
                self.process = await asyncio.create_subprocess_exec(
                    *self.argv, *extra, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                    preexec_fn=_end_with_parent, limit=1 << 20,
                    pass_fds=[s.fileno() for s in inherited])
            except OSError as problem:
                wait = next_wait(wait, 0.0)
                log.error("%s: cannot start %s: %s; trying again in %.1f s", self.name,
                          self.argv[0], problem, wait)
                await asyncio.sleep(wait)
                continue
            finally:
                for inheritance in inherited:  # the child's now (or nobody's): its end closes
                    inheritance.close()
            log.info("%s: started process %d", self.name, self.process.pid)
            await self._relay(self.process)
            code = await self.process.wait()
            if self._stopping:
                return
            wait = next_wait(wait, time.monotonic() - began)
            log.warning("%s: process %d exited with %s; restarting in %.1f s", self.name,
                        self.process.pid, code, wait)
            await asyncio.sleep(wait)

    async def _relay(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        out = sys.stderr.buffer
        while line := await process.stdout.readline():
            out.write(labelled(line, self.name, process.pid))
            out.flush()

    def terminate(self) -> None:
        """Send the child SIGTERM and start it no more (safe in a signal handler)."""
        self._stopping = True
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()

    async def stop(self) -> None:
        self.terminate()
        process = self.process
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
