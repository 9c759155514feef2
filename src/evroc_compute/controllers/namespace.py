"""The namespace controller: empties a Terminating namespace through the API, then finalizes it.

Like kube-controller-manager's namespace controller, and leader-elected like the others: for a
namespace being deleted it deletes every object in it (objects with finalizers are marked and
waited for), reports what is left in the namespace's status, and once nothing is left asks
the server to finalize it (`PUT .../finalize`). The server refuses that while anything is left
or still being created (server/namespaces.py), so a create racing the deletion is found on the
next pass. A namespace the controller has not finished is looked at again every
`POLL_SECONDS`; after a restart or a change of leader, the first list finds it again.

It also finishes a project's creation that a crash interrupted: a namespace still naming its
creator to bind (server/projects.py) gets the creator's `admin` RoleBinding, then loses the
pending annotation.
"""

from __future__ import annotations

import asyncio
from typing import Any

from evroc_compute.api import rbac
from evroc_compute.api.core import NAMESPACE, listed, terminating_status
from evroc_compute.api.kinds import Kind
from evroc_compute.api.meta import now_rfc3339
from evroc_compute.api.registry import default_registry
from evroc_compute.client.base import Client, ClientError
from evroc_compute.runtime.controller import Controller, Key, Result, WorkQueue
from evroc_compute.runtime.informer import Informer, key_of
from evroc_compute.runtime.world import deleting

POLL_SECONDS = 0.2


def content_kinds() -> list[Kind]:
    """The kinds whose objects live in a namespace (each stored kind once)."""
    return [k for k in default_registry().kinds if k.namespaced and k.stored_as is None]


def remaining_message(remaining: list[str]) -> str:
    return f"waiting for {len(remaining)} object(s) with finalizers to be deleted: " \
        f"{listed(remaining)}" if remaining else ""


class NamespaceController:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.kinds = content_kinds()
        self.namespaces = Informer(client, NAMESPACE)
        self.queue = WorkQueue()
        self.controller = Controller("namespace", self, self.queue, workers=2)
        self.namespaces.add_handler(self._on_namespace)

    def _on_namespace(self, event: str, namespace: dict[str, Any]) -> None:
        if event != "DELETED" and (deleting(namespace) or _pending(namespace)):
            self.queue.add(key_of(namespace))

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.namespaces.run())
                group.create_task(self.controller.run())
        finally:
            self.controller.stop()

    async def reconcile(self, key: Key) -> Result:
        namespace = self.namespaces.get(*key)
        if namespace is not None and _pending(namespace) and not deleting(namespace):
            return await self._bind_creator(namespace)
        if namespace is None or not deleting(namespace):
            return Result()
        name = key[1]
        remaining = await self._delete_contents(name)
        if remaining:
            await self._report(namespace, remaining_message(remaining))
            return Result(requeue_after=POLL_SECONDS)
        try:
            await self.client.update(NAMESPACE, {**namespace, "spec": {"finalizers": []}},
                                     "finalize")
        except ClientError as problem:
            if problem.not_found:
                return Result()
            if not problem.conflict:
                raise
            # Something is left after all (a create admitted before the namespace turned
            # Terminating landed after this pass listed its kind): the next pass deletes it.
            return Result(requeue_after=POLL_SECONDS)
        return Result()

    async def _bind_creator(self, namespace: dict[str, Any]) -> Result:
        meta = namespace["metadata"]
        binding = rbac.admin_binding(meta["name"], _pending(namespace))
        try:
            await self.client.create(rbac.ROLE_BINDING, binding)
        except ClientError as problem:
            if problem.reason != "AlreadyExists":  # bound by the request before it failed
                raise
        settled = {**meta, "annotations": rbac.settled_annotations(meta["annotations"])}
        try:
            await self.client.update(NAMESPACE, {**namespace, "metadata": settled})
        except ClientError as problem:
            if problem.conflict:  # changed meanwhile: the informer brings it back
                return Result(requeue_after=POLL_SECONDS)
            if not problem.not_found:
                raise
        return Result()

    async def _delete_contents(self, namespace: str) -> list[str]:
        """Delete what can go now; return what is still there (held by finalizers)."""
        remaining: list[str] = []
        for kind in self.kinds:
            items, _ = await self.client.list(kind, namespace)
            for item in items:
                name = item["metadata"]["name"]
                if not deleting(item):
                    try:
                        gone = await self.client.delete(kind, namespace, name)
                    except ClientError as problem:
                        if problem.not_found:
                            continue
                        gone = item  # refused or changed meanwhile: the next pass sees it
                    if gone.get("kind") == "Status" or not deleting(gone):
                        continue  # deleted at once
                remaining.append(f"{kind.plural}/{name}")
        return remaining

    async def _report(self, namespace: dict[str, Any], message: str) -> None:
        conditions = (namespace.get("status") or {}).get("conditions") or [{}]
        if conditions[0].get("message") == message:
            return
        status = terminating_status(message, now_rfc3339())
        try:
            await self.client.update(NAMESPACE, {**namespace, "status": status}, "status")
        except ClientError as problem:
            if not (problem.conflict or problem.not_found):
                raise


def _pending(namespace: dict[str, Any]) -> str:
    """The creator a namespace still names to bind as its admin ("" : none)."""
    return str((namespace["metadata"].get("annotations") or {}).get(rbac.PENDING_ADMIN, ""))
