"""managedFields tracking and server-side apply follow Kubernetes' ownership rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from evroc_compute.server.managedfields import (
    ApplyConflict,
    FieldPath,
    apply,
    field_set,
    from_fields_v1,
    record_update,
    to_fields_v1,
)

API = "compute.evroclabs.net/v1alpha1"
T0 = "2024-01-01T00:00:00Z"
T1 = "2024-01-02T00:00:00Z"


def vm(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": API,
        "kind": "VirtualMachine",
        "metadata": {"name": "vm-1", "namespace": "default", **metadata},
    }
    if spec is not None:
        obj["spec"] = spec
    return obj


def entry(manager: str, operation: str, paths: set[FieldPath], **extra: str) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": API,
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
        **extra,
    }


def with_owners(obj: dict[str, Any], *entries: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["managedFields"] = list(entries)
    return obj


def ownership(entries: list[dict[str, Any]]) -> dict[tuple[str, str], frozenset[FieldPath]]:
    return {(e["manager"], e["operation"]): from_fields_v1(e["fieldsV1"]) for e in entries}


RUNNING = ("spec", "running")
DISKS = ("spec", "diskRefs")
APP = ("metadata", "labels", "app")


# --- field_set ---------------------------------------------------------------------------

FIELD_SET_CASES = [
    (vm({"running": True, "diskRefs": [{"name": "d"}]}, labels={"app": "x"}), "",
     {RUNNING, DISKS, APP}, "lists are atomic leaves and labels are per key"),
    (vm(annotations={"a/b": "1"}, finalizers=["f1", "f2"], uid="u", managedFields=[{}]), "",
     {("metadata", "annotations", "a/b"), ("metadata", "finalizers", "f1"),
      ("metadata", "finalizers", "f2")},
     "annotations and finalizer entries tracked, other metadata ignored"),
    (vm({"a": {"b": {"c": 1}}, "empty": {}}), "",
     {("spec", "a", "b", "c"), ("spec", "empty")}, "maps recurse and empty maps are leaves"),
    ({**vm({"running": True}), "status": {"phase": "Running"}}, "", {RUNNING},
     "status is ignored for main-resource writes"),
    ({**vm({"running": True}, labels={"a": "b"}), "status": {"phase": "Running", "ip": None}},
     "status", {("status", "phase"), ("status", "ip")},
     "only status is tracked for status writes"),
]


@pytest.mark.parametrize(
    ("obj", "subresource", "expected"),
    [case[:3] for case in FIELD_SET_CASES],
    ids=[case[3] for case in FIELD_SET_CASES],
)
def test_field_set(obj: dict[str, Any], subresource: str, expected: set[FieldPath]) -> None:
    assert field_set(obj, subresource) == frozenset(expected)


# --- fieldsV1 ----------------------------------------------------------------------------

def test_fields_v1_encoding_matches_kubernetes_shape() -> None:
    paths = {APP, RUNNING, DISKS, ("metadata", "finalizers", "evroc/cleanup")}
    assert to_fields_v1(paths) == {
        "f:metadata": {
            "f:finalizers": {'v:"evroc/cleanup"': {}},
            "f:labels": {"f:app": {}},
        },
        "f:spec": {"f:diskRefs": {}, "f:running": {}},
    }


ROUND_TRIPS = [
    (set(), "no paths"),
    ({RUNNING}, "single leaf"),
    ({("metadata", "labels", "example.com/x.y")}, "label key with dots and slash"),
    ({("metadata", "finalizers", 'we"ird,one')}, "finalizer needing JSON escaping"),
    ({("spec",), ("spec", "a")}, "owned node that also has owned children"),
    ({("spec", "a", "b"), ("spec", "a", "c"), ("status", "phase")}, "siblings and depth"),
]


@pytest.mark.parametrize(
    "paths", [case[0] for case in ROUND_TRIPS], ids=[case[1] for case in ROUND_TRIPS]
)
def test_fields_v1_round_trip(paths: set[FieldPath]) -> None:
    assert from_fields_v1(to_fields_v1(paths)) == frozenset(paths)


def test_fields_v1_marks_owned_parent_with_dot() -> None:
    assert to_fields_v1({("spec",), ("spec", "a")}) == {"f:spec": {".": {}, "f:a": {}}}


# --- apply -------------------------------------------------------------------------------

def test_apply_create_owns_everything_applied() -> None:
    applied = vm({"running": True}, labels={"app": "web"})
    result = apply(None, applied, manager="kubectl", force=False, api_version=API, now=T1)
    assert result["spec"] == {"running": True}
    [only] = result["metadata"]["managedFields"]
    assert only == {
        "manager": "kubectl", "operation": "Apply", "apiVersion": API, "time": T1,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:running": {}}},
    }
    assert "managedFields" not in applied["metadata"]


def test_apply_does_not_mutate_inputs() -> None:
    live = with_owners(vm({"running": False, "x": 1}), entry("kubectl", "Apply", {RUNNING}))
    applied = vm({"running": True})
    live_before, applied_before = copy.deepcopy(live), copy.deepcopy(applied)
    apply(live, applied, manager="kubectl", force=False, api_version=API, now=T1)
    assert live == live_before and applied == applied_before


def test_apply_preserves_status_and_other_metadata() -> None:
    live = with_owners(vm({"running": False}, uid="u-1", resourceVersion="7"),
                       entry("kubectl", "Apply", {RUNNING}))
    live["status"] = {"phase": "Stopped"}
    applied = {**vm({"running": True}, uid="ignored"), "status": {"phase": "Bogus"}}
    result = apply(live, applied, manager="kubectl", force=False, api_version=API, now=T1)
    assert result["status"] == {"phase": "Stopped"}
    assert result["metadata"]["uid"] == "u-1"
    assert result["metadata"]["resourceVersion"] == "7"
    assert result["spec"] == {"running": True}


def test_apply_merges_maps_and_replaces_lists() -> None:
    live = with_owners(
        vm({"running": False, "diskRefs": ["a", "b"], "nested": {"keep": 1, "change": 1}}),
        entry("kubectl", "Apply", {RUNNING, DISKS, ("spec", "nested", "change")}),
        entry("other", "Update", {("spec", "nested", "keep")}),
    )
    applied = vm({"running": False, "diskRefs": ["c"], "nested": {"change": 2}})
    result = apply(live, applied, manager="kubectl", force=False, api_version=API, now=T1)
    assert result["spec"] == {"running": False, "diskRefs": ["c"],
                              "nested": {"keep": 1, "change": 2}}


def test_apply_equal_value_is_shared_without_conflict() -> None:
    live = with_owners(vm({"running": True}), entry("ui", "Update", {RUNNING}))
    result = apply(live, vm({"running": True}), manager="kubectl", force=False,
                   api_version=API, now=T1)
    assert ownership(result["metadata"]["managedFields"]) == {
        ("ui", "Update"): {RUNNING},
        ("kubectl", "Apply"): {RUNNING},
    }


CONFLICT_CASES = [
    (
        [entry("kubectl-client-side-apply", "Update", {RUNNING})],
        vm({"running": True}),
        [("kubectl-client-side-apply", ".spec.running")],
        ('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using '
        f"{API}: .spec.running"),
        "changing a value owned by an Update manager conflicts",
    ),
    (
        [entry("gitops", "Apply", {APP})],
        vm({"running": False}, labels={"app": "new"}),
        [("gitops", ".metadata.labels.app")],
        'Apply failed with 1 conflict: conflict with "gitops": .metadata.labels.app',
        "changing a label owned by another applier conflicts",
    ),
    (
        [entry("mgr", "Update", {RUNNING, APP})],
        vm({"running": True}, labels={"app": "new"}),
        [("mgr", ".metadata.labels.app"), ("mgr", ".spec.running")],
        (f'Apply failed with 2 conflicts: conflicts with "mgr" using {API}:\n'
        "- .metadata.labels.app\n- .spec.running"),
        "several conflicts are listed per manager",
    ),
    (
        [entry("kubectl", "Update", {RUNNING})],
        vm({"running": True}),
        [("kubectl", ".spec.running")],
        f'Apply failed with 1 conflict: conflict with "kubectl" using {API}: .spec.running',
        "the applier's own Update entry is a different manager",
    ),
]


@pytest.mark.parametrize(
    ("owners", "applied", "conflicts", "message"),
    [case[:4] for case in CONFLICT_CASES],
    ids=[case[4] for case in CONFLICT_CASES],
)
def test_apply_conflicts(
    owners: list[dict[str, Any]], applied: dict[str, Any],
    conflicts: list[tuple[str, str]], message: str,
) -> None:
    live = with_owners(vm({"running": False}, labels={"app": "old"}), *owners)
    with pytest.raises(ApplyConflict) as excinfo:
        apply(live, applied, manager="kubectl", force=False, api_version=API, now=T1)
    assert sorted(excinfo.value.conflicts) == conflicts
    assert excinfo.value.message == message
    assert str(excinfo.value) == message


def test_apply_replacing_another_managers_map_conflicts() -> None:
    live = with_owners(vm({"net": {"ip": "10.0.0.1"}}),
                       entry("ctrl", "Update", {("spec", "net", "ip")}))
    with pytest.raises(ApplyConflict) as excinfo:
        apply(live, vm({"net": "none"}), manager="kubectl", force=False, api_version=API, now=T1)
    assert excinfo.value.conflicts == [("ctrl", ".spec.net.ip")]


def test_apply_force_takes_ownership() -> None:
    live = with_owners(
        vm({"running": False, "other": 1}),
        entry("ui", "Update", {RUNNING, ("spec", "other")}),
        entry("ctl", "Update", {RUNNING}),
    )
    result = apply(live, vm({"running": True}), manager="kubectl", force=True,
                   api_version=API, now=T1)
    assert result["spec"] == {"running": True, "other": 1}
    assert ownership(result["metadata"]["managedFields"]) == {
        ("ui", "Update"): {("spec", "other")},
        ("kubectl", "Apply"): {RUNNING},
    }
    assert [e["manager"] for e in result["metadata"]["managedFields"]] == ["ui", "kubectl"]


def test_apply_removes_fields_the_manager_stopped_applying() -> None:
    live = with_owners(
        vm({"running": True, "extra": {"deep": 1}}, labels={"app": "web", "keep": "1"}),
        entry("kubectl", "Apply", {RUNNING, ("spec", "extra", "deep"), APP}),
        entry("ui", "Update", {("metadata", "labels", "keep")}),
    )
    result = apply(live, vm({"running": True}), manager="kubectl", force=False,
                   api_version=API, now=T1)
    assert result["spec"] == {"running": True}
    assert result["metadata"]["labels"] == {"keep": "1"}
    assert ownership(result["metadata"]["managedFields"])[("kubectl", "Apply")] == {RUNNING}


def test_apply_keeps_dropped_fields_still_owned_by_others() -> None:
    live = with_owners(
        vm({"running": True}, labels={"app": "web"}),
        entry("kubectl", "Apply", {RUNNING, APP}),
        entry("gitops", "Apply", {APP}),
    )
    result = apply(live, vm({"running": True}), manager="kubectl", force=False,
                   api_version=API, now=T1)
    assert result["metadata"]["labels"] == {"app": "web"}
    assert ownership(result["metadata"]["managedFields"]) == {
        ("kubectl", "Apply"): {RUNNING},
        ("gitops", "Apply"): {APP},
    }


def test_apply_does_not_remove_a_stale_path_that_grew_children() -> None:
    # kubectl once owned spec.net as a leaf; a controller has since filled it in as a map.
    live = with_owners(
        vm({"running": True, "net": {"ip": "10.0.0.1"}}),
        entry("kubectl", "Apply", {RUNNING, ("spec", "net")}),
        entry("ctrl", "Update", {("spec", "net", "ip")}),
    )
    result = apply(live, vm({"running": True}), manager="kubectl", force=False,
                   api_version=API, now=T1)
    assert result["spec"]["net"] == {"ip": "10.0.0.1"}


def test_apply_with_nothing_left_drops_the_entry() -> None:
    live = with_owners(vm(labels={"app": "web"}), entry("kubectl", "Apply", {APP}),
                       entry("ui", "Update", {("metadata", "labels", "x")}))
    result = apply(live, vm(), manager="kubectl", force=False, api_version=API, now=T1)
    assert "labels" not in result["metadata"]
    assert [e["manager"] for e in result["metadata"]["managedFields"]] == ["ui"]


def test_apply_updates_own_entry_in_place() -> None:
    live = with_owners(vm({"running": False}), entry("kubectl", "Apply", {RUNNING}),
                       entry("ui", "Update", {("spec", "x")}))
    result = apply(live, vm({"running": True}), manager="kubectl", force=False,
                   api_version="compute.evroclabs.net/v1beta1", now=T1)
    first = result["metadata"]["managedFields"][0]
    assert (first["manager"], first["time"], first["apiVersion"]) == (
        "kubectl", T1, "compute.evroclabs.net/v1beta1")


FINALIZER_CASES = [
    (["a"], ["a", "b"], [], ["a", "b"], "applied finalizers are added to live ones"),
    (["a", "b"], ["b"], [], ["b"], "finalizers the manager stopped applying are removed"),
    (["a", "b"], ["b"], ["a"], ["a", "b"], "finalizers owned by others are kept"),
    (["a"], [], [], None, "removing the last finalizer drops the list"),
]


@pytest.mark.parametrize(
    ("owned_before", "applied", "owned_by_other", "expected"),
    [case[:4] for case in FINALIZER_CASES],
    ids=[case[4] for case in FINALIZER_CASES],
)
def test_apply_finalizers_are_a_set(
    owned_before: list[str], applied: list[str], owned_by_other: list[str],
    expected: list[str] | None,
) -> None:
    owners = [entry("kubectl", "Apply", {("metadata", "finalizers", f) for f in owned_before})]
    if owned_by_other:
        owners.append(entry("ctrl", "Update",
                            {("metadata", "finalizers", f) for f in owned_by_other}))
    live = with_owners(vm(finalizers=sorted(set(owned_before) | set(owned_by_other))), *owners)
    applied_obj = vm(finalizers=applied) if applied else vm()
    result = apply(live, applied_obj, manager="kubectl", force=False, api_version=API, now=T1)
    assert result["metadata"].get("finalizers") == expected


# --- record_update -----------------------------------------------------------------------

def test_record_update_create_owns_everything() -> None:
    new = vm({"running": True}, labels={"app": "web"})
    [only] = record_update(None, new, manager="kubectl-create", api_version=API, now=T1)
    assert only["operation"] == "Update" and only["time"] == T1
    assert "subresource" not in only
    assert from_fields_v1(only["fieldsV1"]) == {RUNNING, APP}


X = ("spec", "x")
UPDATE_OLD_SPEC: dict[str, Any] = {"running": True, "diskRefs": [], "x": 1}
UPDATE_CASES = [
    ({}, {}, {("kubectl", "Apply"): {DISKS}, ("ctrl", "Update"): {RUNNING}, ("ui", "Update"): {X}},
     "unchanged write leaves ownership alone"),
    ({"running": False}, {},
     {("kubectl", "Apply"): {DISKS}, ("ui", "Update"): {X, RUNNING}},
     "changed field moves from its owner into the writer's existing entry"),
    ({"running": None}, {}, {("kubectl", "Apply"): {DISKS}, ("ui", "Update"): {X}},
     "removed field is dropped from every owner and emptied entries vanish"),
    ({}, {"labels": {"app": "web"}},
     {("kubectl", "Apply"): {DISKS}, ("ctrl", "Update"): {RUNNING}, ("ui", "Update"): {X, APP}},
     "added label is owned by the writer"),
    ({"diskRefs": ["d"]}, {},
     {("ctrl", "Update"): {RUNNING}, ("ui", "Update"): {X, DISKS}},
     "an update takes fields away from an applier"),
    ({"x": None}, {}, {("kubectl", "Apply"): {DISKS}, ("ctrl", "Update"): {RUNNING}},
     "the writer loses fields it removes itself"),
    ({"running": 1}, {},
     {("kubectl", "Apply"): {DISKS}, ("ui", "Update"): {X, RUNNING}},
     "a type change counts as a change even when values compare equal"),
]


@pytest.mark.parametrize(
    ("spec_changes", "metadata", "expected"),
    [case[:3] for case in UPDATE_CASES],
    ids=[case[3] for case in UPDATE_CASES],
)
def test_record_update_transfers_ownership(
    spec_changes: dict[str, Any], metadata: dict[str, Any],
    expected: dict[tuple[str, str], set[FieldPath]],
) -> None:
    old = with_owners(vm(UPDATE_OLD_SPEC), entry("kubectl", "Apply", {DISKS}),
                      entry("ctrl", "Update", {RUNNING}), entry("ui", "Update", {X}))
    spec = {k: v for k, v in {**UPDATE_OLD_SPEC, **spec_changes}.items() if v is not None}
    entries = record_update(old, vm(spec, **metadata), manager="ui", api_version=API, now=T1)
    assert ownership(entries) == {k: frozenset(v) for k, v in expected.items()}
    for e in entries:
        changed_hands = e["manager"] == "ui" and ownership([e])[("ui", "Update")] != {X}
        assert e["time"] == (T1 if changed_hands else T0)


def test_record_update_keeps_entry_order_and_appends_new_manager() -> None:
    old = with_owners(vm({"running": True, "a": 1, "b": 1}),
                      entry("first", "Update", {("spec", "a")}),
                      entry("second", "Apply", {("spec", "b")}))
    new = vm({"running": False, "a": 1, "b": 1})
    entries = record_update(old, new, manager="third", api_version=API, now=T1)
    assert [e["manager"] for e in entries] == ["first", "second", "third"]
    assert entries[0] == old["metadata"]["managedFields"][0]


def test_record_update_status_subresource_tracks_only_status() -> None:
    old = with_owners({**vm({"running": True}), "status": {"phase": "Pending"}},
                      entry("kubectl", "Apply", {RUNNING}))
    new = {**vm({"running": False}, labels={"x": "y"}), "status": {"phase": "Running"}}
    entries = record_update(old, new, manager="controller", api_version=API, now=T1,
                            subresource="status")
    assert entries[0] == old["metadata"]["managedFields"][0]
    assert entries[1]["subresource"] == "status"
    assert from_fields_v1(entries[1]["fieldsV1"]) == {("status", "phase")}


def test_record_update_ignores_request_managed_fields() -> None:
    old = with_owners(vm({"running": True}), entry("ui", "Update", {RUNNING}))
    new = with_owners(vm({"running": True}), entry("forged", "Update", {RUNNING}))
    entries = record_update(old, new, manager="x", api_version=API, now=T1)
    assert entries == old["metadata"]["managedFields"]
