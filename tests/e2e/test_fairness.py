"""One user's flood of requests is refused beyond that user's share (429 with Retry-After),
and another user's requests are all answered meanwhile, without waiting behind the flood."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.client import vm, vm_path
from tests.conftest import Server, start_server
from tests.e2e.users import Session, issue_token

pytestmark = pytest.mark.slow  # a load test: ~10 s of both cores

LIMIT = 8  # requests one user may have in flight
FLOODERS = 48  # concurrent connections of the flooding user
FLOOD_SECONDS = 4.0


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", "--max-requests-per-user", str(LIMIT))
    yield srv
    srv.stop()


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]


def probe(session: Session, seconds: float, prefix: str) -> tuple[list[float], Counter[int]]:
    """Bob's work, one request at a time: create a VM, read it back. Latencies and statuses."""
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        for method, path, body in (("POST", vm_path(), vm(f"{prefix}-{n}")),
                                   ("GET", vm_path(name=f"{prefix}-{n}"), None)):
            started = time.perf_counter()
            code, _, _ = session.request(method, path, body)
            latencies.append(time.perf_counter() - started)
            codes[code] += 1
        n += 1
    return latencies, codes


def test_a_flooding_user_gets_429s_and_another_users_requests_all_succeed(
        limited: Server) -> None:
    token, _ = issue_token(limited, "bob", "system:masters")
    bob = Session(limited, token)
    baseline, baseline_codes = probe(bob, 1.5, "calm")

    stop = threading.Event()
    flood_codes: Counter[int] = Counter()
    retry_after: set[str] = set()
    refusals: list[dict[str, object]] = []
    lock = threading.Lock()

    def flood(worker: int) -> None:  # the admin, creating as fast as the server answers
        session, n = Session(limited), 0
        while not stop.is_set():
            code, headers, body = session.request("POST", vm_path(), vm(f"flood-{worker}-{n}"))
            n += 1
            with lock:
                flood_codes[code] += 1
                if code == 429:
                    retry_after.add(headers.get("retry-after", ""))
                    if len(refusals) < 1:
                        refusals.append(json.loads(body))
        session.close()

    threads = [threading.Thread(target=flood, args=(w,)) for w in range(FLOODERS)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the flood is on
    during, during_codes = probe(bob, FLOOD_SECONDS, "busy")
    stop.set()
    for thread in threads:
        thread.join(60)
    bob.close()

    ms = 1000
    print(f"\nflooder (admin, {FLOODERS} connections, limit {LIMIT} in flight): "
          f"{dict(flood_codes)}")
    print(f"bob alone:      {len(baseline)} requests, p50 "
          f"{statistics.median(baseline) * ms:.1f} ms, p99 {p99(baseline) * ms:.1f} ms")
    print(f"bob in a flood: {len(during)} requests, p50 "
          f"{statistics.median(during) * ms:.1f} ms, p99 {p99(during) * ms:.1f} ms")
    assert flood_codes[429] > 0, flood_codes
    assert flood_codes[201] > 0, flood_codes  # refused beyond its share, not shut out
    assert set(flood_codes) <= {201, 429}, flood_codes
    assert retry_after == {"1"}
    refusal = refusals[0]
    assert refusal["reason"] == "TooManyRequests" and refusal["code"] == 429
    assert "'admin'" in str(refusal["message"]) and "--max-requests-per-user" in str(
        refusal["message"])
    assert set(baseline_codes) == {201, 200} and set(during_codes) == {201, 200}, during_codes
