"""Admission: turn a decoded request body into an object fit to store, or a Status.

Order, as in kube-apiserver: type/identity checks (400), strict decoding (400 with the
unknown fields, or Warning headers), defaults, schema validation and metadata rules plus
the kind's own semantic rules (422 with every field at fault at once).
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api.kinds import Kind
from evroc_compute.api.meta import validate_metadata
from evroc_compute.api.schema import FieldError, prune
from evroc_compute.server import errors

FIELD_VALIDATION = ("Strict", "Warn", "Ignore")


def field_validation(query: dict[str, str]) -> str:
    mode = query.get("fieldValidation", "Warn") or "Warn"
    if mode not in FIELD_VALIDATION:
        raise errors.bad_request(f'fieldValidation must be one of Strict, Warn or Ignore, not '
                                 f'"{mode}"', field="fieldValidation")
    return mode


def check_identity(kind: Kind, body: Any) -> dict[str, Any]:
    """The body must be an object of this endpoint's kind."""
    if not isinstance(body, dict):
        raise errors.bad_request(f"the request body must be a JSON or YAML object, not "
                                 f"{type(body).__name__}")
    if kind.builtin:
        # Built-in kinds decode with the endpoint's kind as the default, as kube-apiserver
        # does: the Python client's V1Namespace(metadata=...) carries no apiVersion/kind.
        body["apiVersion"] = body.get("apiVersion") or kind.api_version
        body["kind"] = body.get("kind") or kind.kind
    api_version, kind_name = body.get("apiVersion"), body.get("kind")
    if not api_version or not kind_name:
        missing = "apiVersion" if not api_version else "kind"
        raise errors.bad_request(f"Object '{missing}' is missing in the request body; expected "
                                 f"apiVersion {kind.api_version}, kind {kind.kind}",
                                 field=missing, cause_type="FieldValueRequired")
    if api_version != kind.api_version:
        raise errors.bad_request(f"the API version in the data ({api_version}) does not match the "
                                 f"expected API version ({kind.api_version})", field="apiVersion")
    if kind_name != kind.kind:
        raise errors.bad_request(f"the kind in the data ({kind_name}) does not match the expected "
                                 f"kind ({kind.kind}) for {kind.plural}", field="kind")
    metadata = body.get("metadata")
    if metadata is None:
        body["metadata"] = {}
    elif not isinstance(metadata, dict):
        raise errors.bad_request("metadata must be an object", field="metadata")
    return body


def admit(kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None, *, mode: str,
          name: str) -> tuple[dict[str, Any], list[str]]:
    """Validate and default `obj` in place; returns it (pruned if needed) and warnings."""
    field_errors: list[FieldError] = []
    unknown: list[str] = []
    kind.validator(obj, "", field_errors, unknown)
    # Unknown metadata fields are unknown like any other: rejected under Strict, pruned
    # otherwise, never stored. selfLink is known (old clients send it) but never stored,
    # as in Kubernetes since 1.20.
    obj["metadata"].pop("selfLink", None)
    warnings: list[str] = []
    if unknown:
        if mode == "Strict":
            shown = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise errors.ApiError(400, "BadRequest", f"strict decoding error: {shown}", name=name,
                                  kind=kind, causes=[{"type": "FieldValueInvalid",
                                                      "message": f'unknown field "{u}"',
                                                      "field": u} for u in unknown])
        if mode == "Warn":
            warnings = [f'unknown field "{u}"' for u in unknown]
        obj = prune(obj, kind.schema)
    # The schema already reported metadata parts of the wrong type: one error per field.
    reported = {e.field for e in field_errors}
    field_errors += [e for e in validate_metadata(obj["metadata"], namespaced=kind.namespaced,
                                                  namespace_kind=kind.plural == "namespaces")
                     if e.field not in reported]
    if not field_errors:
        field_errors += kind.semantic_check(obj, old)
    if field_errors:
        raise errors.invalid(kind, name, field_errors)
    return obj, warnings
