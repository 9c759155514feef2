"""Core v1 Namespace: in evroc a namespace stands for a project; `default` always exists."""

from __future__ import annotations

from typing import Any

from evroc_compute.api.kinds import Column, Kind
from evroc_compute.api.schema import array, obj, string
from evroc_compute.api.tables import age, path

NAMESPACE = Kind(
    group="", version="v1", kind="Namespace", plural="namespaces", namespaced=False,
    short_names=("ns",), description="Namespace provides a scope for names. In evroc a "
    "namespace stands for a project; deleting it deletes everything in it.",
    spec=obj("The namespace's spec.", finalizers=array(string(), "Finalizers.")),
    status=obj("The namespace's status.",
               phase=string("Active or Terminating.", enum=("Active", "Terminating")),
               conditions=array({"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                "Conditions.")),
    seed=({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},),
    # As kube-apiserver: `kubectl get ns` shows Active from the start.
    initial_status={"phase": "Active"}, extra_subresources=("finalize",),
    columns=(Column("Status", "string", path("status", "phase"), "Active or Terminating."),
             Column("Age", "date", age, "Time since creation.")),
)

NAMESPACE_FINALIZER = "kubernetes"
"""In spec.finalizers while a namespace is being emptied; only PUT .../finalize removes it."""


def listed(names: list[str], shown: int = 5) -> str:
    """`a, b, c, d, e and 3 more`: what is left in a namespace, for a person."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def terminating_status(remaining: str, now: str) -> dict[str, Any]:
    """A Terminating namespace's status: what is left in it (empty: nothing)."""
    return {"phase": "Terminating", "conditions": [{
        "type": "NamespaceContentRemaining", "status": "True" if remaining else "False",
        "lastTransitionTime": now, "reason": "SomeResourcesRemain" if remaining
        else "ContentDeleted", "message": remaining or "All content successfully deleted"}]}


KINDS = (NAMESPACE,)
