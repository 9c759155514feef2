"""The HA benchmark: creates/s and gets/s through 1, 2 and 3 API servers on one PostgreSQL
database, and through one server on SQLite beside them; 64 keep-alive connections spread
round-robin over the servers (as a load balancer would), short closed-loop runs.

    .venv/bin/python bench/ha.py [--seconds 5] [--postgres postgresql://postgres@127.0.0.1:5432]

Client, servers and PostgreSQL share the machine: on a small one the figures are bounded by
its cores, not by the design; read them as lower bounds and compare the columns.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from httpclient import request_bytes  # noqa: E402
from run import (  # noqa: E402
    COLLECTION,
    JSON_HEADERS,
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


async def measure(servers: list[Server], seconds: float) -> dict[str, str]:
    pools = [await open_pool(s.url, CONNECTIONS // len(servers)) for s in servers]
    pool = [conn for group in zip(*pools, strict=True) for conn in group]
    hosts = [s.url.removeprefix("http://") for s in servers]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows: dict[str, dict[str, str]] = {}
        one = start_server(Path(tmp) / "sqlite")
        try:
            rows["SQLite, 1 server"] = asyncio.run(measure([one], args.seconds))
        finally:
            one.stop()
        for n in (1, 2, 3):
            with postgres.database() as url:
                fleet = [start_server(Path(tmp) / f"pg{n}-{i}", "--store", url)
                         for i in range(n)]
                try:
                    rows[f"PostgreSQL, {n} server{'s' if n > 1 else ''}"] = asyncio.run(
                        measure(fleet, args.seconds))
                finally:
                    for server in fleet:
                        server.stop()
        print("| store | VM creates/s | VM gets/s |\n|---|---|---|")
        for name, row in rows.items():
            print(f"| {name} | {row['creates']} | {row['gets']} |")


if __name__ == "__main__":
    main()
