"""The EventRecorder against the real app: aggregation, names, and a bounded queue."""

from __future__ import annotations

from evroc_compute.api.compute import DISK
from evroc_compute.api.events import EVENT
from evroc_compute.client.inprocess import InProcessClient
from evroc_compute.client.recorder import EventRecorder

DISK_OBJ = {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "Disk",
            "metadata": {"name": "d", "namespace": "default", "uid": "u-1", "resourceVersion": "7"}}


async def test_repeats_are_one_event_with_a_count(client: InProcessClient) -> None:
    recorder = EventRecorder(client, "tester", "machine-1")
    for _ in range(5):
        recorder.record(DISK, DISK_OBJ, "Warning", "Stuck", "it is stuck")
    recorder.record(DISK, DISK_OBJ, "Normal", "Fine", "it is fine")
    await recorder.flush()
    events, _ = await client.list(EVENT, "default")
    assert sorted((e["reason"], e["count"]) for e in events) == [("Fine", 1), ("Stuck", 5)]
    stuck = next(e for e in events if e["reason"] == "Stuck")
    assert stuck["involvedObject"] == {"apiVersion": "compute.evroclabs.net/v1alpha1",
                                       "kind": "Disk", "name": "d", "namespace": "default",
                                       "uid": "u-1", "resourceVersion": "7"}
    assert stuck["source"] == {"component": "tester", "host": "machine-1"}
    assert "managedFields" not in stuck["metadata"]  # events do not record them (memory)
    assert stuck["metadata"]["name"].startswith("d.")
    # Once written, a repeat updates the same event rather than adding one.
    recorder.record(DISK, DISK_OBJ, "Warning", "Stuck", "it is stuck")
    await recorder.flush()
    events, _ = await client.list(EVENT, "default")
    assert [(e["metadata"]["name"], e["count"]) for e in events if e["reason"] == "Stuck"] == \
        [(stuck["metadata"]["name"], 6)]


async def test_a_deleted_event_is_recorded_anew(client: InProcessClient) -> None:
    recorder = EventRecorder(client, "tester")
    recorder.record(DISK, DISK_OBJ, "Normal", "Once", "m")
    await recorder.flush()
    (first,), _ = await client.list(EVENT, "default")
    await client.delete(EVENT, "default", first["metadata"]["name"])  # e.g. expired
    recorder.record(DISK, DISK_OBJ, "Normal", "Once", "m")
    await recorder.flush()
    (again,), _ = await client.list(EVENT, "default")
    assert again["count"] == 1 and again["metadata"]["name"] != first["metadata"]["name"]


async def test_a_full_queue_drops_new_events_instead_of_growing(client: InProcessClient) -> None:
    recorder = EventRecorder(client, "tester", capacity=3)
    for i in range(5):
        recorder.record(DISK, DISK_OBJ, "Normal", f"R{i}", "m")
    assert recorder.dropped == 2
    await recorder.flush()
    events, _ = await client.list(EVENT, "default")
    assert sorted(e["reason"] for e in events) == ["R0", "R1", "R2"]
