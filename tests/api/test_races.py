"""Concurrent requests against the real app, in process: races a client can cause."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from evroc_compute.cloud import Cloud
from evroc_compute.server.app import App
from evroc_compute.server.auth.authn import CLIENT_CERT, ClientCertificate
from evroc_compute.server.auth.users import MASTERS
from evroc_compute.server.handlers import create as create_handler
from evroc_compute.store.sqlite import SQLiteLog

ADMIN_CERTIFICATE = ClientCertificate("admin", (MASTERS,), "ad")
ADMIN = {"admin_certificates": (ADMIN_CERTIFICATE.serial,)}  # the App's PKI admin
DISKS = "/apis/compute.evroclabs.net/v1alpha1/namespaces/default/disks"
NAMESPACES = "/api/v1/namespaces"
MERGE = "application/merge-patch+json"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """The API in process, with the namespace controller that finishes namespace deletions."""
    cloud = Cloud(tmp_path, controllers=False, compact_interval=3600, **ADMIN)
    await cloud.start()
    yield cloud.app
    await cloud.stop()


async def call(app: App, method: str, path: str, body: Any = None,
               content_type: str = "application/json", query: str = "") -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(),
             "headers": [(b"content-type", content_type.encode())],
             "extensions": {CLIENT_CERT: ADMIN_CERTIFICATE}}  # as the TLS layer would set
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": data, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    out: dict[str, Any] = {"body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], json.loads(out["body"]) if out["body"] else None


async def watch_into(app: App, query: str, lines: list[bytes]) -> None:
    """Watch the default namespace's disks until the server ends the stream."""
    started = False

    async def receive() -> dict[str, Any]:
        nonlocal started
        if not started:
            started = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            lines.extend(line for line in message["body"].split(b"\n") if line)

    scope = {"type": "http", "method": "GET", "path": DISKS, "headers": [],
             "query_string": f"watch=true&{query}".encode(),
             "extensions": {CLIENT_CERT: ADMIN_CERTIFICATE}}
    await app(scope, receive, send)


def disk(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "Disk",
            "metadata": {"name": name, **meta},
            "spec": {"diskImage": {"diskImageRef": {"name": "ubuntu.24-04.1"}}}}


async def test_an_unconditional_delete_is_not_refused_by_a_racing_patch(app: App) -> None:
    await call(app, "POST", DISKS, disk("d"))
    patched, deleted = await asyncio.gather(
        call(app, "PATCH", f"{DISKS}/d", {"metadata": {"labels": {"a": "b"}}}, MERGE),
        call(app, "DELETE", f"{DISKS}/d"))
    assert patched[0] == 200 and deleted[0] == 200
    assert (await call(app, "GET", f"{DISKS}/d"))[0] == 404


async def test_removing_the_last_finalizer_deletes_even_with_a_racing_patch(app: App) -> None:
    await call(app, "POST", DISKS, disk("f", finalizers=["example.com/hold"]))
    assert (await call(app, "DELETE", f"{DISKS}/f"))[0] == 200
    await asyncio.gather(
        call(app, "PATCH", f"{DISKS}/f", {"metadata": {"finalizers": None}}, MERGE),
        call(app, "PATCH", f"{DISKS}/f", {"metadata": {"labels": {"x": "y"}}}, MERGE))
    assert (await call(app, "GET", f"{DISKS}/f"))[0] == 404


async def test_concurrent_server_side_apply_creates_both_succeed(app: App) -> None:
    body = disk("ssa")
    results = await asyncio.gather(*(
        call(app, "PATCH", f"{DISKS}/ssa", body, "application/apply-patch+yaml",
             query="fieldManager=m") for _ in range(2)))
    assert sorted(status for status, _ in results) == [200, 201]


async def test_namespace_termination_survives_a_transient_store_failure(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    await call(app, "POST", NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": "p"}})
    commit = SQLiteLog.append
    failures = [1]

    def flaky(self: SQLiteLog, rows: Any) -> None:
        if failures[0] and any(r.deleted and r.key == "/core/namespaces/p" for r in rows):
            failures[0] -= 1
            raise OSError("database or disk is full")
        commit(self, rows)

    monkeypatch.setattr(SQLiteLog, "append", flaky)
    assert (await call(app, "DELETE", f"{NAMESPACES}/p"))[0] == 200
    for _ in range(50):
        if (await call(app, "GET", f"{NAMESPACES}/p"))[0] == 404:
            break
        await asyncio.sleep(0.1)
    assert (await call(app, "GET", f"{NAMESPACES}/p"))[0] == 404


async def test_a_create_in_flight_when_its_namespace_is_deleted_is_not_left_behind(
        app: App) -> None:
    await call(app, "POST", NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": "q"}})
    created, _ = await asyncio.gather(
        call(app, "POST", "/apis/compute.evroclabs.net/v1alpha1/namespaces/q/disks", disk("d")),
        call(app, "DELETE", f"{NAMESPACES}/q"))
    for _ in range(50):
        if (await call(app, "GET", f"{NAMESPACES}/q"))[0] == 404:
            break
        await asyncio.sleep(0.1)
    status, _ = await call(app, "GET", "/apis/compute.evroclabs.net/v1alpha1/namespaces/q/disks/d")
    assert created[0] in (201, 403) and status == 404
    listed = (await call(app, "GET", "/apis/compute.evroclabs.net/v1alpha1/disks"))[1]
    assert all(i["metadata"]["namespace"] != "q" for i in listed["items"])


async def test_two_deletes_of_one_namespace_are_both_answered(app: App) -> None:
    await call(app, "POST", NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": "r"}})
    results = await asyncio.gather(*(call(app, "DELETE", f"{NAMESPACES}/r") for _ in range(2)))
    assert [status for status, _ in results] == [200, 200], results


async def test_bookmarks_never_run_ahead_of_undelivered_events(tmp_path: Path) -> None:
    """With bookmarks every 2 ms under 600 concurrent creates, no event may arrive with a
    resourceVersion at or below one a bookmark (or earlier event) already claimed."""
    app = App(tmp_path, compact_interval=3600, bookmark_interval=0.002, **ADMIN)
    await app.start()
    lines: list[bytes] = []
    watching = asyncio.create_task(watch_into(
        app, "allowWatchBookmarks=true&timeoutSeconds=600&resourceVersion=1", lines))

    async def writer(k: int) -> None:
        for i in range(150):
            await call(app, "POST", DISKS, disk(f"w{k}-{i}"))

    def delivered() -> int:
        return sum(1 for line in lines if b'"BOOKMARK"' not in line)

    await asyncio.gather(*(writer(k) for k in range(4)))
    deadline = time.monotonic() + 60  # every create is committed; wait for its event, however slow
    while delivered() < 600 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    await app.stop()
    claimed, bookmarks, events = 0, 0, 0
    for line in lines:
        event = json.loads(line)
        version = int(event["object"]["metadata"]["resourceVersion"])
        if event["type"] == "BOOKMARK":
            bookmarks += 1
        else:
            events += 1
            assert version > claimed, f"{event['type']} at {version} after {claimed} was claimed"
        claimed = max(claimed, version)
    assert events == 600 and bookmarks > 0


async def test_a_selective_watch_on_a_busy_collection_still_gets_bookmarks(
        tmp_path: Path) -> None:
    """Events a selector filters out still advance the watch: bookmarks keep flowing, so a
    client can resume after compaction without a full relist."""
    app = App(tmp_path, compact_interval=3600, bookmark_interval=0.1, **ADMIN)
    await app.start()
    await call(app, "POST", DISKS, disk("busy"))
    assert app.ctx is not None
    start = app.ctx.store.revision
    lines: list[bytes] = []
    watching = asyncio.create_task(watch_into(
        app, f"allowWatchBookmarks=true&timeoutSeconds=2&labelSelector=app%3Dx"
             f"&resourceVersion={start}", lines))
    for i in range(80):
        await call(app, "PATCH", f"{DISKS}/busy", {"metadata": {"labels": {"n": str(i)}}}, MERGE)
        await asyncio.sleep(0.02)
    await watching
    await app.stop()
    marks = [int(json.loads(line)["object"]["metadata"]["resourceVersion"]) for line in lines
             if json.loads(line)["type"] == "BOOKMARK"]
    assert len(marks) >= 5 and marks[-1] > start + 40, marks


def slow_commits(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    commit = SQLiteLog.append

    def slow(self: SQLiteLog, rows: Any) -> None:
        time.sleep(seconds)
        commit(self, rows)

    monkeypatch.setattr(SQLiteLog, "append", slow)


async def test_a_create_racing_the_terminating_update_is_deleted_with_its_namespace(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    assert app.ctx is not None
    store: Any = app.ctx.store
    await call(app, "POST", NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": "q"}})
    q_disks = "/apis/compute.evroclabs.net/v1alpha1/namespaces/q/disks"
    assert (await call(app, "POST", q_disks, disk("a1")))[0] == 201
    slow_commits(monkeypatch, 0.05)
    deleting = asyncio.create_task(call(app, "DELETE", f"{NAMESPACES}/q"))
    while not store._committing:  # the Terminating update is being committed now
        await asyncio.sleep(0)
    await call(app, "POST", q_disks, disk("a2"))
    await deleting
    for _ in range(50):
        if (await call(app, "GET", f"{NAMESPACES}/q"))[0] == 404:
            break
        await asyncio.sleep(0.1)
    assert (await call(app, "GET", f"{NAMESPACES}/q"))[0] == 404
    listed = (await call(app, "GET", "/apis/compute.evroclabs.net/v1alpha1/disks"))[1]
    assert [i["metadata"]["name"] for i in listed["items"]
            if i["metadata"]["namespace"] == "q"] == []


async def test_delete_collection_deletes_objects_patched_meanwhile(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(20):
        await call(app, "POST", DISKS, disk(f"d{i}"))
    slow_commits(monkeypatch, 0.005)

    async def patcher() -> None:
        for round_ in range(3):
            for i in range(20):
                await call(app, "PATCH", f"{DISKS}/d{i}",
                           {"metadata": {"labels": {"r": str(round_)}}}, MERGE)

    patching = asyncio.create_task(patcher())
    await asyncio.sleep(0.02)
    status, _ = await call(app, "DELETE", DISKS)
    await patching
    assert status == 200
    assert (await call(app, "GET", DISKS))[1]["items"] == []


async def test_generate_name_draws_again_when_the_name_is_taken(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    await call(app, "POST", DISKS, disk("gen-bbbbb"))
    draws = iter(["gen-bbbbb", "gen-bbbbb", "gen-bbbbb", "gen-ccccc"])
    monkeypatch.setattr(create_handler, "generated_name", lambda prefix: next(draws))
    body = disk("")
    body["metadata"] = {"generateName": "gen-"}
    status, created = await call(app, "POST", DISKS, body)
    assert status == 201 and created["metadata"]["name"] == "gen-ccccc"
    monkeypatch.setattr(create_handler, "generated_name", lambda prefix: "gen-bbbbb")
    status, refused = await call(app, "POST", DISKS, body)
    assert status == 409 and refused["reason"] == "AlreadyExists"
    assert "every generated name tried was taken" in refused["message"]


async def test_finalize_is_refused_while_the_namespace_has_content(tmp_path: Path) -> None:
    """The server's half of namespace deletion, without the controller: /finalize deletes the
    namespace only once nothing is left in it."""
    app = App(tmp_path, compact_interval=3600, **ADMIN)
    await app.start()
    try:
        await call(app, "POST", NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": "s"}})
        s_disks = "/apis/compute.evroclabs.net/v1alpha1/namespaces/s/disks"
        await call(app, "POST", s_disks, disk("kept"))
        finalize = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "s"},
                    "spec": {"finalizers": []}}
        status, body = await call(app, "PUT", f"{NAMESPACES}/s/finalize", finalize)
        assert status == 200 and body["spec"]["finalizers"] == []  # not deleting: just set
        assert (await call(app, "DELETE", f"{NAMESPACES}/s"))[0] == 200
        status, refused = await call(app, "PUT", f"{NAMESPACES}/s/finalize", finalize)
        assert status == 409 and "disks/kept" in refused["message"]
        # A status write to a Terminating namespace never deletes it by itself.
        _, ns = await call(app, "GET", f"{NAMESPACES}/s")
        ns["status"]["conditions"][0]["message"] = "still going"
        assert (await call(app, "PUT", f"{NAMESPACES}/s/status", ns))[0] == 200
        assert (await call(app, "GET", f"{NAMESPACES}/s"))[0] == 200
        await call(app, "DELETE", f"{s_disks}/kept")
        assert (await call(app, "PUT", f"{NAMESPACES}/s/finalize", finalize))[0] == 200
        assert (await call(app, "GET", f"{NAMESPACES}/s"))[0] == 404
    finally:
        await app.stop()


async def test_a_namespace_waits_for_its_metadata_finalizers_too(app: App) -> None:
    await call(app, "POST", NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": "kept",
                                                      "finalizers": ["example.com/keep"]}})
    assert (await call(app, "DELETE", f"{NAMESPACES}/kept"))[0] == 200
    for _ in range(50):  # the controller empties it and finalizes its spec
        _, ns = await call(app, "GET", f"{NAMESPACES}/kept")
        if not ns["spec"]["finalizers"]:
            break
        await asyncio.sleep(0.1)
    assert ns["spec"]["finalizers"] == [] and ns["metadata"]["deletionTimestamp"]
    status, _ = await call(app, "PATCH", f"{NAMESPACES}/kept",
                           {"metadata": {"finalizers": None}}, MERGE)
    assert status == 200
    assert (await call(app, "GET", f"{NAMESPACES}/kept"))[0] == 404
