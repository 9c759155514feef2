"""StatusHistory: every stored status change of a user-visible object becomes its Events.

It listens to the informers rather than to the controllers' writes, so whoever wrote a status
(any controller, any host agent, an operator with kubectl) the history records it, exactly
once per stored change, and a reconcile never waits for it: the recorder only queues.
What each change means is decided by `transitions.status_events`, a pure function.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api.kinds import Kind
from evroc_compute.client.recorder import EventRecorder
from evroc_compute.controllers.transitions import status_events
from evroc_compute.runtime.controller import Key
from evroc_compute.runtime.informer import Informer, key_of
from evroc_compute.runtime.world import World


class StatusHistory:
    def __init__(self, world: World, recorder: EventRecorder) -> None:
        self.recorder = recorder
        for informer in (world.vms, world.disks, world.attachments, world.public_ips,
                         world.groups, world.hosts):
            self._follow(informer)

    def _follow(self, informer: Informer) -> None:
        kind = informer.kind
        # The last status seen per object: an ADDED object (a new one, or the first list after
        # a restart) only sets the baseline; history is made of the changes after it.
        seen: dict[Key, Any] = {}

        def on_change(event: str, obj: dict[str, Any]) -> None:
            key = key_of(obj)
            if event == "DELETED":
                seen.pop(key, None)
                return
            status = obj.get("status")
            if event == "MODIFIED" and key in seen:
                self._record(kind, obj, seen[key], status)
            seen[key] = status

        informer.add_handler(on_change)

    def _record(self, kind: Kind, obj: dict[str, Any], old: Any, new: Any) -> None:
        for occurrence in status_events(kind.kind, old, new):
            self.recorder.record(kind, obj, occurrence.type, occurrence.reason, occurrence.message)
