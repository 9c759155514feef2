"""Events: core v1 Event, as kube-apiserver serves it (`kubectl describe`, `kubectl events`),
and events.k8s.io/v1 Event, the newer shape of the same objects (client-go's new recorder).

An Event says what happened to one object (`involvedObject`): a reason in CamelCase, a message
for a person, Normal or Warning. Repeats of the same event are aggregated by their writer
(`count`, `lastTimestamp`, `series`), not stored again. The server forgets an event a TTL
after its last write (`serve --event-ttl`, 1 h by default, as kube-apiserver's `--event-ttl`).
Any client may post events; the controllers post the transitions of the objects they own.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api.kinds import Column, Kind, StoredAs
from evroc_compute.api.schema import FieldError, integer, invalid, obj, required, string
from evroc_compute.api.tables import age, path

EVENT_TYPES = ("Normal", "Warning")

_TIME = {"type": "string", "format": "date-time"}
_MICRO_TIME = {"type": "string", "format": "date-time",
               "description": "MicroTime: RFC 3339 with microseconds."}

OBJECT_REFERENCE = obj(
    "The object this event is about.",
    apiVersion=string("API version of the referent."),
    kind=string("Kind of the referent."),
    namespace=string("Namespace of the referent."),
    name=string("Name of the referent."),
    uid=string("UID of the referent."),
    resourceVersion=string("The referent's resourceVersion the event was about."),
    fieldPath=string("A part of the referent, if the event is about a part of it."))

_SERIES = obj("Data about the series this event represents (repeats of it).",
              count=integer("How many times the event happened in this series.", minimum=0),
              lastObservedTime={**_MICRO_TIME, "description": "When it last happened."})

_FIELDS = {
    "involvedObject": OBJECT_REFERENCE,
    "reason": string("Why the action was taken, short and CamelCase, e.g. Started."),
    "message": string("What happened, for a person."),
    "type": string("Normal or Warning.", enum=EVENT_TYPES),
    "count": integer("How many times this event occurred.", minimum=0),
    "firstTimestamp": {**_TIME, "description": "When the event was first recorded."},
    "lastTimestamp": {**_TIME, "description": "When the event was most recently recorded."},
    "eventTime": {**_MICRO_TIME, "description": "When the event was first observed."},
    "series": _SERIES,
    "source": obj("The component that reported the event.",
                  component=string("The reporting component."),
                  host=string("The host it runs on.")),
    "action": string("What action was taken or failed, e.g. Scheduling."),
    "related": OBJECT_REFERENCE,
    "reportingComponent": string("The controller that emitted the event, e.g. "
                                 "compute.evroclabs.net/vm-controller."),
    "reportingInstance": string("The instance of the controller, e.g. the host's name."),
}


def last_seen(event: dict[str, Any]) -> str | None:
    """When the event last happened, from whichever of its times the writer filled in."""
    series = event.get("series") or {}
    return (series.get("lastObservedTime") or event.get("lastTimestamp")
            or event.get("eventTime") or event.get("firstTimestamp")
            or event["metadata"].get("creationTimestamp"))


def _object(event: dict[str, Any]) -> str:
    ref = event.get("involvedObject") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _check(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    """kube-apiserver's rules for an event: it names its object, and in the object's namespace."""
    errors: list[FieldError] = []
    ref = new.get("involvedObject")
    if not isinstance(ref, dict) or not (ref.get("name") or ref.get("uid")):
        errors.append(required("involvedObject", "Required value: an event names the object it "
                               "is about (involvedObject.kind and involvedObject.name)"))
    else:
        namespace = new["metadata"].get("namespace")
        if ref.get("namespace") and ref["namespace"] != namespace:
            errors.append(invalid("involvedObject.namespace", ref["namespace"],
                                  f"does not match the event's namespace {namespace}"))
    if new.get("eventTime") and not new.get("reportingComponent"):
        errors.append(required("reportingComponent", "Required value: an event with eventTime "
                               "names the controller that reports it"))
    return errors


EVENT = Kind(
    group="", version="v1", kind="Event", plural="events", namespaced=True,
    short_names=("ev",), description="Event is a report of an event somewhere in the cloud: "
    "what happened to one object, why, and how often.",
    spec=None, status=None, fields=tuple(_FIELDS.items()), name_column=False,
    managed_fields=False, field_labels=frozenset({
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
        "involvedObject.fieldPath", "reason", "reportingComponent", "type"}),
    semantic_check=_check,
    columns=(
        Column("Last Seen", "string", lambda e: _ago(last_seen(e)), "Time since it last happened."),
        Column("Type", "string", path("type"), "Normal or Warning."),
        Column("Reason", "string", path("reason"), "Why."),
        Column("Object", "string", _object, "The object it is about."),
        Column("Message", "string", path("message"), "What happened."),
        Column("Source", "string", lambda e: (e.get("source") or {}).get("component")
               or e.get("reportingComponent", ""), "Who reported it.", priority=1),
        Column("First Seen", "string", lambda e: _ago(e.get("firstTimestamp") or e.get("eventTime")),
               "Time since it first happened.", priority=1),
        Column("Count", "integer", lambda e: (e.get("series") or {}).get("count") or e.get("count")
               or 1, "How often.", priority=1),
        Column("Name", "string", path("metadata", "name"), "The event's name.", priority=1),
    ),
)


def _ago(stamp: str | None) -> str:
    return age({"metadata": {"creationTimestamp": stamp}}) if stamp else "<unknown>"



# core v1 field <-> events.k8s.io/v1 field, as kube's conversion maps them; the rest
# (eventTime, series, action, reason, related, type, metadata) keep their names.
_RENAMED = (("involvedObject", "regarding"), ("message", "note"),
            ("reportingComponent", "reportingController"), ("source", "deprecatedSource"),
            ("firstTimestamp", "deprecatedFirstTimestamp"),
            ("lastTimestamp", "deprecatedLastTimestamp"), ("count", "deprecatedCount"))


def to_events_v1(core: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in core.items() if k not in dict(_RENAMED)}
    for old, new in _RENAMED:
        if old in core:
            out[new] = core[old]
    out["apiVersion"], out["kind"] = "events.k8s.io/v1", "Event"
    return out


def from_events_v1(event: dict[str, Any]) -> dict[str, Any]:
    new_names = {new: old for old, new in _RENAMED}
    out = {new_names.get(k, k): v for k, v in event.items()}
    out["apiVersion"], out["kind"] = "v1", "Event"
    return out


def _check_v1(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    """events.k8s.io/v1 asks more of a new event than core v1 (kube's ValidateEventCreate)."""
    errors: list[FieldError] = []
    if old is None:
        for field in ("eventTime", "reportingController", "reportingInstance", "action",
                      "reason", "type"):
            if not new.get(field):
                errors.append(required(field, f"Required value: an events.k8s.io/v1 Event "
                                              f"needs {field}"))
    ref = new.get("regarding") or {}
    namespace = new["metadata"].get("namespace")
    if ref.get("namespace") and ref["namespace"] != namespace:
        errors.append(invalid("regarding.namespace", ref["namespace"],
                              f"does not match the event's namespace {namespace}"))
    return errors


def _view_fields() -> dict[str, Any]:
    renamed = dict(_RENAMED)
    fields = {renamed.get(k, k): v for k, v in _FIELDS.items()}
    fields["note"] = string("What happened, for a person (at most 1 kB).", max_length=1024)
    return fields


EVENT_V1 = Kind(
    # No short name: `ev` is core's (kubectl warns when two resources share one).
    group="events.k8s.io", version="v1", kind="Event", plural="events", namespaced=True,
    description="Event is a report of an event somewhere in the cloud "
    "(the events.k8s.io/v1 shape of the same objects as core v1 Event).",
    spec=None, status=None, fields=tuple(_view_fields().items()), name_column=False,
    managed_fields=False,
    field_labels=frozenset({"regarding.kind", "regarding.namespace", "regarding.name",
                            "regarding.uid", "regarding.apiVersion", "reason",
                            "reportingController", "type"}),
    semantic_check=_check_v1,
    stored_as=StoredAs(EVENT, from_events_v1, to_events_v1),
    columns=tuple(Column(c.name, c.type, (lambda read: lambda e: read(from_events_v1(e)))(
        c.value), c.description, c.priority) for c in EVENT.columns),
)

KINDS = (EVENT, EVENT_V1)
