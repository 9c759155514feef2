"""The HA benchmark: creates/s and gets/s through 1, 2 and 3 API servers on one PostgreSQL
database, and through one server on SQLite beside them; 64 keep-alive connections spread
round-robin over the servers (as a load balancer would), short closed-loop runs. Then watch
lag over HTTP: creates paced on one server, watched on the same server or on another one.

    .venv/bin/python bench/ha.py [--seconds 5] [--postgres postgresql://postgres@127.0.0.1:5432]

Client, servers and PostgreSQL share the machine: on a small one the figures are bounded by
its cores, not by the design; read them as lower bounds and compare the columns.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from httpclient import Connection, open_watch, request_bytes  # noqa: E402
from run import (  # noqa: E402
    COLLECTION,
    JSON_HEADERS,
    SENT_ANNOTATION,
    LoadResult,
    close_pool,
    closed_loop,
    open_pool,
    summarise,
    vm_body,
)
from tests import postgres  # noqa: E402
from tests.conftest import Server, start_server  # noqa: E402

CONNECTIONS = 64
LEASES = "/apis/infra.evroc-compute.io/v1alpha1/leases"
WATCHERS = 10
WATCHED_WRITES_PER_S = 100


async def measure(servers: list[Server], seconds: float) -> dict[str, str]:
    pools = [await open_pool(s.url, CONNECTIONS // len(servers), s.tls()) for s in servers]
    pool = [conn for group in zip(*pools, strict=True) for conn in group]
    hosts = [urlsplit(s.url).netloc for s in servers]
    made: list[int] = []

    def create(i: int) -> bytes:
        return request_bytes("POST", COLLECTION, hosts[i % len(hosts)], vm_body(f"vm-{i}"),
                             JSON_HEADERS)

    def get(i: int) -> bytes:
        return request_bytes("GET", f"{COLLECTION}/vm-{made[i % len(made)]}",
                             hosts[i % len(hosts)], headers=JSON_HEADERS)

    creates = await closed_loop(pool, create, seconds, (201,), made.append)
    gets = await closed_loop(pool, get, seconds, (200,))
    for group in pools:
        close_pool(group)

    def line(result: LoadResult) -> str:
        p = summarise(result.latencies)
        errors = f", errors {result.errors}" if result.errors else ""
        return f"{result.rate:,.0f}/s (p50 {p['p50_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms){errors}"
    return {"creates": line(creates), "gets": line(gets)}


async def watch_lag(writer: Server, reader: Server, seconds: float) -> str:
    """Delay from sending a create to `writer` to its ADDED event on `reader`'s watches."""
    delays: list[float] = []
    marker = SENT_ANNOTATION.encode()

    def on_line(line: bytes, arrived_ns: int) -> None:
        if marker in line:
            event = orjson.loads(line)
            sent = event["object"]["metadata"]["annotations"][SENT_ANNOTATION]
            delays.append((arrived_ns - int(sent)) / 1e9)

    pool = await open_pool(writer.url, 8, writer.tls())
    host = urlsplit(writer.url).netloc
    status, body = await pool[0].request(request_bytes("GET", LEASES, host,
                                                       headers=JSON_HEADERS))
    assert status == 200, status
    version = orjson.loads(body)["metadata"]["resourceVersion"]
    path = f"{LEASES}?watch=true&resourceVersion={version}&allowWatchBookmarks=false"
    streams = await asyncio.gather(*(open_watch(reader.url, path, on_line, JSON_HEADERS,
                                                reader.tls()) for _ in range(WATCHERS)))
    assert {await stream.status for stream in streams} == {200}
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in pool:
        idle.put_nowait(conn)
    failed = 0
    prefix = f"lag-{time.time_ns()}"

    async def create(i: int) -> None:
        nonlocal failed
        conn = await idle.get()
        lease = {"apiVersion": "infra.evroc-compute.io/v1alpha1", "kind": "Lease",
                 "metadata": {"name": f"{prefix}-{i}",
                              "annotations": {SENT_ANNOTATION: str(time.time_ns())}},
                 "spec": {"holderIdentity": "bench"}}
        answer, _ = await conn.request(
            request_bytes("POST", LEASES, host, orjson.dumps(lease), JSON_HEADERS))
        idle.put_nowait(conn)
        failed += answer != 201

    total = int(seconds * WATCHED_WRITES_PER_S)
    start = time.perf_counter()
    tasks = []
    for i in range(total):
        await asyncio.sleep(max(0.0, start + i / WATCHED_WRITES_PER_S - time.perf_counter()))
        tasks.append(asyncio.create_task(create(i)))
    await asyncio.gather(*tasks)
    expected = (total - failed) * WATCHERS
    deadline = time.perf_counter() + 10
    while len(delays) < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    for stream in streams:
        stream.close()
    close_pool(pool)
    p = summarise(delays)
    return (f"{len(delays):,}/{expected:,} events, p50 {p['p50_ms']:.1f} ms, "
            f"p99 {p['p99_ms']:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows: dict[str, dict[str, str]] = {}
        lags: dict[str, str] = {}
        one = start_server(Path(tmp) / "sqlite")
        try:
            rows["SQLite, 1 server"] = asyncio.run(measure([one], args.seconds))
            lags["SQLite, one server"] = asyncio.run(watch_lag(one, one, args.seconds))
        finally:
            one.stop()
        for n in (1, 2, 3):
            with postgres.database() as url:
                fleet = [start_server(Path(tmp) / f"pg{n}-{i}", "--store", url,
                                      pki_dir=Path(tmp) / f"pki-{n}") for i in range(n)]
                try:
                    rows[f"PostgreSQL, {n} server{'s' if n > 1 else ''}"] = asyncio.run(
                        measure(fleet, args.seconds))
                    if n == 2:
                        lags["PostgreSQL, the same server"] = asyncio.run(
                            watch_lag(fleet[0], fleet[0], args.seconds))
                        lags["PostgreSQL, another server"] = asyncio.run(
                            watch_lag(fleet[0], fleet[1], args.seconds))
                finally:
                    for server in fleet:
                        server.stop()
        print("| store | VM creates/s | VM gets/s |\n|---|---|---|")
        for name, row in rows.items():
            print(f"| {name} | {row['creates']} | {row['gets']} |")
        print(f"\n| watched on ({WATCHERS} watches, {WATCHED_WRITES_PER_S} creates/s) "
              "| create -> ADDED event |\n|---|---|")
        for name, lag in lags.items():
            print(f"| {name} | {lag} |")


if __name__ == "__main__":
    main()
