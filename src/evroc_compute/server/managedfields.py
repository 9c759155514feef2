"""Server-side apply and `metadata.managedFields` bookkeeping, as pure functions over dicts.

`kubectl apply --server-side` and every client that reads `managedFields` rely on the
apiserver tracking which manager owns which field, reporting conflicts when one manager
would overwrite another's value, and removing fields a manager stops applying. This
module implements a deliberately simplified version of Kubernetes' structured-merge-diff:

* Tracked paths: `metadata.labels.*`, `metadata.annotations.*`, `metadata.finalizers` (a
  set, one path per entry) and everything under the other top-level keys except
  `apiVersion`, `kind`, `metadata` and `status`. Writes to the status subresource track
  only `status`.
* Maps recurse; lists (except finalizers), scalars and empty maps are atomic leaves, so
  no per-kind schema (list-map keys etc.) is needed.
* A manager is identified, as in Kubernetes, by (manager, operation, subresource): an
  applier's own `Update` entry is a different manager and can conflict with its apply.

Paths are tuples of keys; a finalizer path is `("metadata", "finalizers", <value>)`.
Nothing here mutates its inputs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ApplyConflict",
    "FieldPath",
    "apply",
    "field_set",
    "from_fields_v1",
    "record_update",
    "to_fields_v1",
]

FieldPath = tuple[str, ...]

_FINALIZERS: FieldPath = ("metadata", "finalizers")
_UNTRACKED_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "status", "managedFields"})
_MISSING: Any = object()


class ApplyConflict(Exception):
    """An apply would change fields owned by other managers and `force` was not set."""

    def __init__(self, conflicts: list[tuple[str, str]], message: str) -> None:
        super().__init__(message)
        self.conflicts = conflicts
        self.message = message


# --- field sets --------------------------------------------------------------------------


def _walk(value: Any, path: FieldPath, out: dict[FieldPath, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _walk(child, (*path, key), out)
    else:
        out[path] = value


def _flatten(obj: dict[str, Any], subresource: str = "") -> dict[FieldPath, Any]:
    """Map every tracked leaf path of `obj` to its value."""
    out: dict[FieldPath, Any] = {}
    if subresource == "status":
        if "status" in obj:
            _walk(obj["status"], ("status",), out)
        return out
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for section in ("labels", "annotations"):
            entries = meta.get(section)
            if isinstance(entries, dict):
                for key, value in entries.items():
                    out[("metadata", section, key)] = value
        finalizers = meta.get("finalizers")
        if isinstance(finalizers, list):
            for finalizer in finalizers:
                if isinstance(finalizer, str):
                    out[(*_FINALIZERS, finalizer)] = finalizer
    for key, value in obj.items():
        if key not in _UNTRACKED_TOP_LEVEL:
            _walk(value, (key,), out)
    return out


def field_set(obj: dict[str, Any], subresource: str = "") -> frozenset[FieldPath]:
    """The tracked leaf paths present in `obj` for a write to `subresource`."""
    return frozenset(_flatten(obj, subresource))


def _same(a: Any, b: Any) -> bool:
    # Stricter than ==, which would call True == 1 == 1.0 unchanged and hide real edits.
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --- fieldsV1 encoding -------------------------------------------------------------------


def to_fields_v1(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """Encode paths as a FieldsV1 trie: `f:<key>` per level, `{}` at leaves."""
    return _encode(sorted(set(paths)), ())


def _encode(suffixes: list[FieldPath], prefix: FieldPath) -> dict[str, Any]:
    node: dict[str, Any] = {}
    groups: dict[str, list[FieldPath]] = {}
    owns_self = False
    for suffix in suffixes:
        if suffix:
            groups.setdefault(suffix[0], []).append(suffix[1:])
        else:
            owns_self = True
    if owns_self and groups:
        # Kubernetes' marker for "this node itself is owned as well as its children".
        node["."] = {}
    for key, rest in groups.items():
        encoded = "v:" + json.dumps(key) if prefix == _FINALIZERS else "f:" + key
        node[encoded] = _encode(rest, (*prefix, key))
    return node


def from_fields_v1(fields: dict[str, Any]) -> frozenset[FieldPath]:
    """Decode a FieldsV1 trie produced by `to_fields_v1` back into paths."""
    out: set[FieldPath] = set()
    _decode(fields, (), out)
    return frozenset(out)


def _decode(node: dict[str, Any], prefix: FieldPath, out: set[FieldPath]) -> None:
    for encoded, child in node.items():
        if encoded == ".":
            if prefix:
                out.add(prefix)
            continue
        if encoded.startswith("f:"):
            key = encoded[2:]
        elif encoded.startswith("v:"):
            try:
                value = json.loads(encoded[2:])
            except ValueError:
                continue
            if not isinstance(value, str):
                continue
            key = value
        else:
            # `k:`/`i:` list-item keys come from real Kubernetes schemas we never produce.
            continue
        path = (*prefix, key)
        if isinstance(child, dict) and child:
            _decode(child, path, out)
        else:
            out.add(path)


# --- managedFields entries ---------------------------------------------------------------


def _entries(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    if obj is None:
        return []
    meta = obj.get("metadata")
    entries = meta.get("managedFields") if isinstance(meta, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _is(entry: dict[str, Any], manager: str, operation: str, subresource: str) -> bool:
    return (
        entry.get("manager") == manager
        and entry.get("operation") == operation
        and (entry.get("subresource") or "") == subresource
    )


def _paths(entry: dict[str, Any]) -> frozenset[FieldPath]:
    fields = entry.get("fieldsV1")
    return from_fields_v1(fields) if isinstance(fields, dict) else frozenset()


def _new_entry(
    manager: str, operation: str, api_version: str, now: str, subresource: str,
    paths: Iterable[FieldPath],
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _with_paths(entry: dict[str, Any], paths: frozenset[FieldPath]) -> dict[str, Any]:
    updated = copy.deepcopy(entry)
    updated["fieldsV1"] = to_fields_v1(paths)
    return updated


def _dotted(path: FieldPath) -> str:
    if path[:2] == _FINALIZERS and len(path) == 3:
        return f".metadata.finalizers[={json.dumps(path[2])}]"
    return "".join("." + key for key in path)


def _print_manager(entry: dict[str, Any]) -> str:
    # Same rendering as kube-apiserver's printManager: only Update entries are versioned.
    text = json.dumps(entry.get("manager", ""))
    if entry.get("subresource"):
        text += f" with subresource {json.dumps(entry['subresource'])}"
    if entry.get("operation") == "Update":
        text += f" using {entry.get('apiVersion', '')}"
    return text


def _conflict_message(found: list[tuple[str, FieldPath]]) -> str:
    if len(found) == 1:
        who, path = found[0]
        return f"Apply failed with 1 conflict: conflict with {who}: {_dotted(path)}"
    by_manager: dict[str, list[FieldPath]] = {}
    for who, path in found:
        by_manager.setdefault(who, []).append(path)
    lines: list[str] = []
    for who in sorted(by_manager):
        lines.append(f"conflicts with {who}:")
        lines.extend(f"- {_dotted(path)}" for path in by_manager[who])
    return f"Apply failed with {len(found)} conflicts: " + "\n".join(lines)


# --- object surgery ----------------------------------------------------------------------


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: FieldPath) -> None:
    if path[:2] == _FINALIZERS:
        meta = obj["metadata"]
        meta["finalizers"] = [f for f in meta.get("finalizers", []) if f != path[2]]
        if not meta["finalizers"]:
            del meta["finalizers"]
        return
    parents = [obj]
    for key in path[:-1]:
        parents.append(parents[-1][key])
    del parents[-1][path[-1]]
    # Drop maps emptied by the removal so no unowned `{}` husks are left behind;
    # metadata itself and the object root always stay.
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth] or path[:depth] == ("metadata",):
            break
        del parents[depth - 1][path[depth - 1]]


def _merge_applied(live: dict[str, Any], applied: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(live)
    for key in ("apiVersion", "kind"):
        if key not in merged and key in applied:
            merged[key] = applied[key]
    _merge(merged, {k: v for k, v in applied.items() if k not in _UNTRACKED_TOP_LEVEL})
    applied_meta = applied.get("metadata")
    if isinstance(applied_meta, dict):
        meta = merged.setdefault("metadata", {})
        for section in ("labels", "annotations"):
            if isinstance(applied_meta.get(section), dict):
                if not isinstance(meta.get(section), dict):
                    meta[section] = {}
                meta[section].update(applied_meta[section])
        if isinstance(applied_meta.get("finalizers"), list):
            finalizers = list(meta.get("finalizers") or [])
            finalizers += [f for f in applied_meta["finalizers"] if f not in finalizers]
            meta["finalizers"] = finalizers
    return merged


# --- public operations -------------------------------------------------------------------


def apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    *,
    manager: str,
    force: bool,
    api_version: str,
    now: str,
) -> dict[str, Any]:
    """Server-side apply `applied` onto `live` as `manager`; returns the new object.

    Raises ApplyConflict when a field owned by another manager would change value and
    `force` is false. With `force`, the other managers lose those fields.
    """
    applied_paths = field_set(applied)
    own_entry = _new_entry(manager, "Apply", api_version, now, "", applied_paths)
    if live is None:
        created = copy.deepcopy(applied)
        created.setdefault("metadata", {})["managedFields"] = [own_entry] if applied_paths else []
        return created

    entries = _entries(live)
    own_index = next(
        (i for i, e in enumerate(entries) if _is(e, manager, "Apply", "")), None
    )
    previous = _paths(entries[own_index]) if own_index is not None else frozenset()
    others = {i: _paths(e) for i, e in enumerate(entries) if i != own_index}

    merged = _merge_applied(live, applied)
    live_flat, merged_flat = _flatten(live), _flatten(merged)

    # A conflict is any change to a value another manager owns, which also catches the
    # structural cases (a scalar replacing someone's map, or the reverse).
    lost: dict[int, set[FieldPath]] = {}
    found: list[tuple[str, FieldPath]] = []
    conflicts: list[tuple[str, str]] = []
    for i, paths in others.items():
        for path in sorted(paths):
            if path in live_flat and not _same(merged_flat.get(path, _MISSING), live_flat[path]):
                lost.setdefault(i, set()).add(path)
                found.append((_print_manager(entries[i]), path))
                conflicts.append((str(entries[i].get("manager", "")), _dotted(path)))
    if found and not force and manager == _KUBECTL and all(
            path in _last_applied_fields(live) for _, path in found):
        force = True  # kube-apiserver's lastAppliedManager: CSA -> SSA upgrade, no conflict
    if found and not force:
        raise ApplyConflict(conflicts, _conflict_message(found))
    others = {i: paths - lost.get(i, set()) for i, paths in others.items()}

    still_owned = frozenset().union(*others.values()) if others else frozenset()
    for path in sorted(previous - applied_paths - still_owned, key=len, reverse=True):
        # Only remove what is still a leaf; a path that has since grown children would
        # take other managers' fields with it.
        if path in merged_flat:
            _remove(merged, path)

    new_entries: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if i == own_index:
            if applied_paths:
                new_entries.append(own_entry)
        elif others[i]:
            new_entries.append(_with_paths(entry, others[i]) if i in lost else copy.deepcopy(entry))
    if own_index is None and applied_paths:
        new_entries.append(own_entry)
    merged.setdefault("metadata", {})["managedFields"] = new_entries
    annotations = merged["metadata"].get("annotations")
    if manager == _KUBECTL and isinstance(annotations, dict) and _LAST_APPLIED in annotations:
        # kube-apiserver's lastAppliedUpdater: keep the client-side apply annotation in step
        # so a later plain `kubectl apply` diffs against what was applied last.
        config = copy.deepcopy(applied)
        config_annotations = config.get("metadata", {}).get("annotations")
        if isinstance(config_annotations, dict):
            config_annotations.pop(_LAST_APPLIED, None)
            if not config_annotations:
                del config["metadata"]["annotations"]
        annotations[_LAST_APPLIED] = json.dumps(config, separators=(",", ":")) + "\n"
    return merged


_KUBECTL = "kubectl"
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _last_applied_fields(live: dict[str, Any]) -> frozenset[FieldPath]:
    """The fields a client-side `kubectl apply` last set, from its annotation."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    try:
        config = json.loads(annotations.get(_LAST_APPLIED) or "null")
    except ValueError:
        return frozenset()
    return field_set(config) if isinstance(config, dict) else frozenset()


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    api_version: str,
    now: str,
    subresource: str = "",
) -> list[dict[str, Any]]:
    """managedFields for a non-apply write (create, PUT, patch, status write).

    Fields the write changed move to `manager`'s Update entry; other managers lose them.
    Ownership always derives from `old`'s managedFields, never the request's. Entries that
    do not change are returned as they are in `old`, which callers own (a private copy).
    """
    new_flat = _flatten(new, subresource)
    if old is None:
        if not new_flat:
            return []
        return [_new_entry(manager, "Update", api_version, now, subresource, new_flat)]

    old_flat = _flatten(old, subresource)
    changed = {
        path
        for path in old_flat.keys() | new_flat.keys()
        if not _same(old_flat.get(path, _MISSING), new_flat.get(path, _MISSING))
    }
    gained = frozenset(path for path in changed if path in new_flat)

    result: list[dict[str, Any]] = []
    own_found = False
    for entry in _entries(old):
        paths = _paths(entry)
        if _is(entry, manager, "Update", subresource):
            own_found = True
            owned = (paths - changed) | gained
            if gained:
                # Gaining fields is a fresh write by this manager: restamp time/apiVersion.
                result.append(_new_entry(manager, "Update", api_version, now, subresource, owned))
            elif owned:
                result.append(_with_paths(entry, owned) if owned != paths else entry)
            continue
        remaining = paths - changed
        if remaining == paths:
            result.append(entry)
        elif remaining:
            result.append(_with_paths(entry, remaining))
    if not own_found and gained:
        result.append(_new_entry(manager, "Update", api_version, now, subresource, gained))
    return result
