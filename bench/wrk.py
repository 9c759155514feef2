"""The API under wrk, beside moto's EC2 server (`make bench` runs it after bench/run.py).

wrk (a load generator in C: the client does not eat the server's core the way a Python one
does) drives, with the same settings for each server, one after the other in one run:

- **ours over HTTPS** (the default serving mode: TLS, the admin's bearer token from the PKI,
  authentication and RBAC on every request), API only: no controllers, no simulated fleet,
  as bench/run.py's API phases;
- **ours over HTTP** (`--insecure-http`, the same token, the same checks): TLS's share apart,
  and like with like against moto, which serves plain HTTP;
- **moto's EC2 server** (`moto_server`, the `bench` extra), the peer a developer would use
  instead: no authentication (it takes any SigV4-shaped Authorization header; only its
  credential scope is read, to route to EC2), and one TCP connection per request, since its
  HTTP server (werkzeug's) closes every connection after the response.

Per server: a 1 s warm-up of creates, then `--seconds` of creates (VirtualMachine POSTs with
unique names into one namespace; moto: RunInstances of one instance), a check through the API
that everything answered 2xx is stored, then `--seconds` of gets of one object (moto:
DescribeInstances of one instance id). Prints requests/s, latency p50/p99, non-2xx and the
ratios ours / moto; writes bench/results/wrk-<timestamp>.json.

    .venv/bin/python bench/wrk.py                     # all three, 5 s per phase
    .venv/bin/python bench/wrk.py --seconds 3 --targets https,moto

LIST of 10,000 VMs is bench/run.py's (not repeated here). Other processes on the machine skew
every figure: the table says how much CPU they took during each phase.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import COLLECTION, Phase, ServerStats, vm_body, wait_quiet  # noqa: E402
from wrkresult import (  # noqa: E402
    EC2_NS,
    WrkResult,
    created_in_metrics,
    ec2_instance_ids,
    parse_wrk,
    ratio,
    stored_check,
)

from conftest import free_port, start_server  # noqa: E402

LUA = BENCH / "wrk.lua"
EC2_VERSION = "2016-11-15"
EC2_AMI = "ami-12c6146b"  # one of moto's default images
# moto reads only the credential scope (…/<region>/<service>/aws4_request) to route the request
# to EC2; it checks no signature unless its IAM emulation is switched on.
EC2_HEADERS = (("Content-Type", "application/x-www-form-urlencoded"),
               ("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/"
                                 "aws4_request, SignedHeaders=host, Signature=0"))
TARGETS = ("https", "http", "moto")
LABELS = {"https": "ours HTTPS", "http": "ours HTTP", "moto": "moto HTTP"}


# ---- running wrk ------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: str = ""  # every "{n}" becomes a per-request unique "<thread>-<count>"


def run_wrk(request: Request, seconds: float, threads: int, connections: int,
            tag: str = "") -> tuple[WrkResult, float]:
    """wrk's result and the CPU seconds wrk used; `tag` goes before each unique "{n}" (runs
    of one body with different tags make distinct names)."""
    body = request.body.replace("{n}", f"{tag}{{n}}")
    env = {**os.environ, "WRK_METHOD": request.method, "WRK_BODY": body,
           "WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in request.headers)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
         "-s", str(LUA), request.url], env=env, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"wrk exited {done.returncode}: {done.stderr}{done.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_wrk(done.stdout), cpu


# ---- the servers ------------------------------------------------------------------------

@dataclass
class Target:
    """One server under test: how to create, how to count what is stored, what to get."""

    name: str
    pid: int
    create: Request
    count: Callable[[], int]
    get: Callable[[], Request]  # called after the creates: the object to get exists then
    served_creates: Callable[[], int] | None = None  # the server's own count, if it has one


def _fetch(url: str, headers: dict[str, str], body: bytes | None = None,
           context: ssl.SSLContext | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=120, context=context) as response:
        return bytes(response.read())


@contextmanager
def ours(tmp: Path, insecure_http: bool) -> Iterator[Target]:
    """Our server, API only (no controllers, no fleet), with bench/run.py's per-user limit
    (one user drives every connection here)."""
    extra = ["--max-requests-per-user", "1000", *(["--insecure-http"] if insecure_http else [])]
    server = start_server(tmp / ("data-http" if insecure_http else "data-https"), *extra)
    try:
        token = (server.pki_dir / "admin.token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        context = None if insecure_http else ssl.create_default_context(cafile=str(server.ca))
        collection = server.url + COLLECTION

        def names() -> list[str]:
            items = json.loads(_fetch(collection, auth, context=context))["items"]
            return [item["metadata"]["name"] for item in items]

        def get() -> Request:
            return Request("GET", f"{collection}/{names()[0]}", tuple(auth.items()))

        def served() -> int:
            return created_in_metrics(_fetch(server.url + "/metrics", auth,
                                             context=context).decode())

        headers = (*auth.items(), ("Content-Type", "application/json"))
        yield Target(LABELS["http" if insecure_http else "https"], server.process.pid,
                     Request("POST", collection, headers, vm_body("wrk-{n}").decode()),
                     lambda: len(names()), get, served)
    finally:
        server.stop()


def _ec2(url: str, form: str) -> ET.Element:
    return ET.fromstring(_fetch(url, dict(EC2_HEADERS), form.encode()))


@contextmanager
def moto(tmp: Path) -> Iterator[Target]:
    """`moto_server` as a developer starts it (its request log goes to a file here)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp / "moto.log"
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        raise SystemExit(f"{binary} not found: moto is in the `bench` extra (`make bench` "
                         "installs it, or: pip install -e '.[bench]')")
    with open(log, "ab") as out:
        process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"moto_server exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto_server did not start listening in 30 s") from None
                time.sleep(0.1)
        run = f"Action=RunInstances&ImageId={EC2_AMI}&MinCount=1&MaxCount=1&Version={EC2_VERSION}"

        def ids() -> list[str]:
            """Every instance id, following DescribeInstances' pages."""
            out: list[str] = []
            token = ""
            while True:
                page = _ec2(url, f"Action=DescribeInstances&MaxResults=1000&Version={EC2_VERSION}"
                                 + (f"&NextToken={token}" if token else ""))
                out += ec2_instance_ids(page)
                token = page.findtext(f"{EC2_NS}nextToken") or ""
                if not token:
                    return out

        def get() -> Request:
            first = ids()[0]
            return Request("POST", url, EC2_HEADERS, f"Action=DescribeInstances&InstanceId.1={first}"
                                                     f"&Version={EC2_VERSION}")

        yield Target(LABELS["moto"], process.pid, Request("POST", url, EC2_HEADERS, run),
                     lambda: len(ids()), get)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- phases -----------------------------------------------------------------------------

@dataclass
class PhaseResult:
    rate_per_s: float
    requests: int
    ok: int
    non_2xx: int
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    server_cpu_util: float
    wrk_cpu_util: float
    other_cpu_util: float  # busy CPU neither the server nor wrk (nor this script) used
    extra: dict[str, Any] = field(default_factory=dict)


def measure(target: Target, request: Request, args: argparse.Namespace, tag: str) -> PhaseResult:
    stats = ServerStats(target.pid)
    with Phase(stats) as phase:
        result, wrk_cpu = run_wrk(request, args.seconds, args.threads, args.connections, tag)
    load = phase.as_dict()
    wrk_util = wrk_cpu / phase.wall
    return PhaseResult(result.rate, result.requests, result.ok, result.non_2xx, result.statuses,
                       result.socket_errors, result.latency_ms, load["server_cpu_util"],
                       wrk_util, max(0.0, load["other_cpu_util"] - wrk_util))


def settled(count: Callable[[], int]) -> int:
    """The count once two readings 0.3 s apart agree: the requests wrk left in flight when it
    stopped are still being served for a moment after it exits."""
    last = count()
    for _ in range(30):
        time.sleep(0.3)
        now = count()
        if now == last:
            return now
        last = now
    raise SystemExit("the stored count did not settle in 10 s")


def bench(target: Target, args: argparse.Namespace) -> dict[str, PhaseResult]:
    def log(message: str) -> None:
        print(f"[{target.name}] {message}", file=sys.stderr, flush=True)

    run_wrk(target.create, 1, args.threads, args.connections, "w")  # warm-up, not measured
    stored0 = settled(target.count)
    served0 = target.served_creates() if target.served_creates else 0
    create = measure(target, target.create, args, "c")
    stored = settled(target.count) - stored0
    problem = stored_check(stored, create.ok, args.connections)
    create.extra = {"stored": stored, "in_flight_at_stop": stored - create.ok,
                    "check": problem or "ok"}
    if target.served_creates:
        served = target.served_creates() - served0
        create.extra["server_201s"] = served
        if served != stored:
            problem += f"; the server answered 201 {served} times, {stored} stored"
    log(f"creates {create.rate_per_s:,.0f}/s, {create.ok} 2xx, {create.non_2xx} non-2xx, "
        f"{stored} stored: {problem or 'all 2xx stored'}")
    if problem:
        raise SystemExit(f"[{target.name}] stored objects do not match the answers: {problem}")
    get = measure(target, target.get(), args, "")
    get.extra = {"objects_stored": stored0 + stored}
    log(f"gets {get.rate_per_s:,.0f}/s over {stored0 + stored} stored objects, "
        f"{get.non_2xx} non-2xx")
    return {"create": create, "get": get}


# ---- reporting --------------------------------------------------------------------------

def _cpu_per_request_us(r: PhaseResult) -> float:
    return r.server_cpu_util / r.rate_per_s * 1e6 if r.rate_per_s else float("nan")


# (label, the cell, the number whose ratio ours / moto is shown, if any)
ROWS: tuple[tuple[str, Callable[[PhaseResult], str], Callable[[PhaseResult], float] | None], ...] = (
    ("/s", lambda r: f"{r.rate_per_s:,.0f}", lambda r: r.rate_per_s),
    ("p50 ms", lambda r: f"{r.latency_ms['p50']:.1f}", None),
    ("p99 ms", lambda r: f"{r.latency_ms['p99']:.1f}", None),
    ("server CPU us/request", lambda r: f"{_cpu_per_request_us(r):,.0f}", _cpu_per_request_us),
    ("non-2xx / socket errors", lambda r: f"{r.non_2xx} / {sum(r.socket_errors.values())}", None),
    ("load", lambda r: f"srv {r.server_cpu_util:.0%} wrk {r.wrk_cpu_util:.0%} "
                       f"oth {r.other_cpu_util:.0%}", None),
)


def _times(value: float) -> str:
    """A ratio as '12.5x', or as '1/31' when below one."""
    return f"1/{1 / value:,.0f}" if 0 < value < 1 else f"{value:,.3g}x"


def table(results: dict[str, dict[str, PhaseResult]]) -> str:
    """Rows of figures, a column per server, then the ratios ours / moto."""
    names = list(results)
    peer = results.get(LABELS["moto"])
    ours_names = [n for n in names if n != LABELS["moto"]] if peer else []
    rows: list[list[str]] = [["", *names, *(f"{n} / moto" for n in ours_names)]]
    for phase, what in (("create", "creates"), ("get", "gets")):
        for label, cell, number in ROWS:
            ratios = [_times(ratio(number(results[n][phase]), number(peer[phase])))
                      if number and peer else "" for n in ours_names]
            rows.append([f"{what} {label}", *(cell(results[n][phase]) for n in names), *ratios])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                     for i, c in enumerate(r)).rstrip() for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk's -d for each phase")
    parser.add_argument("--threads", type=int, default=2, help="wrk's -t")
    parser.add_argument("--connections", type=int, default=64, help="wrk's -c")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"which servers, in order (of {', '.join(TARGETS)})")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the machine to be nearly idle")
    parser.add_argument("--results-dir", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)} (of {', '.join(TARGETS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    started = dt.datetime.now(dt.timezone.utc)
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    results: dict[str, dict[str, PhaseResult]] = {}
    with tempfile.TemporaryDirectory(prefix="evroc-wrk-") as directory:
        tmp = Path(directory)
        for name in args.targets:
            server = moto(tmp) if name == "moto" else ours(tmp, insecure_http=name == "http")
            with server as target:
                results[target.name] = bench(target, args)
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds:g}s per phase; "
          f"load average at start {' '.join(loadavg)} ({os.cpu_count()} cores)")
    print(table(results))
    print("load: share of one core used by the server (srv), by wrk, and by other processes "
          "(oth) during the phase")
    out = args.results_dir / f"wrk-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "started": started.isoformat(), "loadavg_at_start": loadavg,
        "wrk": {"threads": args.threads, "connections": args.connections,
                "seconds": args.seconds},
        "results": {n: {p: asdict(r) for p, r in phases.items()} for n, phases in results.items()},
    }, indent=2) + "\n")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
