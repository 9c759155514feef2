"""End to end with the official Python `kubernetes` client (v37): watches.

Synthetic ADDED, resume from a resourceVersion, selector transitions, bookmarks, timeouts,
410 after compaction, and watches ending with their client or the server.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.rest import ApiException

from tests.conftest import Server, start_server
from tests.e2e.test_python_support import (
    API_VERSION,
    GROUP,
    VERSION,
    VMS,
    Clients,
    EventReader,
    create_vm,
    make_clients,
    stream,
    summary,
    vms_path,
)

# ---- watch ---------------------------------------------------------------------------

def test_watch_synthetic_added_then_changes_from_a_thread(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "w1")
    create_vm(k8s, ns, "w2")
    w, events = stream(k8s, ns)
    reader = EventReader(events)
    initial = reader.wait_for(2)
    assert sorted(summary(initial)) == [("ADDED", "w1"), ("ADDED", "w2")]

    def writer() -> None:
        k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, VMS, "w1",
                                                  {"spec": {"running": False}})
        create_vm(k8s, ns, "w3")
        k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, VMS, "w2")
        k8s.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, VMS, "w3", {"status": {"virtualMachineStatus": "Running"}})

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(10)
    seen = reader.wait_for(6)
    assert reader.error is None
    w.stop()  # closes the socket under the reader: errors after this are expected
    assert summary(seen[2:]) == [("MODIFIED", "w1"), ("ADDED", "w3"), ("DELETED", "w2"),
                                 ("MODIFIED", "w3")]
    assert seen[2]["raw_object"]["spec"]["running"] is False
    deleted = seen[4]["raw_object"]
    assert deleted["kind"] == "VirtualMachine" and deleted["apiVersion"] == API_VERSION
    assert seen[5]["raw_object"]["status"]["virtualMachineStatus"] == "Running"
    revisions = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in seen[2:]]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4


def test_watch_from_list_resource_version_gets_only_later_events(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "old")
    listed = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, VMS)
    create_vm(k8s, ns, "new")
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, VMS, "old",
                                              {"metadata": {"labels": {"x": "1"}}})
    w, events = stream(k8s, ns, resource_version=listed["metadata"]["resourceVersion"])
    reader = EventReader(events)
    seen = reader.wait_for(2)
    create_vm(k8s, ns, "newer")
    seen = reader.wait_for(3)
    w.stop()
    assert summary(seen) == [("ADDED", "new"), ("MODIFIED", "old"), ("ADDED", "newer")]
    # A watch in another namespace sees none of these.
    _, other = stream(k8s, "default", timeout_seconds=1,
                       field_selector="metadata.name=new")
    assert list(other) == []


def test_watch_resume_from_last_seen_resource_version(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "r1")
    w, events = stream(k8s, ns)
    reader = EventReader(events)
    assert summary(reader.wait_for(1)) == [("ADDED", "r1")]
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, VMS, "r1",
                                              {"spec": {"running": False}})
    seen = reader.wait_for(2)
    assert summary(seen) == [("ADDED", "r1"), ("MODIFIED", "r1")]
    last = w.resource_version
    assert last == seen[-1]["raw_object"]["metadata"]["resourceVersion"]
    w.stop()
    create_vm(k8s, ns, "r2")  # wakes the stopped stream so it notices the stop
    reader.join(5)
    assert reader.ended.is_set()

    # While nobody watches:
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, VMS, "r1",
                                              {"metadata": {"labels": {"m": "1"}}})
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, VMS, "r2")
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, VMS, "r1")

    _, resumed = stream(k8s, ns, resource_version=last, timeout_seconds=1)
    missed = list(resumed)
    assert summary(missed) == [("ADDED", "r2"), ("MODIFIED", "r1"), ("DELETED", "r2"),
                               ("DELETED", "r1")]
    assert missed[1]["raw_object"]["metadata"]["labels"] == {"m": "1"}


def test_label_selector_watch_turns_moves_into_added_and_deleted(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "sel", labels={"app": "web"})
    create_vm(k8s, ns, "other", labels={"app": "db"})
    w, events = stream(k8s, ns, label_selector="app=web")
    reader = EventReader(events)
    assert summary(reader.wait_for(1)) == [("ADDED", "sel")]

    def relabel(name: str, app: str) -> None:
        k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, VMS, name,
                                                  {"metadata": {"labels": {"app": app}}})

    relabel("sel", "db")       # leaves the selector -> DELETED
    relabel("other", "cache")  # never in the selector -> nothing
    relabel("sel", "web")      # back in -> ADDED
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, VMS, "sel",
                                              {"spec": {"running": False}})  # MODIFIED
    relabel("other", "web")    # enters -> ADDED
    seen = reader.wait_for(5)
    w.stop()
    assert summary(seen) == [("ADDED", "sel"), ("DELETED", "sel"), ("ADDED", "sel"),
                             ("MODIFIED", "sel"), ("ADDED", "other")]
    # The DELETED event carries the object's new state (outside the selector).
    assert seen[1]["raw_object"]["metadata"]["labels"] == {"app": "db"}


def test_field_selector_watch_on_one_name(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "one")
    create_vm(k8s, ns, "two")
    w, events = stream(k8s, ns, field_selector="metadata.name=two")
    reader = EventReader(events)
    assert summary(reader.wait_for(1)) == [("ADDED", "two")]
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, VMS, "one")
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, VMS, "two")
    seen = reader.wait_for(2)
    w.stop()
    assert summary(seen) == [("ADDED", "two"), ("DELETED", "two")]


def test_watch_timeout_ends_cleanly_and_bookmarks(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "bm")
    results: dict[str, Any] = {}

    def short() -> None:
        started = time.monotonic()
        _, events = stream(k8s, ns, allow_watch_bookmarks=True, timeout_seconds=2)
        results["short"] = (list(events), time.monotonic() - started)

    thread = threading.Thread(target=short)
    thread.start()
    started = time.monotonic()
    _, events = stream(k8s, ns, allow_watch_bookmarks=True, timeout_seconds=6)
    long_events = list(events)
    long_took = time.monotonic() - started
    thread.join(10)
    short_events, short_took = results["short"]
    # A bookmark just before the timeout is allowed (kube-apiserver sends one too).
    assert summary([e for e in short_events if e["type"] != "BOOKMARK"]) == [("ADDED", "bm")]
    assert 1.5 <= short_took < 4
    assert 5.5 <= long_took < 9
    kinds = [e["type"] for e in long_events]
    assert kinds[0] == "ADDED" and "BOOKMARK" in kinds
    bookmark = next(e for e in long_events if e["type"] == "BOOKMARK")["raw_object"]
    assert bookmark["kind"] == "VirtualMachine" and bookmark["apiVersion"] == API_VERSION
    assert int(bookmark["metadata"]["resourceVersion"]) >= \
        int(long_events[0]["raw_object"]["metadata"]["resourceVersion"])


def test_watch_without_bookmarks_sends_none(k8s: Clients, ns: str) -> None:
    _, events = stream(k8s, ns, timeout_seconds=1)
    assert list(events) == []


def test_open_watch_is_ended_cleanly_at_shutdown(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    k8s = make_clients(srv)
    try:
        create_vm(k8s, "default", "alive")
        # A watch (server-side timeout 30 min) still connected when the server is asked to
        # stop is ended with a complete chunked body, and does not hold the shutdown long.
        url = vms_path(srv.url, "default") + "?watch=true"
        response = urllib.request.urlopen(url, timeout=15, context=srv.tls())
        first = json.loads(response.readline())
        assert first["type"] == "ADDED"
        started = time.monotonic()
        srv.stop()
        rest = response.read()  # raises IncompleteRead if the stream was cut, not ended
        assert rest == b""
        took = time.monotonic() - started
        assert took < 6, f"shutdown with an open watch took {took:.1f} s"
        assert srv.process.returncode is not None
    finally:
        srv.stop()
        k8s.api_client.close()
    assert "Exception in ASGI application" not in srv.log_path.read_text()


def test_disconnected_watch_does_not_delay_shutdown(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    k8s = make_clients(srv)
    try:
        w = watch.Watch()
        reader = EventReader(w.stream(k8s.custom.list_namespaced_custom_object, GROUP, VERSION,
                                      "default", VMS))
        create_vm(k8s, "default", "x")
        assert summary(reader.wait_for(1)) == [("ADDED", "x")]
        w.stop()
        create_vm(k8s, "default", "y")  # lets the stopped client notice and close
        reader.join(5)
        assert reader.ended.is_set()
        time.sleep(0.3)
        started = time.monotonic()
        srv.stop()
        took = time.monotonic() - started
        assert took < 2, f"the server kept a disconnected watch open: stop took {took:.1f} s"
    finally:
        srv.stop()
        k8s.api_client.close()


def compacted(srv: Server, url: str) -> bool:
    """Whether a list from the revision in `url` is 410 Gone (compacted away)."""
    try:
        with urllib.request.urlopen(url, timeout=10, context=srv.tls()):
            return False
    except urllib.error.HTTPError as error:
        return error.code == 410


def test_watch_from_compacted_revision_is_410(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--compact-interval", "0.5", "--compact-keep", "5")
    try:
        k8s = make_clients(srv)
        for index in range(12):
            create_vm(k8s, "default", f"c{index}")
            k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, "default", VMS,
                                                      f"c{index}", {"spec": {"running": False}})
        deadline = time.monotonic() + 30  # until a compaction has run past revision 1
        while not compacted(srv, vms_path(srv.url, "default") + "?limit=1&resourceVersion=1"):
            assert time.monotonic() < deadline, "history was never compacted"
            time.sleep(0.05)
        _, events = stream(k8s, "default", resource_version="1", timeout_seconds=5)
        with pytest.raises(ApiException) as caught:
            list(events)
        assert caught.value.status == 410
        # The same from a raw stream: one ERROR event with an Expired Status.
        url = vms_path(srv.url, "default") + "?watch=true&resourceVersion=1&timeoutSeconds=2"
        with urllib.request.urlopen(url, timeout=10, context=srv.tls()) as response:
            lines = [json.loads(line) for line in response.read().splitlines() if line.strip()]
        assert [line["type"] for line in lines] == ["ERROR"]
        assert lines[0]["object"]["code"] == 410 and lines[0]["object"]["reason"] == "Expired"
        # Recovery as documented: list, then watch from the list's resourceVersion.
        listed = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, "default", VMS)
        assert len(listed["items"]) == 12
        w, fresh = stream(k8s, "default", resource_version=listed["metadata"]["resourceVersion"])
        reader = EventReader(fresh)
        k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, "default", VMS, "c0")
        seen = reader.wait_for(1)
        w.stop()
        assert summary(seen) == [("DELETED", "c0")]
        k8s.api_client.close()
    finally:
        srv.stop()
