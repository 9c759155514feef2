"""The benchmark (`make bench`): starts its own server on a temp data dir and measures

1. sustained VirtualMachine creates/s under concurrent clients (closed loop), p50/p99;
2. GETs/s of random existing VMs (closed loop), p50/p99;
3. merge-PATCH latency at a fixed, open-loop offered load (half the create rate measured in
   phase 1, or --patch-rate), p50/p99,
   measured from each request's *scheduled* start so queueing is not hidden;
4. a full LIST of >= 10,000 VMs as JSON and as a Table (median of a few repetitions);
5. write -> watch delivery latency to 1,000 concurrent watchers at 100 writes/s, p50/p99;
6. the server's RSS (VmRSS, VmHWM) after the load.

Prints a table (measured, target, met) and writes bench/results/<timestamp>.json.

    .venv/bin/python bench/run.py                # full run, ~45 s
    .venv/bin/python bench/run.py --quick        # small sizes, ~20 s
    .venv/bin/python bench/run.py --gc-probe     # + the server's GC pauses per phase
    .venv/bin/python bench/run.py --profile /tmp/prof   # + py-spy of the server per phase,
    .venv/bin/python bench/profile_report.py /tmp/prof/profile-get.txt --thread MainThread

Other processes on the machine skew every figure (the summary warns when they were busy);
`--wait-quiet 120` waits for a quiet machine first. Profiling perturbs the figures too.

The load generator is this process (raw asyncio protocols on uvloop, see httpclient.py); the
server is a separate process, so they share the machine's cores but not an interpreter.
Client and server CPU seconds are recorded per phase so a client-bound result is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

from httpclient import Connection, connect, open_watch, request_bytes  # noqa: E402

from conftest import start_server  # noqa: E402

GROUP_VERSION = "compute.evroclabs.net/v1alpha1"
COLLECTION = f"/apis/{GROUP_VERSION}/namespaces/default/virtualmachines"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"
SENT_ANNOTATION = "bench.evroc.dev/sent-ns"
JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"))
MERGE_HEADERS = (("Content-Type", "application/merge-patch+json"),
                 ("Accept", "application/json"))


def vm_body(name: str) -> bytes:
    return orjson.dumps({
        "apiVersion": GROUP_VERSION, "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"bench": "yes"}},
        "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": "a1a.s"},
                 "diskRefs": [{"name": f"d-{name}", "bootFrom": True}]},
    })


# ---- measurement helpers ---------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise(latencies_s: list[float]) -> dict[str, float]:
    values = sorted(latencies_s)
    ms = 1000.0
    return {"count": len(values),
            "p50_ms": percentile(values, 0.50) * ms, "p90_ms": percentile(values, 0.90) * ms,
            "p99_ms": percentile(values, 0.99) * ms, "p999_ms": percentile(values, 0.999) * ms,
            "max_ms": (values[-1] * ms) if values else math.nan,
            "mean_ms": (statistics.fmean(values) * ms) if values else math.nan}


class ServerStats:
    """CPU seconds and memory of the server process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self, main_thread_only: bool = False) -> float:
        """utime + stime of the process (all threads), or of its main thread (the event
        loop; the other threads are asyncio.to_thread's, i.e. SQLite)."""
        path = f"/proc/{self.pid}/task/{self.pid}/stat" if main_thread_only \
            else f"/proc/{self.pid}/stat"
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def machine(self) -> tuple[float, float, float, float]:
        """Machine-wide CPU seconds since boot, from /proc/stat: (user+system, irq+softirq,
        idle+iowait, steal)."""
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
        return ((user + nice + system) / self.tick, (irq + softirq) / self.tick,
                (idle + iowait) / self.tick, steal / self.tick)

    def memory(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "VmSize", "Threads"):
                parts = value.split()
                out[name] = int(parts[0])  # kB (or a count for Threads)
        return out


@dataclass
class Phase:
    """Wall, client CPU and server CPU consumed by one phase."""

    stats: ServerStats
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    machine_busy: float = 0.0
    machine_irq: float = 0.0
    machine_idle: float = 0.0
    steal: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    loop_cpu: float = 0.0
    _loop0: float = 0.0
    _t: tuple[float, ...] = field(default=())

    def __enter__(self) -> Phase:
        self.started_at = time.time()
        self._loop0 = self.stats.cpu_seconds(main_thread_only=True)
        self._t = (time.perf_counter(), time.process_time(), self.stats.cpu_seconds(),
                   *self.stats.machine())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, client, server, busy, irq, idle, steal = self._t
        self.wall = time.perf_counter() - wall
        self.client_cpu = time.process_time() - client
        self.server_cpu = self.stats.cpu_seconds() - server
        self.loop_cpu = self.stats.cpu_seconds(main_thread_only=True) - self._loop0
        now_busy, now_irq, now_idle, now_steal = self.stats.machine()
        self.machine_busy, self.machine_idle = now_busy - busy, now_idle - idle
        self.machine_irq = now_irq - irq
        self.ended_at = time.time()
        self.steal = now_steal - steal

    def as_dict(self) -> dict[str, float]:
        per = (lambda x: x / self.wall) if self.wall else (lambda x: math.nan)
        # Busy CPU time neither the server nor this client used: other processes on the
        # machine (a noisy neighbour makes every figure here pessimistic).
        # (irq/softirq included: the kernel may charge it to our processes' stime as well)
        other = max(0.0, self.machine_busy + self.machine_irq - self.server_cpu
                    - self.client_cpu)
        return {"started_at": self.started_at, "ended_at": self.ended_at,
                "wall_s": self.wall, "client_cpu_s": self.client_cpu,
                "server_cpu_s": self.server_cpu,
                "server_cpu_util": per(self.server_cpu),
                "server_loop_thread_util": per(self.loop_cpu),
                "client_cpu_util": per(self.client_cpu),
                "other_cpu_util": per(other), "irq_softirq_util": per(self.machine_irq),
                "machine_idle_util": per(self.machine_idle),
                "steal_util": per(self.steal)}


class Profiler:
    """py-spy recording the server for the duration of a `with` block (optional)."""

    def __init__(self, out_dir: Path | None, pid: int, rate: int, native: bool = False) -> None:
        self.out_dir, self.pid, self.rate, self.native = out_dir, pid, rate, native
        self.files: dict[str, str] = {}

    def record(self, name: str) -> _Recording:
        return _Recording(self, name)


class _Recording:
    def __init__(self, profiler: Profiler, name: str) -> None:
        self.profiler, self.name = profiler, name
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> None:
        prof = self.profiler
        if prof.out_dir is None:
            return
        prof.out_dir.mkdir(parents=True, exist_ok=True)
        path = prof.out_dir / f"profile-{self.name}.txt"
        spy = Path(sys.executable).parent / "py-spy"
        self.proc = subprocess.Popen(
            [str(spy if spy.exists() else "py-spy"), "record", "--pid", str(prof.pid),
             "--rate", str(prof.rate), "--format", "raw", "--threads",
             *(["--native"] if prof.native else ["--nonblocking"]),
             "--output", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        prof.files[self.name] = str(path)
        time.sleep(0.3)  # let it attach before the load starts

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode not in (0, -signal.SIGINT, 130):
            print(f"  py-spy exited {self.proc.returncode}: {err.decode(errors='replace')[-500:]}",
                  file=sys.stderr)


# ---- load shapes -----------------------------------------------------------------------

@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    first_error: str = ""
    spans: list[tuple[float, float]] = field(default_factory=list)  # wall (start, end)

    def error(self, what: str, detail: str = "") -> None:
        self.errors[what] = self.errors.get(what, 0) + 1
        if not self.first_error:
            self.first_error = f"{what}: {detail[:300]}"

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0


async def open_pool(url: str, n: int, tls: ssl.SSLContext | None) -> list[Connection]:
    return list(await asyncio.gather(*(connect(url, tls) for _ in range(n))))


def close_pool(pool: list[Connection]) -> None:
    for conn in pool:
        conn.close()


async def closed_loop(pool: list[Connection], make: Callable[[int], bytes | None],
                      seconds: float, ok_status: tuple[int, ...],
                      on_ok: Callable[[int], None] | None = None) -> LoadResult:
    """Each connection sends its next request as soon as the previous one answers, until
    `seconds` pass or `make` returns None (out of work)."""
    result = LoadResult()
    counter = iter(range(1 << 62))
    perf = time.perf_counter
    start = perf()
    deadline = start + seconds
    last_done = start

    async def worker(conn: Connection) -> None:
        nonlocal last_done
        while perf() < deadline:
            i = next(counter)
            data = make(i)
            if data is None:
                return
            t0 = perf()
            try:
                status, body = await conn.request(data)
            except Exception as problem:
                result.error(type(problem).__name__, str(problem))
                return
            t1 = perf()
            if status in ok_status:
                result.ok += 1
                result.latencies.append(t1 - t0)
                if on_ok is not None:
                    on_ok(i)
            else:
                result.error(str(status), body.decode(errors="replace"))
            last_done = t1

    await asyncio.gather(*(worker(c) for c in pool))
    result.elapsed = last_done - start
    return result


async def open_loop(pool: list[Connection], make: Callable[[int], bytes], rate: float,
                    seconds: float, ok_status: tuple[int, ...]) -> tuple[LoadResult, list[float]]:
    """Requests scheduled at start + i/rate regardless of how fast answers come back. A
    request waits for an idle connection if all are busy; its latency counts from its
    scheduled time (the "intended" latency, free of coordinated omission). Also returns
    the service times (from the actual send)."""
    result = LoadResult()
    service: list[float] = []
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in pool:
        idle.put_nowait(conn)
    perf = time.perf_counter
    total = int(rate * seconds)
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, scheduled: float) -> None:
        conn = await idle.get()
        t0 = perf()
        try:
            status, body = await conn.request(make(i))
        except Exception as problem:
            result.error(type(problem).__name__, str(problem))
            return
        t1 = perf()
        idle.put_nowait(conn)
        if status in ok_status:
            result.ok += 1
            result.latencies.append(t1 - scheduled)
            result.spans.append((wall0 + scheduled - start, wall0 + t1 - start))
            service.append(t1 - t0)
        else:
            result.error(str(status), body.decode(errors="replace"))

    start, wall0 = perf(), time.time()
    i = 0
    while i < total:
        now = perf()
        while i < total and start + i / rate <= now:
            tasks.append(asyncio.create_task(one(i, start + i / rate)))
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i / rate - perf()))
    await asyncio.gather(*tasks)
    result.elapsed = perf() - start
    return result, service


# ---- the benchmark ---------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, url: str, stats: ServerStats,
                 profiler: Profiler, tls: ssl.SSLContext | None, token: str) -> None:
        self.args, self.url, self.stats, self.profiler = args, url, stats, profiler
        self.tls = tls  # HTTPS: trust the server's CA, present the admin's certificate
        self.auth = (("Authorization", f"Bearer {token}"),) if token else ()  # plain HTTP
        self.host = urlsplit(url).netloc
        self.names: list[str] = []
        self.results: dict[str, Any] = {}
        self.patch_spans: list[tuple[float, float]] = []

    def req(self, method: str, path: str, body: bytes = b"",
            headers: tuple[tuple[str, str], ...] = JSON_HEADERS) -> bytes:
        return request_bytes(method, path, self.host, body, headers + self.auth)

    async def call(self, method: str, path: str, body: bytes = b"",
                   headers: tuple[tuple[str, str], ...] = JSON_HEADERS) -> tuple[int, bytes]:
        conn = await connect(self.url, self.tls)
        try:
            return await conn.request(self.req(method, path, body, headers))
        finally:
            conn.close()

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # -- creates ---------------------------------------------------------------------

    def _create_requests(self, prefix: str, limit: int) -> tuple[Callable[[int], bytes | None],
                                                                 Callable[[int], None]]:
        def make(i: int) -> bytes | None:
            if limit and i >= limit:
                return None
            return self.req("POST", COLLECTION, vm_body(f"{prefix}{i}"))

        def done(i: int) -> None:
            self.names.append(f"{prefix}{i}")
        return make, done

    async def warmup(self) -> None:
        pool = await open_pool(self.url, 16, self.tls)
        make, done = self._create_requests("warm-", self.args.warmup)
        res = await closed_loop(pool, make, 30, (201,), done)
        close_pool(pool)
        if res.errors:
            raise SystemExit(f"warm-up creates failed: {res.errors} {res.first_error}")

    async def creates(self) -> None:
        a = self.args
        self.log(f"[1] creates: {a.connections} connections, up to {a.create_seconds}s "
                 f"or {a.create_max} objects")
        pool = await open_pool(self.url, a.connections, self.tls)
        make, done = self._create_requests("vm-", a.create_max)
        with self.profiler.record("create"), Phase(self.stats) as phase:
            res = await closed_loop(pool, make, a.create_seconds, (201,), done)
        close_pool(pool)
        self.results["create"] = {"rate_per_s": res.rate, "ok": res.ok, "errors": res.errors,
                                  "first_error": res.first_error, "elapsed_s": res.elapsed,
                                  "connections": a.connections, **summarise(res.latencies),
                                  **phase.as_dict()}
        self.log(f"    {res.ok} created in {res.elapsed:.2f}s = {res.rate:.0f}/s; errors "
                 f"{res.errors or 'none'}")

    async def fill(self) -> None:
        """Top up to --list-size VirtualMachines (the list measurement needs them)."""
        missing = self.args.list_size - len(self.names)
        if missing <= 0:
            return
        self.log(f"    topping up: {missing} more VMs to reach {self.args.list_size}")
        pool = await open_pool(self.url, self.args.connections, self.tls)
        make, done = self._create_requests("fill-", missing)
        res = await closed_loop(pool, make, 300, (201,), done)
        close_pool(pool)
        if res.errors:
            raise SystemExit(f"fill creates failed: {res.errors} {res.first_error}")

    # -- gets ------------------------------------------------------------------------

    async def gets(self) -> None:
        a = self.args
        self.log(f"[2] gets: {a.connections} connections for {a.get_seconds}s over "
                 f"{len(self.names)} objects")
        names, rng = self.names, random.Random(1)
        requests = [self.req("GET", f"{COLLECTION}/{n}", headers=(("Accept", "application/json"),))
                    for n in names]
        pool = await open_pool(self.url, a.connections, self.tls)
        with self.profiler.record("get"), Phase(self.stats) as phase:
            res = await closed_loop(pool, lambda i: rng.choice(requests), a.get_seconds, (200,))
        close_pool(pool)
        self.results["get"] = {"rate_per_s": res.rate, "ok": res.ok, "errors": res.errors,
                               "first_error": res.first_error, "elapsed_s": res.elapsed,
                               "connections": a.connections, **summarise(res.latencies),
                               **phase.as_dict()}
        self.log(f"    {res.ok} gets in {res.elapsed:.2f}s = {res.rate:.0f}/s")

    # -- patches at a fixed offered load ---------------------------------------------

    async def patches(self) -> None:
        a = self.args
        # half the create rate this run measured (the target's own reading), else half the target
        measured = self.results.get("create", {}).get("rate_per_s", 0.0)
        rate = a.patch_rate or (measured / 2 if measured else TARGETS["create_rate"] / 2)
        self.log(f"[3] merge PATCH open loop: {rate:.0f}/s offered for {a.patch_seconds}s, "
                 f"{a.patch_connections} connections")
        rng = random.Random(2)
        names = self.names

        def make(i: int) -> bytes:
            body = orjson.dumps({"metadata": {"labels": {"patched": str(i)}}})
            return self.req("PATCH", f"{COLLECTION}/{rng.choice(names)}", body, MERGE_HEADERS)

        pool = await open_pool(self.url, a.patch_connections, self.tls)
        if a.patch_capacity_seconds > 0:
            cap_pool = pool[:a.connections]
            with Phase(self.stats) as cap_phase:
                cap = await closed_loop(cap_pool, make, a.patch_capacity_seconds, (200,))
            self.results["patch_capacity"] = {
                "rate_per_s": cap.rate, "ok": cap.ok, "errors": cap.errors,
                "connections": len(cap_pool), **summarise(cap.latencies), **cap_phase.as_dict()}
            self.log(f"    capacity (closed loop, {len(cap_pool)} connections): {cap.rate:.0f}/s")
            await asyncio.sleep(0.5)  # let the group commit drain before the paced run
        with self.profiler.record("patch"), Phase(self.stats) as phase:
            res, service = await open_loop(pool, make, rate, a.patch_seconds, (200,))
        close_pool(pool)
        service_summary = {f"service_{k}": v for k, v in summarise(service).items()
                           if k != "count"}
        self.patch_spans = res.spans
        self.results["patch"] = {"offered_per_s": rate, "achieved_per_s": res.rate,
                                 "ok": res.ok, "errors": res.errors,
                                 "first_error": res.first_error, **summarise(res.latencies),
                                 **service_summary, **phase.as_dict()}
        self.log(f"    {res.ok} patches, achieved {res.rate:.0f}/s, p99 "
                 f"{self.results['patch']['p99_ms']:.1f} ms")

    # -- list ------------------------------------------------------------------------

    async def lists(self) -> None:
        a = self.args
        self.log(f"[4] list {len(self.names)}+ VMs, {a.list_reps} repetitions each as JSON "
                 "and Table")
        out: dict[str, Any] = {}
        conn = await connect(self.url, self.tls)
        for label, accept in (("json", "application/json"), ("table", TABLE_ACCEPT)):
            data = self.req("GET", COLLECTION, headers=(("Accept", accept),))
            times: list[float] = []
            sizes: list[int] = []
            counts: list[int] = []
            with self.profiler.record(f"list-{label}"), Phase(self.stats) as phase:
                for _ in range(a.list_reps):
                    t0 = time.perf_counter()
                    status, body = await conn.request(data)
                    times.append(time.perf_counter() - t0)
                    if status != 200:
                        raise SystemExit(f"list ({label}) answered {status}: {body[:300]!r}")
                    sizes.append(len(body))
                    doc = orjson.loads(body)
                    counts.append(len(doc["rows"] if label == "table" else doc["items"]))
            out[label] = {"median_s": statistics.median(times), "min_s": min(times),
                          "max_s": max(times), "times_s": times, "bytes": sizes[-1],
                          "items": counts[-1], **phase.as_dict()}
            self.log(f"    {label}: median {statistics.median(times) * 1000:.0f} ms, "
                     f"{counts[-1]} items, {sizes[-1] / 1e6:.1f} MB")
        conn.close()
        self.results["list"] = out

    # -- watch fan-out ---------------------------------------------------------------

    async def watches(self) -> None:
        a = self.args
        status, body = await self.call("GET", f"{COLLECTION}?limit=1")
        if status != 200:
            raise SystemExit(f"list for resourceVersion answered {status}")
        rv = orjson.loads(body)["metadata"]["resourceVersion"]
        self.log(f"[5] watch: {a.watchers} watchers from resourceVersion {rv}; "
                 f"{a.watch_rate}/s writes for {a.watch_seconds}s")
        delays: list[float] = []
        received = [0] * a.watchers
        other = [0]
        marker = SENT_ANNOTATION.encode()

        def on_line_for(w: int) -> Callable[[bytes, int], None]:
            def on_line(line: bytes, arrived_ns: int) -> None:
                if marker not in line:
                    other[0] += 1
                    return
                event = orjson.loads(line)
                sent = event["object"]["metadata"].get("annotations", {}).get(SENT_ANNOTATION)
                if event.get("type") == "MODIFIED" and sent:
                    delays.append((arrived_ns - int(sent)) / 1e9)
                    received[w] += 1
                else:
                    other[0] += 1
            return on_line

        path = f"{COLLECTION}?watch=true&resourceVersion={rv}&allowWatchBookmarks=false"
        streams = await asyncio.gather(*(open_watch(self.url, path, on_line_for(w),
                                                    (("Accept", "application/json"), *self.auth),
                                                    self.tls)
                                         for w in range(a.watchers)))
        statuses = await asyncio.wait_for(asyncio.gather(*(s.status for s in streams)), 30)
        if any(s != 200 for s in statuses):
            raise SystemExit(f"watch answered {sorted(set(statuses))}")
        await asyncio.sleep(0.2)

        rng = random.Random(3)
        targets = rng.sample(self.names, min(len(self.names), int(a.watch_rate * a.watch_seconds)
                                             + 1))

        pool = await open_pool(self.url, 8, self.tls)
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for conn in pool:
            idle.put_nowait(conn)
        write_lat: list[float] = []
        write_errors: dict[str, int] = {}

        async def write(i: int) -> None:
            conn = await idle.get()
            sent = time.time_ns()
            body = orjson.dumps({"metadata": {"annotations": {SENT_ANNOTATION: str(sent)}}})
            data = self.req("PATCH", f"{COLLECTION}/{targets[i % len(targets)]}", body,
                            MERGE_HEADERS)
            t0 = time.perf_counter()
            status, _ = await conn.request(data)
            write_lat.append(time.perf_counter() - t0)
            idle.put_nowait(conn)
            if status != 200:
                write_errors[str(status)] = write_errors.get(str(status), 0) + 1

        total = int(a.watch_rate * a.watch_seconds)
        with self.profiler.record("watch"), Phase(self.stats) as phase:
            start = time.perf_counter()
            tasks = []
            for i in range(total):
                await asyncio.sleep(max(0.0, start + i / a.watch_rate - time.perf_counter()))
                tasks.append(asyncio.create_task(write(i)))
            await asyncio.gather(*tasks)
            expected = (total - sum(write_errors.values())) * a.watchers
            deadline = time.perf_counter() + 5
            while len(delays) < expected and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
        close_pool(pool)
        for stream in streams:
            stream.close()
        self.results["watch"] = {"watchers": a.watchers, "writes": total,
                                 "write_rate_per_s": a.watch_rate, "expected_events": expected,
                                 "delivered_events": len(delays), "other_lines": other[0],
                                 "min_per_watcher": min(received), "write_errors": write_errors,
                                 **summarise(delays),
                                 **{f"write_{k}": v for k, v in summarise(write_lat).items()
                                    if k != "count"},
                                 **phase.as_dict()}
        self.log(f"    delivered {len(delays)}/{expected} events, p99 "
                 f"{self.results['watch']['p99_ms']:.1f} ms")

    async def run(self) -> None:
        await self.warmup()
        await self.creates()
        await self.fill()
        await self.gets()
        await self.patches()
        await self.lists()
        await self.watches()


# ---- reporting -------------------------------------------------------------------------

def checks(results: dict[str, Any], targets: dict[str, float]) -> list[dict[str, Any]]:
    """The rows of the summary table: (metric, measured, unit, target, comparison, met)."""
    rows: list[dict[str, Any]] = []

    def row(metric: str, value: float, unit: str, target: float | None = None,
            higher_is_better: bool = True, note: str = "") -> None:
        met = None
        if target is not None and not math.isnan(value):
            met = value >= target if higher_is_better else value <= target
        rows.append({"metric": metric, "value": value, "unit": unit, "target": target,
                     "higher_is_better": higher_is_better, "met": met, "note": note})

    c, g, p = results["create"], results["get"], results["patch"]
    row("create VM rate", c["rate_per_s"], "/s", targets["create_rate"],
        note=f"{c['connections']} conns, {c['ok']} ok, {sum(c['errors'].values())} err")
    row("create latency p50", c["p50_ms"], "ms")
    row("create latency p99", c["p99_ms"], "ms")
    row("get VM rate", g["rate_per_s"], "/s", targets["get_rate"],
        note=f"{g['connections']} conns, {sum(g['errors'].values())} err")
    row("get latency p50", g["p50_ms"], "ms")
    row("get latency p99", g["p99_ms"], "ms")
    row("merge-PATCH p99 @ fixed load", p["p99_ms"], "ms", targets["patch_p99_ms"], False,
        note=f"offered {p['offered_per_s']:.0f}/s, got {p['achieved_per_s']:.0f}/s, "
             f"{sum(p['errors'].values())} err")
    row("merge-PATCH p50 @ fixed load", p["p50_ms"], "ms")
    if "patch_capacity" in results:
        cap = results["patch_capacity"]
        row("merge-PATCH capacity (closed loop)", cap["rate_per_s"], "/s",
            note=f"{cap['connections']} conns; p99 {cap['p99_ms']:.0f} ms")
    for label in ("json", "table"):
        item = results["list"][label]
        row(f"list {item['items']} VMs ({label}) median", item["median_s"] * 1000, "ms",
            targets[f"list_{label}_ms"], False, note=f"{item['bytes'] / 1e6:.1f} MB")
    w = results["watch"]
    row(f"watch delivery p99 ({w['watchers']} watchers)", w["p99_ms"], "ms",
        targets["watch_p99_ms"], False,
        note=f"{w['delivered_events']}/{w['expected_events']} events delivered")
    if w["delivered_events"] < w["expected_events"]:
        rows[-1]["met"] = False  # a lost event fails the watch target whatever the latency
    row("watch delivery p50", w["p50_ms"], "ms")
    m = results["memory"]
    row("server VmRSS after load", m["VmRSS"] / 1024, "MiB")
    row("server VmHWM (peak RSS)", m["VmHWM"] / 1024, "MiB")
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    def fmt(value: float | None, unit: str) -> str:
        if value is None:
            return ""
        if math.isnan(value):
            return "n/a"
        digits = 0 if (unit == "/s" or value >= 100) else 1
        return f"{value:,.{digits}f} {unit}"

    table = [("metric", "measured", "target", "status", "notes")]
    for r in rows:
        target = "" if r["target"] is None else \
            (">= " if r["higher_is_better"] else "<= ") + fmt(r["target"], r["unit"])
        status = {None: "", True: "met", False: "NOT MET"}[r["met"]]
        table.append((r["metric"], fmt(r["value"], r["unit"]), target, status, r["note"]))
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    lines = []
    for n, line in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[i]) if i in (0, 3, 4) else cell.rjust(widths[i])
                               for i, cell in enumerate(line)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a small run (~30 s): fewer objects, shorter phases")
    parser.add_argument("--connections", type=int, default=64,
                        help="concurrent keep-alive connections for creates and gets")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured creates first")
    parser.add_argument("--create-seconds", type=float, default=None)
    parser.add_argument("--create-max", type=int, default=None,
                        help="stop the create phase after this many objects")
    parser.add_argument("--list-size", type=int, default=None,
                        help="VMs that must exist before the list phase (topped up)")
    parser.add_argument("--get-seconds", type=float, default=None)
    parser.add_argument("--patch-seconds", type=float, default=None)
    parser.add_argument("--patch-rate", type=float, default=0.0,
                        help="offered PATCH/s (default: half the create rate phase 1 measured)")
    parser.add_argument("--patch-connections", type=int, default=128)
    parser.add_argument("--patch-capacity-seconds", type=float, default=None,
                        help="first measure PATCH/s closed loop for this long (0: skip)")
    parser.add_argument("--list-reps", type=int, default=None)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--watch-rate", type=float, default=100.0, help="writes/s while watched")
    parser.add_argument("--watch-seconds", type=float, default=None)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the server with py-spy during each measured phase "
                             "(raw collapsed stacks in DIR; summarise with profile_report.py)")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument("--profile-native", action="store_true",
                        help="py-spy --native (C frames of uvloop, sqlite3, orjson; pauses the "
                             "server per sample, so it perturbs the figures more)")
    parser.add_argument("--results-dir", type=Path, default=BENCH / "results")
    parser.add_argument("--gc-probe", action="store_true",
                        help="log the server's garbage-collector pauses (bench/gcprobe) and "
                             "attribute them to phases")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the machine to be nearly idle "
                             "(other processes skew every figure)")
    parser.add_argument("--insecure-http", action="store_true",
                        help="serve plain HTTP and authenticate with a bearer token (default: "
                             "HTTPS and the admin's client certificate): TLS's cost apart")
    parser.add_argument("--audit-level", choices=("Metadata", "Request"), default="",
                        help="run the server with an audit log at this level (in the temp dir)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for `evroc-compute serve` (repeatable)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a target is not met (default: report only)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the server's temp data dir (printed) after the run")
    args = parser.parse_args(argv)
    defaults = dict(warmup=300, create_seconds=10.0, create_max=10_000, list_size=10_000,
                    get_seconds=8.0, patch_seconds=6.0, patch_capacity_seconds=3.0, list_reps=5,
                    watch_seconds=4.0)
    quick = dict(warmup=100, create_seconds=3.0, create_max=3_000, list_size=2_000,
                 get_seconds=3.0, patch_seconds=3.0, patch_capacity_seconds=2.0, list_reps=3,
                 watch_seconds=2.0)
    for name, value in (quick if args.quick else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def _phases(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [(n, results[n]) for n in ("create", "get", "patch_capacity", "patch", "watch")
           if n in results]
    return out + [(f"list-{k}", v) for k, v in results.get("list", {}).items()]


# The performance issue's targets (wrk -c64 for the rates; bench/wrk.py drives wrk itself).
TARGETS = {"create_rate": 8000.0, "get_rate": 40000.0, "patch_p99_ms": 20.0,
           "list_json_ms": 50.0, "list_table_ms": 1000.0,
           "watch_p99_ms": 50.0}


def run_loop(coro: Awaitable[None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


def start_with_probe(data_dir: Path, gc_log: Path | None, *extra: str) -> Any:
    """conftest's start_server; with gc_log, the server also loads bench/gcprobe's
    sitecustomize, which logs its garbage-collector pauses there."""
    if gc_log is None:
        return start_server(data_dir, *extra)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "EVROC_BENCH_GC_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH / "gcprobe"), saved["PYTHONPATH"]) if p)
    os.environ["EVROC_BENCH_GC_LOG"] = str(gc_log)
    try:
        return start_server(data_dir, *extra)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start(args: argparse.Namespace, tmp: Path,
          gc_log: Path | None) -> tuple[Any, ssl.SSLContext | None, str]:
    """The server, and how to reach it as its admin: over HTTPS with the admin's client
    certificate, or (--insecure-http) over HTTP with a bearer token of group system:masters."""
    # One user here drives 128 connections (the PATCH phase), more than the per-user default
    # allows in flight (no real client comes near); the limit is still checked per request.
    extra = ["--max-requests-per-user", "1000",
             "--max-watches-per-user", str(max(100, args.watchers)), *args.server_arg]
    if args.audit_level:
        extra += ["--audit-log", str(tmp / "audit.log"), "--audit-level", args.audit_level]
    if not args.insecure_http:
        server = start_with_probe(tmp / "data", gc_log, *extra)
        return server, server.tls(), ""
    first = start_server(tmp / "data")  # plain HTTP takes no certificate: issue a token first
    try:
        issued = subprocess.run(
            [sys.executable, "-m", "evroc_compute.cli", "credentials", "create", "bench",
             "--group", "system:masters", "--data-dir", str(first.data_dir), "--pki-dir",
             str(first.pki_dir), "--server", first.url],
            capture_output=True, text=True, check=True, cwd=ROOT)
    finally:
        first.stop()
    token = yaml.safe_load(issued.stdout)["users"][0]["user"]["token"]
    return start_with_probe(tmp / "data", gc_log, "--insecure-http", *extra), None, token


def audit_summary(tmp: Path) -> dict[str, int]:
    """Lines and bytes the audit log (rotated parts included) holds."""
    files = list(tmp.glob("audit*.log"))
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files),
            "lines": sum(f.read_bytes().count(b"\n") for f in files)}


def attribute_gc(results: dict[str, Any], gc_log: Path,
                 patch_spans: list[tuple[float, float]]) -> None:
    """Add each phase's collector pauses (from the probe's log) to its results, and the
    PATCH latencies of requests that did not overlap a full collection."""
    passes: list[tuple[float, str, float]] = []
    for line in gc_log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] != "small":
            passes.append((float(parts[0]), parts[1], float(parts[2])))
    for _, phase in _phases(results):
        start, end = phase.get("started_at", 0), phase.get("ended_at", 0)
        inside = [(gen, ms) for t, gen, ms in passes if start <= t <= end]
        full = [ms for gen, ms in inside if gen == "2"]
        phase["gc"] = {"gen2_passes": len(full), "gen2_total_ms": sum(full),
                       "gen2_max_ms": max(full, default=0.0),
                       "passes_over_1ms": len(inside),
                       "total_ms_of_passes_over_1ms": sum(ms for _, ms in inside),
                       "max_pause_ms": max((ms for _, ms in inside), default=0.0)}
    # A pass is logged when it ends; it covered [end - duration, end].
    windows = [(t - ms / 1000, t) for t, gen, ms in passes if gen == "2"]
    clear = [end - start for start, end in patch_spans
             if not any(g0 < end and start < g1 for g0, g1 in windows)]
    if patch_spans and "patch" in results:
        results["patch"]["without_full_gc"] = {
            "excluded": len(patch_spans) - len(clear), **summarise(clear)}
    results["gc_all_passes"] = {"gen2": sum(1 for _, g, _ in passes if g == "2"),
                                "gen2_total_ms": sum(ms for _, g, ms in passes if g == "2"),
                                "max_pause_ms": max((ms for _, _, ms in passes), default=0.0)}


def wait_quiet(limit: float) -> float:
    """Wait (up to `limit` s) until other processes use < 0.3 core over a second; returns
    the busy cores seen last."""
    stats = ServerStats(os.getpid())
    deadline = time.monotonic() + limit
    while True:
        busy0, irq0, _, _ = stats.machine()
        time.sleep(1.0)
        busy1, irq1, _, _ = stats.machine()
        busy = busy1 + irq1 - busy0 - irq0
        if busy < 0.3 or time.monotonic() >= deadline:
            return busy
        print(f"  machine busy ({busy:.1f} cores used by other processes); waiting",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    started = dt.datetime.now(dt.timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="evroc-bench-"))
    gc_log = tmp / "gc.log" if args.gc_probe else None
    server, tls, token = start(args, tmp, gc_log)
    print(f"server pid {server.process.pid} at {server.url}, data in {tmp}", file=sys.stderr)
    stats = ServerStats(server.process.pid)
    profiler = Profiler(args.profile, server.process.pid, args.profile_rate,
                        args.profile_native)
    bench = Bench(args, server.url, stats, profiler, tls, token)
    try:
        t0 = time.perf_counter()
        run_loop(bench.run())
        bench.results["memory"] = stats.memory()
        bench.results["server_cpu_total_s"] = stats.cpu_seconds()
        bench.results["bench_wall_s"] = time.perf_counter() - t0
        if gc_log is not None:
            server.stop()  # flushes the log
            attribute_gc(bench.results, gc_log, bench.patch_spans)
    finally:
        server.stop()
        if args.audit_level:
            bench.results["audit"] = audit_summary(tmp)
        if not args.keep_data:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    rows = checks(bench.results, TARGETS)
    report = {
        "started": started.isoformat(), "quick": args.quick,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "loadavg_at_start": loadavg, "targets": TARGETS,
        "server": "http+token" if args.insecure_http else "https+client-certificate",
        "summary": rows, "results": bench.results,
        "profiles": profiler.files,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(render(rows))
    print()
    for name in ("create", "get", "patch_capacity", "patch"):
        if name not in bench.results:
            continue
        r = bench.results[name]
        print(f"{name}: server CPU {r['server_cpu_util']:.0%} of a core "
              f"({1e6 * r['server_cpu_s'] / max(1, r['ok']):.0f} us/request; event-loop thread "
              f"{r['server_loop_thread_util']:.0%}), client CPU "
              f"{r['client_cpu_util']:.0%}, other processes {r['other_cpu_util']:.0%}, "
              f"(all kernel irq/softirq {r['irq_softirq_util']:.0%}), "
              f"idle {r['machine_idle_util']:.0%} (of {os.cpu_count()} cores)")
    if args.gc_probe:
        for name, r in _phases(bench.results):
            g = r.get("gc", {})
            print(f"gc during {name}: {g.get('gen2_passes', 0)} full collections, "
                  f"{g.get('gen2_total_ms', 0):.0f} ms total, longest pause "
                  f"{g.get('max_pause_ms', 0):.0f} ms ({g.get('passes_over_1ms', 0)} passes "
                  f"over 1 ms, {g.get('total_ms_of_passes_over_1ms', 0):.0f} ms)")
    clean = bench.results.get("patch", {}).get("without_full_gc")
    if clean:
        print(f"merge-PATCH @ fixed load, leaving out the {clean['excluded']} requests in flight "
              f"during a full collection: p50 {clean['p50_ms']:.1f} ms, p99 "
              f"{clean['p99_ms']:.1f} ms")
    noisy = [f"{name} {r['other_cpu_util']:.0%}" for name, r in _phases(bench.results)
             if r.get("other_cpu_util", 0) > 0.25]
    if noisy:
        print("WARNING: other processes were busy during: " + ", ".join(noisy)
              + " (share of a core); those figures are pessimistic. --wait-quiet helps.")
    print(f"whole bench {bench.results['bench_wall_s']:.0f} s; results in {out}")
    if profiler.files:
        print("profiles: " + ", ".join(profiler.files.values())
              + f"  (summarise: {sys.executable} bench/profile_report.py <file>)")
    missed = [r["metric"] for r in rows if r["met"] is False]
    if missed:
        print("targets not met: " + "; ".join(missed))
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
