"""Who wrote each stored revision a watch delivers, and what the write changed.

A watch opened before the first create sees every revision of every object it follows, so the
revisions of a kind are the stored writes of that kind.  Each revision is compared with the
previous revision of the same object: the leaf fields that differ (`metadata.labels`,
`.annotations`, `.finalizers` entries, and everything under the other top-level keys, lists
whole, as the server's managedFields tracks them) were changed by this write, and the server
moves every field a write changes to the writer's managedFields entry.  So the writer is the
manager that owns the changed fields in the new revision (its `manager` is the client's
fieldManager, or its user agent's first word), reliable whatever the clock's resolution, and
the write is named by the areas it changed (`status`, `spec.host`, `metadata.finalizers`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

Path = tuple[str, ...]
_UNTRACKED = frozenset({"apiVersion", "kind", "metadata"})
_GONE: Any = object()


def _walk(value: Any, path: Path, out: dict[Path, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _walk(child, (*path, key), out)
    else:
        out[path] = value


def leaves(obj: dict[str, Any]) -> dict[Path, Any]:
    """Every tracked leaf field of `obj` and its value."""
    out: dict[Path, Any] = {}
    meta = obj.get("metadata") or {}
    for section in ("labels", "annotations"):
        for key, value in (meta.get(section) or {}).items():
            out[("metadata", section, key)] = value
    for finalizer in meta.get("finalizers") or []:
        out[("metadata", "finalizers", finalizer)] = True
    for key, value in obj.items():
        if key not in _UNTRACKED:
            _walk(value, (key,), out)
    return out


def _owned(fields: dict[str, Any], prefix: Path, out: set[Path]) -> None:
    """Decode a fieldsV1 tree (`f:name`, `v:"value"` keys) into paths."""
    for key, child in fields.items():
        if key == ".":
            continue
        name = key[2:]
        if key.startswith("v:"):
            name = name.strip('"')
        path = (*prefix, name)
        if isinstance(child, dict) and any(k != "." for k in child):
            _owned(child, path, out)
        else:
            out.add(path)


def owner(obj: dict[str, Any], path: Path) -> str | None:
    """The manager whose managedFields entry holds `path` (or a prefix of it)."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        paths: set[Path] = set()
        _owned(entry.get("fieldsV1") or {}, (), paths)
        if any(path[:len(p)] == p for p in paths):
            return str(entry.get("manager") or "?")
    return None


def area(path: Path) -> str:
    """How a changed field is reported: status whole, otherwise its first two levels."""
    return "status" if path[0] == "status" else ".".join(path[:2])


def state(obj: dict[str, Any]) -> str | None:
    """What a status says in one word: a VM's status, an instance's phase, or the reason of
    the Ready condition (a Disk's)."""
    status = obj.get("status") or {}
    if status.get("virtualMachineStatus") or status.get("phase"):
        return str(status.get("virtualMachineStatus") or status.get("phase"))
    return next((str(c.get("reason")) for c in status.get("conditions") or []
                 if c.get("type") == "Ready"), None)


class Writes:
    """Revisions per kind, and per (kind, writer, what the write changed)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str, str], dict[Path, Any]] = {}
        self.revisions: Counter[str] = Counter()
        self.by_writer: Counter[tuple[str, str, str]] = Counter()
        self.states: dict[tuple[str, str, str], str | None] = {}

    def known(self, kind: str, obj: dict[str, Any]) -> None:
        """An object as it was before the watch started (its next revision is a write)."""
        meta = obj.get("metadata") or {}
        key = (kind, meta.get("namespace") or "", meta.get("name") or "")
        self.last[key], self.states[key] = leaves(obj), state(obj)

    def seen(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (kind, meta.get("namespace") or "", meta.get("name") or "")
        if event_type == "DELETED":
            self.last.pop(key, None)
            self.states.pop(key, None)
            return
        now = leaves(obj)
        before = self.last.get(key)
        self.last[key] = now
        self.revisions[kind] += 1
        if before is None:
            self.states[key] = state(obj)
            managers = sorted({str(e.get("manager")) for e in meta.get("managedFields") or []})
            self.by_writer[kind, "+".join(managers) or "?", "create"] += 1
            return
        changed = [p for p in before.keys() | now.keys() if before.get(p, _GONE) != now.get(p, _GONE)]
        # A field removed has no owner left to name: "?" unless another changed field has one.
        writers = sorted({owner(obj, p) or "?" for p in changed if p in now}) or \
            (["?"] if changed else ["-"])
        what = "+".join(sorted({area(p) for p in changed})) or "(nothing tracked)"
        if state(obj) != self.states.get(key):
            what += f" -> {state(obj)}"
        self.states[key] = state(obj)
        self.by_writer[kind, "+".join(writers), what] += 1

    def report(self, per: int) -> dict[str, Any]:
        """Revisions per kind and per writer, as totals and per `per` (VMs)."""
        per = max(1, per)
        return {"per_kind": {k: n / per for k, n in sorted(self.revisions.items())},
                "total": dict(self.revisions),
                "by_writer": [{"kind": k, "writer": w, "changed": what, "count": n,
                               "per_vm": n / per}
                              for (k, w, what), n in sorted(self.by_writer.items())]}

