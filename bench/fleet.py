"""Fleet benchmark: N VirtualMachines, each with a boot Disk, from create to Running.

Starts its own server with the controllers, the scheduler and a simulated fleet (transitions
`immediate`, so what is measured is the control plane, not simulated boot times), then

1. opens watches (VirtualMachines, VirtualMachineInstances, Disks, Hosts) from the current
   resourceVersion, before anything is created, over HTTPS as the admin (DATA_DIR/pki);
2. creates N Disks and N VirtualMachines (one Disk then its VM per step, zones spread
   round-robin) over `--concurrency` keep-alive connections (closed loop);
3. waits until every VM's `.status.virtualMachineStatus` is Running (seen on the watch);
4. checks the result: every VM Running, no Host over-committed (sum of status.allocations
   <= spec.capacity), allocations consistent with the bindings, every instance in its disk's
   zone, private IPv4 addresses present and unique;
5. prints wall time (first create sent -> last VM Running), placement decisions/s (instances
   that got `spec.host`, over the window first bind -> last bind), time-to-Running percentiles
   (VM create sent -> Running event), the server's peak RSS (VmRSS sampled + VmHWM), CPU
   seconds (and, in the default layout, `serve --controllers process`, the controllers
   process's: the server's child; `--controllers in-process` for one process), the stored
   writes per VM (each revision on the watches is one write) by kind, by writer and by what
   changed (bench/writes.py; Host writes and Events counted apart), and the first distinct
   errors of the server's log.

    .venv/bin/python bench/fleet.py                  # 10,000 VMs (targets: <= 30 s, <= 2 GiB)
    .venv/bin/python bench/fleet.py --vms 500        # a quick run
    .venv/bin/python bench/fleet.py --profile /tmp/prof   # + py-spy of the server (py-spy on
                                                          # PATH, in the venv, or --py-spy)

The load generator is this process (raw asyncio HTTP/1.1, bench/httpclient.py); the server is
a separate process on the same machine, so both share its cores.  Results go to
bench/results/fleet-<timestamp>.json (--results-dir).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

from calibrate import calibration_seconds  # noqa: E402
from httpclient import Connection, WatchConnection, connect, open_watch, request_bytes  # noqa: E402
from run import ServerStats, percentile  # noqa: E402
from writes import Writes  # noqa: E402

from conftest import Server, children, start_server  # noqa: E402

COMPUTE = "compute.evroclabs.net/v1alpha1"
INFRA = "infra.evroc-compute.io/v1alpha1"
ZONES = ("se-sto-a", "se-sto-b", "se-sto-c")
USER_AGENT = ("User-Agent", "fleet-bench")  # the creates' field manager
JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"), USER_AGENT)
ACCEPT_JSON = (("Accept", "application/json"), USER_AGENT)
TARGET_WALL_S = 30.0
TARGET_RSS_MIB = 2048.0
RETRY_STATUSES = (429, 500, 503, 504)


# ---- small helpers ---------------------------------------------------------------------

def reconciles(metrics: str) -> dict[str, float]:
    """Reconciles by controller from the server's /metrics (every result counted)."""
    found: Counter[str] = Counter()
    for line in metrics.splitlines():
        match = re.match(r'controller_runtime_reconcile_total\{controller="([^"]+)",[^}]*\} (\S+)', line)
        if match:
            found[match[1]] += float(match[2])
    return dict(found)


def spread(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"count": len(v), "p50_s": percentile(v, 0.5), "p90_s": percentile(v, 0.9),
            "p99_s": percentile(v, 0.99), "max_s": v[-1] if v else math.nan}


def fleet_config(args: argparse.Namespace) -> dict[str, Any]:
    hosts = [{"name": f"{zone.removeprefix('se-')}-gen", "zone": zone, "vcpu": args.host_vcpu,
              "memoryGB": args.host_memory_gb, "count": args.hosts_per_zone} for zone in ZONES]
    subnets = {zone: f"10.{10 + i}.0.0/{args.subnet_prefix}" for i, zone in enumerate(ZONES)}
    return {"timing": "immediate", "heartbeat": {"interval": 10, "timeout": 40},
            "subnets": subnets, "hosts": hosts}


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+): (.*)$")


def log_problems(log_path: Path, limit: int = 12) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The first distinct WARNING/ERROR/CRITICAL records of the server log (numbers blanked
    to group them), each with the last line of its traceback, and counts per level."""
    distinct: dict[str, dict[str, Any]] = {}
    levels: Counter[str] = Counter()
    current: dict[str, Any] | None = None
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return [], levels
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if m is None:
            if current is not None and line.strip() and not line.startswith(" "):
                current["exception"] = line.strip()  # the traceback's last line wins
            elif line.startswith("Traceback") and current is None:
                levels["Traceback"] += 1
            continue
        level, logger, message = m.groups()
        current = None
        if level not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        levels[level] += 1
        key = f"{level} {logger}: {re.sub(r'[0-9]+', '#', message)[:160]}"
        if key in distinct:
            distinct[key]["count"] += 1
            continue
        if len(distinct) < limit:
            current = distinct[key] = {"line": line, "count": 1, "exception": ""}
    return list(distinct.values()), levels


# ---- state seen on the watches ---------------------------------------------------------

@dataclass
class Seen:
    vm_sent: dict[str, float] = field(default_factory=dict)  # name -> wall time the POST left
    disk_sent: dict[str, float] = field(default_factory=dict)
    disk_ready: dict[str, float] = field(default_factory=dict)  # Disk name -> Ready=True seen
    vm_created: dict[str, float] = field(default_factory=dict)  # name -> 201 received
    disks_created: int = 0
    running: dict[str, float] = field(default_factory=dict)  # VM name -> Running event arrival
    vmi_added: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)  # VMI name -> spec.host seen
    bound_host: dict[str, str] = field(default_factory=dict)
    vmi_disks_ready: dict[str, float] = field(default_factory=dict)  # spec.disksReady seen
    vmi_running: dict[str, float] = field(default_factory=dict)
    vmi_phase: dict[str, str] = field(default_factory=dict)
    unschedulable: dict[str, str] = field(default_factory=dict)
    vm_lines: int = 0
    vmi_lines: int = 0
    disk_lines: int = 0
    vm_bytes: int = 0
    vmi_bytes: int = 0
    disk_bytes: int = 0
    bookmarks: int = 0
    watch_errors: list[str] = field(default_factory=list)
    create_errors: Counter[str] = field(default_factory=Counter)
    first_create_errors: list[str] = field(default_factory=list)
    retries: int = 0
    writes: Writes = field(default_factory=Writes)
    host_lines: int = 0

    def on_vm(self, line: bytes, arrived_ns: int) -> None:
        self.vm_lines += 1
        self.vm_bytes += len(line)
        if line.startswith(b'{"type":"BOOKMARK"'):
            self.bookmarks += 1
            return
        if line.startswith(b'{"type":"ERROR"'):
            self.watch_errors.append("VM watch: " + line[:400].decode(errors="replace"))
            return
        event = orjson.loads(line)
        obj = event["object"]
        self.writes.seen("VirtualMachine", event["type"], obj)
        name = obj["metadata"]["name"]
        if name not in self.running and \
                (obj.get("status") or {}).get("virtualMachineStatus") == "Running":
            self.running[name] = arrived_ns / 1e9

    def on_disk(self, line: bytes, arrived_ns: int) -> None:
        self.disk_lines += 1
        self.disk_bytes += len(line)
        if line.startswith(b'{"type":"BOOKMARK"'):
            self.bookmarks += 1
            return
        if line.startswith(b'{"type":"ERROR"'):
            self.watch_errors.append("Disk watch: " + line[:400].decode(errors="replace"))
            return
        event = orjson.loads(line)
        obj = event["object"]
        self.writes.seen("Disk", event["type"], obj)
        name = obj["metadata"]["name"]
        if name not in self.disk_ready and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (obj.get("status") or {}).get("conditions") or []):
            self.disk_ready[name] = arrived_ns / 1e9

    def on_vmi(self, line: bytes, arrived_ns: int) -> None:
        self.vmi_lines += 1
        self.vmi_bytes += len(line)
        if line.startswith(b'{"type":"BOOKMARK"'):
            self.bookmarks += 1
            return
        if line.startswith(b'{"type":"ERROR"'):
            self.watch_errors.append("VMI watch: " + line[:400].decode(errors="replace"))
            return
        event = orjson.loads(line)
        self.writes.seen("VirtualMachineInstance", event["type"], event["object"])
        if event.get("type") == "DELETED":
            return
        obj, now = event["object"], arrived_ns / 1e9
        name = obj["metadata"]["name"]
        self.vmi_added.setdefault(name, now)
        spec = obj.get("spec") or {}
        host = spec.get("host")
        if host and name not in self.bound:
            self.bound[name], self.bound_host[name] = now, host
        if spec.get("disksReady"):
            self.vmi_disks_ready.setdefault(name, now)
        status = obj.get("status") or {}
        phase = status.get("phase") or "Pending"
        self.vmi_phase[name] = phase
        if phase == "Running":
            self.vmi_running.setdefault(name, now)
        if status.get("unschedulable"):
            self.unschedulable[name] = status["unschedulable"]

    def on_host(self, line: bytes, arrived_ns: int) -> None:
        """Hosts change with the fleet (the scheduler's reports of what each holds): writes, not per VM."""
        self.host_lines += 1
        if line.startswith(b'{"type":"BOOKMARK"'):
            self.bookmarks += 1
            return
        if line.startswith(b'{"type":"ERROR"'):
            self.watch_errors.append("Host watch: " + line[:400].decode(errors="replace"))
            return
        event = orjson.loads(line)
        self.writes.seen("Host", event["type"], event["object"])


# ---- the run ---------------------------------------------------------------------------

class FleetBench:
    def __init__(self, args: argparse.Namespace, server: Server, proc: ServerStats) -> None:
        self.args, self.url, self.proc, self.process = args, server.url, proc, server.process
        self.host = urlsplit(server.url).netloc
        self.tls = server.tls() if server.url.startswith("https:") else None  # as the admin
        ns = args.namespace
        self.vms_path = f"/apis/{COMPUTE}/namespaces/{ns}/virtualmachines"
        self.disks_path = f"/apis/{COMPUTE}/namespaces/{ns}/disks"
        self.vmis_path = f"/apis/{INFRA}/namespaces/{ns}/virtualmachineinstances"
        self.hosts_path = f"/apis/{INFRA}/hosts"
        self.seen = Seen()
        self.rss_peak_kb = 0
        self.rss_series: list[tuple[float, int, float]] = []  # (t, VmRSS kB, server CPU s)
        self.plane: ServerStats | None = None  # the controllers process, if serve has one
        self.plane_rss_peak_kb = 0
        self.results: dict[str, Any] = {}
        self.width = max(5, len(str(args.vms)))

    def req(self, method: str, path: str, body: bytes = b"",
            headers: tuple[tuple[str, str], ...] = JSON_HEADERS) -> bytes:
        return request_bytes(method, path, self.host, body, headers)

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = await connect(self.url, self.tls)
        try:
            return await conn.request(self.req(method, path, body))
        finally:
            conn.close()

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # -- set-up ----------------------------------------------------------------------

    async def ensure_namespace(self) -> None:
        ns = self.args.namespace
        status, _ = await self.call("GET", f"/api/v1/namespaces/{ns}")
        if status == 200:
            return
        body = orjson.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        status, answer = await self.call("POST", "/api/v1/namespaces", body)
        if status not in (200, 201, 409):
            raise SystemExit(f"creating namespace {ns} answered {status}: {answer[:300]!r}")

    async def wait_for_hosts(self, expected: int, limit: float = 60.0) -> float:
        """Until every Host is registered and Ready (its heartbeat seen): the scheduler
        places only on live hosts. Returns the seconds waited."""
        t0 = time.perf_counter()
        ready = 0
        while time.perf_counter() - t0 < limit:
            status, body = await self.call("GET", self.hosts_path)
            if status == 200:
                items = orjson.loads(body)["items"]
                ready = sum(1 for h in items if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (h.get("status") or {}).get("conditions") or []))
                if len(items) >= expected and ready >= expected:
                    return time.perf_counter() - t0
            await asyncio.sleep(0.25)
        raise SystemExit(f"only {ready} of {expected} hosts Ready after {limit:.0f} s")

    # -- background ------------------------------------------------------------------

    async def sample_memory(self) -> None:
        while True:
            try:
                mem = self.proc.memory()
                cpu = self.proc.cpu_seconds()
            except (OSError, IndexError, ValueError):
                return
            self.rss_peak_kb = max(self.rss_peak_kb, mem.get("VmRSS", 0))
            self.rss_series.append((time.time(), mem.get("VmRSS", 0), cpu))
            if self.plane is not None:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    self.plane_rss_peak_kb = max(self.plane_rss_peak_kb,
                                                 self.plane.memory().get("VmRSS", 0))
            await asyncio.sleep(self.args.sample_interval)

    async def progress(self, t0: float) -> None:
        s = self.seen
        last_cpu, last_t = self.proc.cpu_seconds(), time.time()
        last_plane = self.plane_cpu()
        while True:
            await asyncio.sleep(self.args.progress_interval)
            now = time.time()
            try:
                cpu, rss = self.proc.cpu_seconds(), self.proc.memory().get("VmRSS", 0)
            except (OSError, IndexError, ValueError):
                self.log("    server process is gone")
                return
            self.log(f"  t={now - t0:6.1f}s  disks {s.disks_created:>6} (Ready {len(s.disk_ready):>6})"
                     f"  VMs {len(s.vm_created):>6}  VMIs {len(s.vmi_added):>6}  bound "
                     f"{len(s.bound):>6}  disksReady {len(s.vmi_disks_ready):>6}  VMI Running "
                     f"{len(s.vmi_running):>6}  VM Running {len(s.running):>6}  RSS "
                     f"{rss / 1024:6.0f} MiB  server CPU {(cpu - last_cpu) / (now - last_t):4.0%}"
                     + (f"  controllers CPU {(plane - last_plane) / (now - last_t):4.0%}"
                        if (plane := self.plane_cpu()) else "")
                     + f"  unschedulable {len(s.unschedulable)}")
            last_cpu, last_t, last_plane = cpu, now, plane

    def plane_cpu(self) -> float:
        """CPU seconds of the controllers process (0 without one, or once it is gone)."""
        try:
            return self.plane.cpu_seconds() if self.plane is not None else 0.0
        except (OSError, IndexError, ValueError):
            return 0.0

    # -- creates ---------------------------------------------------------------------

    def disk_body(self, i: int) -> bytes:
        return orjson.dumps({
            "apiVersion": COMPUTE, "kind": "Disk",
            "metadata": {"name": f"d-{i:0{self.width}d}"},
            "spec": {"diskImage": {"diskImageRef": {"name": self.args.image}},
                     "placement": {"zone": ZONES[i % len(ZONES)]}}})

    def vm_body(self, i: int) -> bytes:
        return orjson.dumps({
            "apiVersion": COMPUTE, "kind": "VirtualMachine",
            "metadata": {"name": f"vm-{i:0{self.width}d}"},
            "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": self.args.size},
                     "diskRefs": [{"name": f"d-{i:0{self.width}d}", "bootFrom": True}]}})

    async def _post(self, conn: Connection, path: str, body: bytes, what: str) -> bool:
        data = self.req("POST", path, body)
        for attempt in range(20):
            status, answer = await conn.request(data)
            if status == 201 or (status == 409 and attempt > 0):
                return True
            if status in RETRY_STATUSES:
                self.seen.retries += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt))
                continue
            break
        key = f"{what} {status}"
        self.seen.create_errors[key] += 1
        if len(self.seen.first_create_errors) < 5:
            self.seen.first_create_errors.append(f"{key}: {answer[:400].decode(errors='replace')}")
        return False

    async def creates(self) -> tuple[float, float]:
        """Disk then VM for each index, closed loop over the pool; (first send, last answer)."""
        a, s = self.args, self.seen
        indices = iter(range(1, a.vms + 1))
        pool = list(await asyncio.gather(*(connect(self.url, self.tls) for _ in range(a.concurrency))))
        first, last = [math.inf], [0.0]

        async def worker(conn: Connection) -> None:
            for i in indices:
                first[0] = min(first[0], time.time())
                s.disk_sent[f"d-{i:0{self.width}d}"] = time.time()
                if not await self._post(conn, self.disks_path, self.disk_body(i), "disk"):
                    continue
                s.disks_created += 1
                name = f"vm-{i:0{self.width}d}"
                s.vm_sent[name] = time.time()
                if await self._post(conn, self.vms_path, self.vm_body(i), "vm"):
                    s.vm_created[name] = time.time()
                last[0] = time.time()

        try:
            await asyncio.gather(*(worker(c) for c in pool))
        finally:
            for conn in pool:
                conn.close()
        return first[0], last[0]

    # -- the measurement -------------------------------------------------------------

    async def open_watches(self) -> list[WatchConnection]:
        """From the revision of a list of the Hosts (which exist already: their next writes
        are told from these revisions)."""
        status, body = await self.call("GET", self.hosts_path)
        if status != 200:
            raise SystemExit(f"list Hosts answered {status}: {body[:300]!r}")
        listed = orjson.loads(body)
        rv = listed["metadata"]["resourceVersion"]
        for host in listed["items"]:
            self.seen.writes.known("Host", host)
        query = f"?watch=true&allowWatchBookmarks=true&resourceVersion={rv}"
        streams = [await open_watch(self.url, self.vms_path + query, self.seen.on_vm, ACCEPT_JSON,
                                    self.tls),
                   await open_watch(self.url, self.vmis_path + query, self.seen.on_vmi,
                                    ACCEPT_JSON, self.tls),
                   await open_watch(self.url, self.disks_path + query, self.seen.on_disk,
                                    ACCEPT_JSON, self.tls),
                   await open_watch(self.url, self.hosts_path + query, self.seen.on_host,
                                    ACCEPT_JSON, self.tls)]
        statuses = await asyncio.wait_for(asyncio.gather(*(w.status for w in streams)), 30)
        if any(st != 200 for st in statuses):
            raise SystemExit(f"watches answered {statuses}")
        self.results["watch_from_resource_version"] = rv
        return streams

    async def run(self) -> None:
        a, s = self.args, self.seen
        await self.ensure_namespace()
        waited = await self.wait_for_hosts(a.hosts_per_zone * len(ZONES))
        self.log(f"  {a.hosts_per_zone * len(ZONES)} hosts Ready after {waited:.1f} s")
        plane_pid = next(iter(children(self.process.pid)), None)
        if plane_pid is not None:
            self.plane = ServerStats(plane_pid)
            self.log(f"  controllers process pid {plane_pid}")
        streams = await self.open_watches()
        await asyncio.sleep(0.2)
        background = [asyncio.create_task(self.sample_memory())]
        cpu0, cpu0_main, client0 = (self.proc.cpu_seconds(), self.proc.cpu_seconds(True),
                                    time.process_time())
        plane0 = self.plane_cpu()
        t0 = time.time()
        background.append(asyncio.create_task(self.progress(t0)))
        creating = asyncio.create_task(self.creates())
        deadline = t0 + a.timeout
        timed_out = False
        watch_ended = ""
        while True:
            await asyncio.sleep(0.05)
            if creating.done() and len(s.running) >= len(s.vm_created):
                break
            if self.process.poll() is not None:
                watch_ended = f"server exited with {self.process.returncode}"
                break
            ended = [w for w in streams if w.ended.done()]
            if ended:
                watch_ended = "a watch stream ended early"
                break
            if time.time() > deadline:
                timed_out = True
                break
        t_end = time.time()
        if not creating.done():
            creating.cancel()
        try:
            first_sent, last_answer = await creating
        except asyncio.CancelledError:
            first_sent, last_answer = t0, t_end
        for task in background:
            task.cancel()
        cpu, cpu_main, client = (self.proc.cpu_seconds(), self.proc.cpu_seconds(True),
                                 time.process_time())
        plane = self.plane_cpu()
        plane_mem: dict[str, int] = {}
        if self.plane is not None:
            with contextlib.suppress(OSError, IndexError, ValueError):
                plane_mem = self.plane.memory()
        mem = self.proc.memory()
        self.rss_peak_kb = max(self.rss_peak_kb, mem.get("VmRSS", 0))
        for w in streams:
            w.close()

        last_running = max(s.running.values(), default=t_end)
        wall = (last_running if not (timed_out or watch_ended) else t_end) - first_sent
        binds = sorted(s.bound.values())
        window = binds[-1] - binds[0] if len(binds) > 1 else math.nan
        to_running = [s.running[n] - s.vm_sent[n] for n in s.running if n in s.vm_sent]
        to_vmi = [s.vmi_added[n] - s.vm_sent[n] for n in s.vmi_added if n in s.vm_sent]
        vmi_to_bound = [s.bound[n] - s.vmi_added[n] for n in s.bound if n in s.vmi_added]
        disk_to_ready = [s.disk_ready[n] - s.disk_sent[n] for n in s.disk_ready
                         if n in s.disk_sent]
        vmi_to_disks_ready = [s.vmi_disks_ready[n] - s.vmi_added[n] for n in s.vmi_disks_ready
                              if n in s.vmi_added]
        startable_to_running = [s.vmi_running[n] - max(s.bound[n], s.vmi_disks_ready[n])
                                for n in s.vmi_running if n in s.bound
                                and n in s.vmi_disks_ready]
        vmi_running_to_vm = [s.running[n] - s.vmi_running[n] for n in s.running
                             if n in s.vmi_running]
        self.results.update({
            "vms_requested": a.vms, "disks_created": s.disks_created,
            "vms_created": len(s.vm_created), "create_errors": dict(s.create_errors),
            "first_create_errors": s.first_create_errors, "create_retries": s.retries,
            "vmis_seen": len(s.vmi_added), "bound": len(s.bound),
            "vmi_running": len(s.vmi_running), "vm_running": len(s.running),
            "timed_out": timed_out, "aborted": watch_ended,
            "wall_s": wall, "create_phase_s": last_answer - first_sent,
            "creates_per_s": (s.disks_created + len(s.vm_created)) / max(1e-9,
                                                                        last_answer - first_sent),
            "placement": {"decisions": len(binds), "window_s": window,
                          "per_s": len(binds) / window if window and window > 0 else math.nan,
                          "first_bind_after_s": binds[0] - first_sent if binds else math.nan,
                          "last_bind_after_s": binds[-1] - first_sent if binds else math.nan,
                          "unschedulable_seen": len(s.unschedulable)},
            "time_to_running": spread(to_running),
            "stages": {"disk_create_to_ready": spread(disk_to_ready),
                       "vm_create_to_vmi": spread(to_vmi), "vmi_to_bound": spread(vmi_to_bound),
                       "vmi_to_disks_ready": spread(vmi_to_disks_ready),
                       "bound_and_disks_ready_to_vmi_running": spread(startable_to_running),
                       "vmi_running_to_vm_running": spread(vmi_running_to_vm)},
            "watch": {"vm_lines": s.vm_lines, "vmi_lines": s.vmi_lines,
                      "disk_lines": s.disk_lines, "disk_mb": s.disk_bytes / 1e6,
                      "vm_mb": s.vm_bytes / 1e6, "vmi_mb": s.vmi_bytes / 1e6,
                      "bookmarks": s.bookmarks, "errors": s.watch_errors[:5]},
            "server": {"cpu_s": cpu - cpu0, "main_thread_cpu_s": cpu_main - cpu0_main,
                       "cpu_util": (cpu - cpu0) / max(1e-9, t_end - t0),
                       "rss_peak_sampled_mib": self.rss_peak_kb / 1024,
                       "vm_hwm_mib": mem.get("VmHWM", 0) / 1024,
                       "rss_end_mib": mem.get("VmRSS", 0) / 1024,
                       "threads": mem.get("Threads", 0)},
            "writes": s.writes.report(len(s.vm_created)),
            "client_cpu_s": client - client0,
            "controllers_process": None if self.plane is None else {
                "pid": self.plane.pid, "alive_at_end": bool(plane_mem),
                "cpu_s": plane - plane0, "cpu_util": (plane - plane0) / max(1e-9, t_end - t0),
                "rss_peak_sampled_mib": self.plane_rss_peak_kb / 1024,
                "vm_hwm_mib": plane_mem.get("VmHWM", 0) / 1024,
                "rss_end_mib": plane_mem.get("VmRSS", 0) / 1024},
            "rss_series": [(round(t - t0, 2), kb, round(c - cpu0, 2))
                           for t, kb, c in self.rss_series[::max(1, len(self.rss_series) // 300)]],
        })
        if timed_out or watch_ended:
            self.results["phases_at_stop"] = dict(Counter(s.vmi_phase.values()))
            self.results["unschedulable_examples"] = list(s.unschedulable.items())[:3]
        await self.verify()

    # -- checks ----------------------------------------------------------------------

    async def _list(self, conn: Connection, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            sep = "&" if "?" in path else "?"
            url = f"{path}{sep}limit=5000" + (f"&continue={cont}" if cont else "")
            status, body = await conn.request(self.req("GET", url, headers=ACCEPT_JSON))
            if status != 200:
                raise RuntimeError(f"GET {url} answered {status}: {body[:300]!r}")
            doc = orjson.loads(body)
            items += doc.get("items") or []
            cont = (doc.get("metadata") or {}).get("continue") or ""
            if not cont:
                return items

    async def count_events(self, conn: Connection, settle: float = 1.0,
                           limit: float = 60.0) -> dict[str, Any]:
        """Events stored once the recorder has caught up (the count still for `settle` s)."""
        path = f"/api/v1/namespaces/{self.args.namespace}/events"
        count, since, deadline = -1, time.time(), time.time() + limit
        events: list[dict[str, Any]] = []
        while time.time() < deadline:
            try:
                events = await self._list(conn, path)
            except RuntimeError:  # a server without events
                return {"stored": 0, "by_kind": {}, "occurrences": 0, "per_vm": 0.0}
            if len(events) != count:
                count, since = len(events), time.time()
            elif time.time() - since >= settle:
                break
            await asyncio.sleep(0.25)
        by_kind = Counter(e["involvedObject"].get("kind", "") for e in events)
        return {"stored": len(events), "by_kind": dict(by_kind),
                "occurrences": sum(e.get("count") or 1 for e in events),
                "per_vm": (by_kind["VirtualMachine"] + by_kind["Disk"]) / max(1, self.args.vms)}

    async def verify(self) -> None:
        if self.process.poll() is not None:
            self.results["checks"] = {"error": "server is gone"}
            return
        conn = await connect(self.url, self.tls)
        try:
            vms = await self._list(conn, self.vms_path)
            vmis = await self._list(conn, self.vmis_path)
            disks = await self._list(conn, self.disks_path)
            self.results["events"] = await self.count_events(conn)
            # The scheduler reports what each host holds at most a second after a change.
            await asyncio.sleep(1.5)
            hosts = await self._list(conn, self.hosts_path)
            status, metrics = await self.call("GET", "/metrics")
            self.results["reconciles"] = reconciles(metrics.decode()) if status == 200 else {}
        finally:
            conn.close()
        checks: dict[str, Any] = {}
        statuses = Counter((vm.get("status") or {}).get("virtualMachineStatus") or "(none)"
                           for vm in vms)
        checks["vms_listed"] = len(vms)
        checks["vm_statuses"] = dict(statuses)
        checks["all_running"] = statuses.get("Running", 0) == len(vms) == self.args.vms

        host_zone = {h["metadata"]["name"]: h["spec"]["zone"] for h in hosts}
        over: list[str] = []
        allocated_where: dict[str, list[str]] = {}
        per_host: dict[str, int] = {}
        for h in hosts:
            cap = h["spec"]["capacity"]
            memory = cap["memory"]
            unit = {"GB": 10 ** 9, "MB": 10 ** 6, "TB": 10 ** 12, "GiB": 2 ** 30,
                    "MiB": 2 ** 20, "TiB": 2 ** 40}.get(memory.get("unit", "GB"), 10 ** 9)
            cap_mem = memory["amount"] * unit
            allocs = (h.get("status") or {}).get("allocations") or []
            vcpu = sum(e.get("vcpu") or 0 for e in allocs)
            mem = sum(e.get("memoryBytes") or 0 for e in allocs)
            name = h["metadata"]["name"]
            per_host[name] = len(allocs)
            if vcpu > cap["vcpu"] or mem > cap_mem:
                over.append(f"{name}: {vcpu}/{cap['vcpu']} vCPU, {mem / 1e9:.0f}/"
                            f"{cap_mem / 1e9:.0f} GB")
            for e in allocs:
                allocated_where.setdefault(e["instance"], []).append(name)
        checks["hosts"] = len(hosts)
        checks["overcommitted_hosts"] = over
        checks["no_overcommit"] = not over
        counts = sorted(per_host.values())
        checks["instances_per_host_min_max"] = [counts[0], counts[-1]] if counts else []
        checks["instances_per_zone"] = dict(Counter(host_zone[h] for h, n in per_host.items()
                                                    for _ in range(n)))

        ns = self.args.namespace
        disk_zone = {d["metadata"]["name"]: ((d.get("spec") or {}).get("placement") or {})
                     .get("zone") for d in disks}
        double = [i for i, where in allocated_where.items() if len(where) > 1]
        missing_alloc, wrong_zone, unbound = [], [], 0
        for vmi in vmis:
            name, host = vmi["metadata"]["name"], (vmi.get("spec") or {}).get("host")
            if not host:
                unbound += 1
                continue
            if host not in allocated_where.get(f"{ns}/{name}", []):
                missing_alloc.append(f"{ns}/{name} on {host}")
            boot = ((vmi.get("spec") or {}).get("disks") or [{}])[0].get("name")
            if disk_zone.get(boot) and host_zone.get(host) != disk_zone[boot]:
                wrong_zone.append(f"{name}: host {host} ({host_zone.get(host)}), disk {boot} "
                                  f"({disk_zone[boot]})")
        bound_names = {f"{ns}/{v['metadata']['name']}" for v in vmis if (v.get("spec") or {})
                       .get("host")}
        orphans = [i for i in allocated_where if i not in bound_names]
        checks["vmis_listed"] = len(vmis)
        checks["vmis_unbound"] = unbound
        checks["allocations"] = sum(len(w) for w in allocated_where.values())
        checks["instances_allocated_twice"] = double[:5]
        checks["bound_without_allocation"] = missing_alloc[:5]
        checks["allocations_without_binding"] = orphans[:5]
        checks["allocations_consistent"] = not (double or missing_alloc or orphans)
        checks["wrong_zone"] = wrong_zone[:5]
        checks["zones_consistent"] = not wrong_zone

        subnets = {z: ipaddress.IPv4Network(c) for z, c in fleet_config(self.args)["subnets"]
                   .items()}
        ips: Counter[str] = Counter()
        without_ip, outside = 0, []
        for vm in vms:
            status = vm.get("status") or {}
            ip = (status.get("networking") or {}).get("privateIPv4Address")
            if not ip:
                without_ip += 1
                continue
            ips[ip] += 1
            zone = (status.get("placement") or {}).get("zone")
            if zone in subnets and ipaddress.IPv4Address(ip) not in subnets[zone]:
                outside.append(f"{vm['metadata']['name']}: {ip} not in {zone} {subnets[zone]}")
        dupes = [f"{ip} x{n}" for ip, n in ips.items() if n > 1]
        checks["private_ips"] = len(ips)
        checks["vms_without_private_ip"] = without_ip
        checks["duplicate_private_ips"] = dupes[:5]
        checks["ips_outside_zone_subnet"] = outside[:5]
        checks["ips_unique"] = not dupes and without_ip == 0 and not outside
        self.results["checks"] = checks


# ---- reporting -------------------------------------------------------------------------

def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    def ms(x: float) -> str:
        return "n/a" if math.isnan(x) else f"{x * 1000:,.0f} ms"

    p, t, srv, c = r["placement"], r["time_to_running"], r["server"], r.get("checks", {})
    rss = max(srv["rss_peak_sampled_mib"], srv["vm_hwm_mib"])
    done = r["vm_running"] == args.vms and not r["timed_out"] and not r["aborted"]
    why = "timeout" if r["timed_out"] else r["aborted"] or "not all Running"
    lines = [
        f"fleet: {args.hosts_per_zone * 3} hosts ({args.hosts_per_zone}/zone x "
        f"{args.host_vcpu} vCPU / {args.host_memory_gb} GB), {args.vms} x {args.size} VMs "
        f"with a boot disk, {args.concurrency} connections, controllers {args.controllers}",
        "",
        f"wall time, first create -> last VM Running  {r['wall_s']:8.1f} s   target <= "
        f"{TARGET_WALL_S:.0f} s: {'met' if done and r['wall_s'] <= TARGET_WALL_S else 'NOT MET'}"
        + ("" if done else f"  (stopped: {why})"),
        f"server peak RSS (max of sampled VmRSS, VmHWM) {rss:8.0f} MiB target <= "
        f"{TARGET_RSS_MIB:.0f} MiB: {'met' if rss <= TARGET_RSS_MIB else 'NOT MET'}",
        f"placement decisions/s (first -> last bind)   {p['per_s']:8.0f} /s  "
        f"({p['decisions']} binds in {p['window_s']:.1f} s; first bind {p['first_bind_after_s']:.1f} s, "
        f"last {p['last_bind_after_s']:.1f} s after the first create)",
        f"creates (disk + VM POSTs)                    {r['creates_per_s']:8.0f} /s  "
        f"({r['disks_created']} disks + {r['vms_created']} VMs in {r['create_phase_s']:.1f} s; "
        f"errors {r['create_errors'] or 'none'}, {r['create_retries']} retries)",
        f"time to Running (VM POST -> Running event)   p50 {ms(t['p50_s'])}, p90 {ms(t['p90_s'])}, "
        f"p99 {ms(t['p99_s'])}, max {ms(t['max_s'])} ({t['count']} VMs)",
    ]
    for name, st in r["stages"].items():
        lines.append(f"  stage {name:<36} p50 {ms(st['p50_s'])}, p99 {ms(st['p99_s'])}, "
                     f"max {ms(st['max_s'])}")
    lines += [
        f"server CPU {srv['cpu_s']:.1f} s ({srv['cpu_util']:.0%} of a core; event-loop thread "
        f"{srv['main_thread_cpu_s']:.1f} s), client CPU {r['client_cpu_s']:.1f} s; RSS at end "
        f"{srv['rss_end_mib']:.0f} MiB",
    ]
    if r.get("controllers_process"):
        cp = r["controllers_process"]
        lines.append(
            f"controllers process (pid {cp['pid']}) CPU {cp['cpu_s']:.1f} s ({cp['cpu_util']:.0%} "
            f"of a core); peak RSS {max(cp['rss_peak_sampled_mib'], cp['vm_hwm_mib']):.0f} MiB; "
            f"server + controllers CPU {srv['cpu_s'] + cp['cpu_s']:.1f} s"
            + ("" if cp["alive_at_end"] else " (it exited during the run)"))
    lines += [
        f"watch traffic: {r['watch']['vm_lines']} VM events ({r['watch']['vm_mb']:.0f} MB), "
        f"{r['watch']['vmi_lines']} VMI events ({r['watch']['vmi_mb']:.0f} MB), "
        f"{r['watch']['disk_lines']} Disk events ({r['watch']['disk_mb']:.0f} MB) = "
        f"{r['watch']['vm_lines'] / max(1, r['vms_created']):.1f} + "
        f"{r['watch']['vmi_lines'] / max(1, r['vms_created']):.1f} + "
        f"{r['watch']['disk_lines'] / max(1, r['vms_created']):.1f} per VM",
    ]
    w = r["writes"]
    per_vm = sum(n for k, n in w["per_kind"].items() if k != "Host")
    lines.append(f"stored writes per VM (revisions seen on the watches): {per_vm:.2f} = "
                 + " + ".join(f"{n:.2f} {k}" for k, n in w["per_kind"].items() if k != "Host")
                 + f"; Host (the scheduler's reports of what each holds, per VM) "
                   f"{w['per_kind'].get('Host', 0.0):.2f}; events counted apart below")
    for row in w["by_writer"]:
        lines.append(f"  {row['per_vm']:5.2f} per VM  {row['kind']:<23} by {row['writer']:<28} "
                     f"changed {row['changed']}")
    if "events" in r:
        e = r["events"]
        lines.append(f"events stored: {e['stored']} ({e['per_vm']:.1f} per VM with its disk; "
                     f"{e['occurrences']} occurrences; by kind {e['by_kind']})")
    if r.get("reconciles"):
        vms = max(1, r["vms_created"])
        lines.append("reconciles per VM: " + ", ".join(
            f"{name} {count / vms:.2f}" for name, count in sorted(r["reconciles"].items())
            if count))
    if r["watch"]["errors"]:
        lines.append(f"watch errors: {r['watch']['errors']}")
    if r["first_create_errors"]:
        lines.append(f"first create errors: {r['first_create_errors']}")
    if "phases_at_stop" in r:
        lines.append(f"VMI phases when stopped: {r['phases_at_stop']}; unschedulable examples: "
                     f"{r['unschedulable_examples']}")
    if "error" in c:
        lines.append(f"checks: {c['error']}")
    elif c:
        ok = lambda b: "ok" if b else "FAILED"  # noqa: E731
        lines += [
            "",
            f"check: every VM Running: {ok(c['all_running'])} ({c['vm_statuses']}, "
            f"{c['vms_listed']} listed)",
            f"check: no host over-committed: {ok(c['no_overcommit'])} ({c['hosts']} hosts, "
            f"{c['allocations']} allocations, instances per host min/max "
            f"{c['instances_per_host_min_max']}, per zone {c['instances_per_zone']})"
            + (f" {c['overcommitted_hosts'][:5]}" if c["overcommitted_hosts"] else ""),
            f"check: allocations match bindings: {ok(c['allocations_consistent'])} "
            f"({c['vmis_listed']} VMIs, {c['vmis_unbound']} unbound"
            + "".join(f"; {k}: {c[k]}" for k in ("instances_allocated_twice",
                                                   "bound_without_allocation",
                                                   "allocations_without_binding") if c[k]) + ")",
            f"check: every instance in its disk's zone: {ok(c['zones_consistent'])}"
            + (f" {c['wrong_zone']}" if c["wrong_zone"] else ""),
            f"check: private IPs present, unique, in the zone's subnet: {ok(c['ips_unique'])} "
            f"({c['private_ips']} addresses, {c['vms_without_private_ip']} VMs without"
            + (f", duplicates {c['duplicate_private_ips']}" if c["duplicate_private_ips"] else "")
            + (f", outside {c['ips_outside_zone_subnet']}" if c["ips_outside_zone_subnet"] else "")
            + ")",
        ]
    return "\n".join(lines)


def run_loop(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def find_py_spy(explicit: str) -> str | None:
    for candidate in (explicit, str(Path(sys.executable).parent / "py-spy"),
                      shutil.which("py-spy") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10_000, help="VMs (each with a boot disk)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="keep-alive connections creating disks and VMs")
    parser.add_argument("--size", default="test.xs", help="VMVirtualResources of every VM")
    parser.add_argument("--image", default="ubuntu-minimal.24-04.1", help="boot disk image")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--hosts-per-zone", type=int, default=30)
    parser.add_argument("--host-vcpu", type=int, default=128)
    parser.add_argument("--host-memory-gb", type=int, default=1024)
    parser.add_argument("--subnet-prefix", type=int, default=16,
                        help="prefix length of each zone's private subnet (the server's default "
                             "/24 holds 253 VMs per zone)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up this many seconds after the first create")
    parser.add_argument("--sample-interval", type=float, default=0.25,
                        help="seconds between samples of the server's RSS")
    parser.add_argument("--progress-interval", type=float, default=5.0)
    parser.add_argument("--controllers", choices=("process", "in-process"), default="process",
                        help="where serve runs its control plane (default %(default)s: a child "
                             "process, on the other core)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="an extra argument for `evroc-compute serve` (repeatable)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the server with py-spy from the first create to the end "
                             "(raw collapsed stacks in DIR) and print a summary")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    parser.add_argument("--py-spy", default="", help="path of the py-spy binary")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (data dir, fleet file, server log)")
    parser.add_argument("--results-dir", type=Path, default=BENCH / "results")
    parser.add_argument("--postgres", action="store_true",
                        help="keep the server's objects in a fresh PostgreSQL database "
                             "(EVROC_TEST_POSTGRES or postgresql://postgres@127.0.0.1:5432)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.postgres:
        return run(args)
    from tests import postgres  # a fresh database on the machine's PostgreSQL, dropped after

    with postgres.database() as url:
        args.server_arg += ["--store", url]
        return run(args)


def run(args: argparse.Namespace) -> int:
    started = dt.datetime.now(dt.timezone.utc)
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    calibration = calibration_seconds()
    tmp = Path(tempfile.mkdtemp(prefix="evroc-fleet-bench-"))
    fleet_path = tmp / "fleet.yaml"
    fleet_path.write_text(yaml.safe_dump(fleet_config(args), sort_keys=False))
    server = start_server(tmp / "data", "--fleet", str(fleet_path), "--controllers",
                          args.controllers, *args.server_arg)
    process, url, log_path = server.process, server.url, server.log_path
    print(f"server pid {process.pid} at {url}; data, fleet file and log in {tmp}",
          file=sys.stderr, flush=True)
    proc = ServerStats(process.pid)
    bench = FleetBench(args, server, proc)
    spy: subprocess.Popen[bytes] | None = None
    profile_path: Path | None = None
    try:
        if args.profile is not None:
            binary = find_py_spy(args.py_spy)
            if binary is None:
                print("py-spy not found (pip install py-spy, or --py-spy PATH); no profile",
                      file=sys.stderr)
            else:
                args.profile.mkdir(parents=True, exist_ok=True)
                profile_path = args.profile / "profile-fleet.txt"
                spy = subprocess.Popen(
                    [binary, "record", "--pid", str(process.pid), "--rate",
                     str(args.profile_rate), "--format", "raw", "--threads", "--nonblocking",
                     "--output", str(profile_path)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(0.5)
        run_loop(bench.run())
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        server.stop()
    problems, levels = log_problems(log_path)
    r = bench.results
    r["server_log"] = {"path": str(log_path), "levels": dict(levels), "first_distinct": problems}
    print()
    print(render(r, args))
    print(f"machine speed: the calibration task (bench/calibrate.py) took {calibration:.2f} s of "
          "CPU (lower is faster; figures of different hours compare through it)")
    print()
    if problems:
        print(f"server log ({log_path}): {dict(levels)}; first distinct records:")
        for p in problems:
            print(f"  [{p['count']}x] {p['line'][:400]}")
            if p["exception"]:
                print(f"         -> {p['exception'][:400]}")
    else:
        print(f"server log: no warnings or errors ({dict(levels) or 'clean'})")
    if profile_path is not None and profile_path.exists():
        from profile_report import report
        print()
        print(report(profile_path, top=20, thread="MainThread"))
    report_doc = {"started": started.isoformat(), "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "calibration_s": round(calibration, 3)},
        "loadavg_at_start": loadavg,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {"wall_s": TARGET_WALL_S, "rss_mib": TARGET_RSS_MIB}, "results": r,
        "profile": str(profile_path) if profile_path else None}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"fleet-{started.strftime('%Y%m%dT%H%M%SZ')}-{args.vms}.json"
    out.write_text(json.dumps(report_doc, indent=2, default=str) + "\n")
    print(f"results in {out}")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    c = r.get("checks", {})
    ok = (r["vm_running"] == args.vms and c.get("all_running") and c.get("no_overcommit")
          and c.get("ips_unique") and c.get("allocations_consistent"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
