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

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ANNOTATIONS_MAX_BYTES = 256 * 1024


_stamp_cache: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    """The current time at the second, as Kubernetes stamps it; formatted once per second."""
    global _stamp_cache
    second = int(time.time())
    if _stamp_cache[0] != second:
        _stamp_cache = (second, datetime.fromtimestamp(second, timezone.utc)
                        .strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _stamp_cache[1]


def dns1123_subdomain_errors(name: str) -> list[str]:
    problems = []
    if len(name) > 253:
        problems.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(name):
        problems.append("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                        "characters, '-' or '.', and must start and end with an alphanumeric "
                        "character (e.g. 'example.com', regex used for validation is "
                        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    return problems


def dns1123_label_errors(name: str) -> list[str]:
    problems = []
    if len(name) > 63:
        problems.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(name):
        problems.append("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                        "characters or '-', and must start and end with an alphanumeric "
                        "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
                        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
    return problems


def qualified_name_errors(key: str) -> list[str]:
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
    elif not _QUALIFIED_NAME.match(name):
        problems.append("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                        "must start and end with an alphanumeric character (e.g. 'MyName',  or "
                        "'my.name',  or '123-abc', regex used for validation is "
                        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return problems


def label_value_errors(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        problems.append("a valid label must be an empty string or consist of alphanumeric "
                        "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                        "character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
                        "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    return problems


def validate_metadata(meta: dict[str, Any], *, namespaced: bool, namespace_kind: bool) -> list[FieldError]:
    """Check the user-settable parts of metadata (server-set fields are overwritten anyway)."""
    errors: list[FieldError] = []
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        errors.append(required("metadata.name", "Required value: name or generateName is required"))
    elif name:
        check = dns1123_label_errors if namespace_kind else dns1123_subdomain_errors
        errors.extend(invalid("metadata.name", name, p) for p in check(name))
    for key, value in (meta.get("labels") or {}).items():
        errors.extend(invalid("metadata.labels", key, p) for p in qualified_name_errors(key))
        if not isinstance(value, str):
            errors.append(invalid(f"metadata.labels.{key}", value, "label values must be strings"))
        else:
            errors.extend(invalid("metadata.labels", value, p) for p in label_value_errors(value))
    annotations = meta.get("annotations") or {}
    for key, value in annotations.items():
        errors.extend(invalid("metadata.annotations", key, p) for p in qualified_name_errors(key))
        if not isinstance(value, str):
            errors.append(invalid(f"metadata.annotations.{key}", value, "annotation values must be strings"))
    size = sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str))
    if size > _ANNOTATIONS_MAX_BYTES:
        errors.append(FieldError("metadata.annotations", "FieldValueTooLong",
                                 f"Too long: must have at most {_ANNOTATIONS_MAX_BYTES} bytes"))
    for index, finalizer in enumerate(meta.get("finalizers") or []):
        if not isinstance(finalizer, str) or qualified_name_errors(finalizer):
            errors.append(invalid(f"metadata.finalizers[{index}]", finalizer,
                                  "a finalizer must be a qualified name, e.g. 'example.com/cleanup'"))
    return errors


OBJECT_META: Schema = obj(
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    name=string("Name must be unique within a namespace. Cannot be updated."),
    generateName=string("Optional prefix used by the server to generate a unique name."),
    namespace=string("Namespace defines the space within which each name must be unique. "
                     "In evroc a namespace stands for a project."),
    uid=string("UID is the unique in time and space value for this object. Set by the server."),
    resourceVersion=string("An opaque value that represents the internal version of this object."),
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
