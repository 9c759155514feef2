"""The fleet benchmark names each stored revision's writer from managedFields, and what it changed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from writes import Writes


def entry(manager: str, fields: dict[str, Any], subresource: str = "") -> dict[str, Any]:
    out = {"manager": manager, "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        out["subresource"] = subresource
    return out


USER = entry("kubectl", {"f:spec": {"f:running": {}}})
CREATED = {"metadata": {"name": "vm", "namespace": "ns", "managedFields": [USER]},
           "spec": {"running": True}}
FINALIZED = {"metadata": {"name": "vm", "namespace": "ns", "finalizers": ["x/y"],
                          "managedFields": [USER, entry("ctrl", {"f:metadata": {
                              "f:finalizers": {".": {}, 'v:"x/y"': {}}}})]},
             "spec": {"running": True}}
RUNNING = {**FINALIZED, "metadata": {**FINALIZED["metadata"], "managedFields": [
    *FINALIZED["metadata"]["managedFields"],
    entry("agent", {"f:status": {"f:phase": {}}}, "status")]}, "status": {"phase": "Running"}}
STOPPING = {**RUNNING, "spec": {"running": False}}


@pytest.mark.parametrize(("revisions", "expected"), [
    pytest.param([CREATED], [("kubectl", "create")], id="a create is its managers' write"),
    pytest.param([CREATED, FINALIZED], [("kubectl", "create"), ("ctrl", "metadata.finalizers")],
                 id="a finalizer added is written by the manager that owns it"),
    pytest.param([CREATED, FINALIZED, RUNNING],
                 [("kubectl", "create"), ("ctrl", "metadata.finalizers"),
                  ("agent", "status -> Running")],
                 id="a status write names the state it moved to"),
    pytest.param([CREATED, FINALIZED, RUNNING, STOPPING],
                 [("kubectl", "create"), ("ctrl", "metadata.finalizers"),
                  ("agent", "status -> Running"), ("kubectl", "spec.running")],
                 id="a change to a field an earlier manager owns is that manager's write"),
    pytest.param([CREATED, CREATED], [("kubectl", "create"), ("-", "(nothing tracked)")],
                 id="a revision that changes no tracked field says so"),
])
def test_each_revision_is_attributed_to_the_manager_owning_what_it_changed(
        revisions: list[dict[str, Any]], expected: list[tuple[str, str]]) -> None:
    writes = Writes()
    for i, obj in enumerate(revisions):
        writes.seen("VirtualMachine", "ADDED" if i == 0 else "MODIFIED", obj)
    rows = writes.report(per=1)["by_writer"]
    assert sorted((r["writer"], r["changed"]) for r in rows) == sorted(expected)
    assert writes.report(per=1)["per_kind"] == {"VirtualMachine": len(revisions)}
