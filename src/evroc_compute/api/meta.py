"""ObjectMeta: the metadata every object carries, its validation and its OpenAPI shape.

Kubernetes rules, applied to every kind: names are DNS-1123 subdomains (namespaces DNS-1123
labels), label keys and values and annotation keys follow the qualified-name rules.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any

from evroc_compute.api.schema import (
    FieldError,
    Schema,
    array,
    free_form,
    integer,
    invalid,
    obj,
    required,
    string,
    string_map,
)

# Used with fullmatch: `$` in a .match pattern would also accept a trailing newline.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_ANNOTATIONS_MAX_BYTES = 256 * 1024


_stamp_cache: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    """The current time at the second, as Kubernetes stamps it."""
    return rfc3339_second(time.time())


def rfc3339_second(t: float) -> str:
    """metav1.Time: a time at the second; formatted once per second (the last one is kept)."""
    global _stamp_cache
    second = int(t)
    if _stamp_cache[0] != second:
        _stamp_cache = (second, datetime.fromtimestamp(second, timezone.utc)
                        .strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _stamp_cache[1]


def format_time(t: float) -> str:
    """A precise time as RFC 3339 with microseconds (Kubernetes' MicroTime), for leases and back-off."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (with or without fraction), None if not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def dns1123_subdomain_errors(name: str) -> list[str]:
    problems = []
    if len(name) > 253:
        problems.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(name):
        problems.append("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                        "characters, '-' or '.', and must start and end with an alphanumeric "
                        "character (e.g. 'example.com', regex used for validation is "
                        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    return problems


def dns1123_label_errors(name: str) -> list[str]:
    problems = []
    if len(name) > 63:
        problems.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.fullmatch(name):
        problems.append("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                        "characters or '-', and must start and end with an alphanumeric "
                        "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
                        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
    return problems


def qualified_name_errors(key: str) -> list[str]:
    if key.count("/") > 1:
        return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and "
                "must start and end with an alphanumeric character, with an optional DNS "
                "subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    prefix, _, name = key.rpartition("/")
    problems = []
    if "/" in key and not prefix:
        problems.append("prefix part must be non-empty")
    elif prefix:
        problems.extend(f"prefix part {p}" for p in dns1123_subdomain_errors(prefix))
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME.fullmatch(name):
        problems.append("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                        "must start and end with an alphanumeric character (e.g. 'MyName',  or "
                        "'my.name',  or '123-abc', regex used for validation is "
                        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return problems


def label_value_errors(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _LABEL_VALUE.fullmatch(value):
        problems.append("a valid label must be an empty string or consist of alphanumeric "
                        "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                        "character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
                        "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    return problems


def validate_metadata(meta: dict[str, Any], *, namespaced: bool, namespace_kind: bool) -> list[FieldError]:
    """Check the user-settable parts of metadata (server-set fields are overwritten anyway).

    A part of the wrong type (labels that are not a map, a name that is not a string, ...)
    is reported as an error naming it and otherwise skipped; the schema validator reports
    the same field too, and admission keeps one error per field.
    """
    errors: list[FieldError] = []
    name = meta.get("name")
    if name is not None and not isinstance(name, str):
        errors.append(invalid("metadata.name", name, "must be a string"))
    elif not name and not meta.get("generateName"):
        errors.append(required("metadata.name", "Required value: name or generateName is required"))
    elif name:
        check = dns1123_label_errors if namespace_kind else dns1123_subdomain_errors
        errors.extend(invalid("metadata.name", name, p) for p in check(name))
    labels = _string_map(meta, "labels", errors)
    for key, value in labels.items():
        if not isinstance(key, str):
            errors.append(invalid("metadata.labels", key, "label keys must be strings"))
            continue
        errors.extend(invalid("metadata.labels", key, p) for p in qualified_name_errors(key))
        if not isinstance(value, str):
            errors.append(invalid(f"metadata.labels.{key}", value, "label values must be strings"))
        else:
            errors.extend(invalid("metadata.labels", value, p) for p in label_value_errors(value))
    annotations = _string_map(meta, "annotations", errors)
    size = 0
    for key, value in annotations.items():
        if not isinstance(key, str):
            errors.append(invalid("metadata.annotations", key, "annotation keys must be strings"))
            continue
        errors.extend(invalid("metadata.annotations", key, p) for p in qualified_name_errors(key))
        if not isinstance(value, str):
            errors.append(invalid(f"metadata.annotations.{key}", value, "annotation values must be strings"))
        else:
            size += len(key) + len(value)
    if size > _ANNOTATIONS_MAX_BYTES:
        errors.append(FieldError("metadata.annotations", "FieldValueTooLong",
                                 f"Too long: must have at most {_ANNOTATIONS_MAX_BYTES} bytes"))
    finalizers = meta.get("finalizers")
    if finalizers is not None and not isinstance(finalizers, list):
        errors.append(invalid("metadata.finalizers", finalizers, "must be a list of strings"))
        finalizers = None
    for index, finalizer in enumerate(finalizers or []):
        if not isinstance(finalizer, str) or qualified_name_errors(finalizer):
            errors.append(invalid(f"metadata.finalizers[{index}]", finalizer,
                                  "a finalizer must be a qualified name, e.g. 'example.com/cleanup'"))
    return errors


def _string_map(meta: dict[str, Any], part: str, errors: list[FieldError]) -> dict[Any, Any]:
    """metadata[part] if it is a map (null: empty); anything else is an error and empty."""
    value = meta.get(part)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(invalid(f"metadata.{part}", value, "must be a map of string keys to string values"))
        return {}
    return value


OBJECT_META: Schema = obj(
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    name=string("Name must be unique within a namespace. Cannot be updated."),
    generateName=string("Optional prefix used by the server to generate a unique name."),
    namespace=string("Namespace defines the space within which each name must be unique. "
                     "In evroc a namespace stands for a project."),
    uid=string("UID is the unique in time and space value for this object. Set by the server."),
    resourceVersion=string("An opaque value that represents the internal version of this object."),
    selfLink=string("Deprecated; not set by this server (kept so that clients sending it "
                    "pass strict validation)."),
    generation=integer("A sequence number representing a specific generation of the desired state."),
    creationTimestamp=string("The time this object was created. Set by the server."),
    deletionTimestamp=string("The time after which this resource will be deleted. Set by the server."),
    deletionGracePeriodSeconds=integer("Seconds allowed for graceful termination."),
    labels=string_map("Map of string keys and values that can be used to organize and "
                      "categorize objects. Queried with label selectors."),
    annotations=string_map("Unstructured key value map stored with a resource."),
    finalizers=array(string(), "Must be empty before the object is deleted from the registry."),
    ownerReferences=array(free_form(), "Objects depended on by this object."),
    managedFields=array(free_form(), "Which field managers own which fields. Set by the server."),
)
