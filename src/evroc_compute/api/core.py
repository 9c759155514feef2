"""Core v1 Namespace: in evroc a namespace stands for a project; `default` always exists."""

from __future__ import annotations

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

KINDS = (NAMESPACE,)
