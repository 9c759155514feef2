"""Structural schemas: one definition per field drives validation, defaults and OpenAPI.

A kind's schema is a plain OpenAPI v3 dict built with the helpers below, so the document
served at /openapi/v3 (and read by `kubectl explain`) is literally what admission checks.
`compile_schema` turns it into a tree of small closures once at import time; validating an
object is then a walk with no schema interpretation on the hot path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field, shaped like a Kubernetes StatusCause."""

    field: str
    type: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
    detail: str
    value: Any = None

    @property
    def message(self) -> str:
        return f"{self.field}: {self.detail}"


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(field, "FieldValueInvalid", f"Invalid value: {_show(value)}: {detail}", value)


def required(field: str, detail: str = "Required value") -> FieldError:
    return FieldError(field, "FieldValueRequired", detail)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(field, "FieldValueForbidden", f"Forbidden: {detail}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "object" if isinstance(value, dict) else "array"
    return str(value)


# ---- builders -------------------------------------------------------------------------


def obj(description: str = "", /, required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": dict(properties)}
    if description:
        schema["description"] = description
    if required:
        schema["required"] = list(required)
    return schema


def string(description: str = "", *, enum: tuple[str, ...] = (), max_length: int = 0,
           default: str | None = None) -> Schema:
    schema: Schema = {"type": "string"}
    if description:
        schema["description"] = description
    if enum:
        schema["enum"] = list(enum)
    if max_length:
        schema["maxLength"] = max_length
    if default is not None:
        schema["default"] = default
    return schema


def integer(description: str = "", *, minimum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "format": "int64"}
    if description:
        schema["description"] = description
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


def boolean(description: str = "", *, default: bool | None = None) -> Schema:
    schema: Schema = {"type": "boolean"}
    if description:
        schema["description"] = description
    if default is not None:
        schema["default"] = default
    return schema


def array(items: Schema, description: str = "", *, max_items: int = 0,
          list_map_keys: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if description:
        schema["description"] = description
    if max_items:
        schema["maxItems"] = max_items
    if list_map_keys:
        schema["x-kubernetes-list-type"] = "map"
        schema["x-kubernetes-list-map-keys"] = list(list_map_keys)
    return schema


def string_map(description: str = "") -> Schema:
    schema: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
    if description:
        schema["description"] = description
    return schema


def free_form(description: str = "") -> Schema:
    schema: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if description:
        schema["description"] = description
    return schema


def defaulted(schema: Schema, default: Any) -> Schema:
    return {**schema, "default": default}


# ---- compiled validators --------------------------------------------------------------

# A validator checks `value` at `path`, appends errors, appends unknown field paths, and
# may set defaults in place (it owns the decoded request body, never a stored object).
Validator = Callable[[Any, str, list[FieldError], list[str]], None]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _type_check(kind: str) -> Callable[[Any], bool]:
    accepted = _JSON_TYPES[kind]
    if kind in ("integer", "number"):
        return lambda v: isinstance(v, accepted) and not isinstance(v, bool)
    return lambda v: isinstance(v, accepted)


def compile_schema(schema: Schema) -> Validator:
    kind = schema.get("type")
    if kind is None or schema.get("x-kubernetes-preserve-unknown-fields"):
        return lambda value, path, errors, unknown: None
    type_ok = _type_check(kind)
    checks: list[Validator] = []
    if kind == "object":
        checks.append(_compile_object(schema))
    elif kind == "array":
        checks.append(_compile_array(schema))
    if "enum" in schema:
        allowed = tuple(schema["enum"])
        shown = ", ".join(f'"{a}"' for a in allowed)

        def check_enum(value: Any, path: str, errors: list[FieldError], unknown: list[str]) -> None:
            if value not in allowed:
                errors.append(FieldError(path, "FieldValueNotSupported",
                                         f"Unsupported value: {_show(value)}: supported values: {shown}",
                                         value))
        checks.append(check_enum)
    if "minimum" in schema:
        low = schema["minimum"]

        def check_min(value: Any, path: str, errors: list[FieldError], unknown: list[str]) -> None:
            if value < low:
                errors.append(invalid(path, value, f"should be greater than or equal to {low}"))
        checks.append(check_min)
    if "maxLength" in schema:
        longest = schema["maxLength"]

        def check_len(value: Any, path: str, errors: list[FieldError], unknown: list[str]) -> None:
            if len(value) > longest:
                errors.append(FieldError(path, "FieldValueTooLong",
                                         f"Too long: may not be more than {longest} bytes", value))
        checks.append(check_len)

    def validate(value: Any, path: str, errors: list[FieldError], unknown: list[str]) -> None:
        if value is None:
            return  # null means "unset", as for CRDs with nullable fields pruned
        if not type_ok(value):
            errors.append(FieldError(path, "FieldValueTypeInvalid",
                                     f"Invalid value: {_show(value)}: {path} in body must be of type {kind}",
                                     value))
            return
        for check in checks:
            check(value, path, errors, unknown)
    return validate


def _compile_object(schema: Schema) -> Validator:
    if "additionalProperties" in schema:
        each = compile_schema(schema["additionalProperties"])

        def validate_map(value: dict[str, Any], path: str, errors: list[FieldError],
                         unknown: list[str]) -> None:
            for key, item in value.items():
                each(item, f"{path}.{key}" if path else key, errors, unknown)
        return validate_map
    props = {name: compile_schema(sub) for name, sub in schema.get("properties", {}).items()}
    defaults = {name: sub["default"] for name, sub in schema.get("properties", {}).items()
                if "default" in sub}
    needed = tuple(schema.get("required", ()))

    def validate_object(value: dict[str, Any], path: str, errors: list[FieldError],
                        unknown: list[str]) -> None:
        for name, default in defaults.items():
            if value.get(name) is None:
                value[name] = copy.deepcopy(default)
        for name in needed:
            if value.get(name) in (None, ""):
                errors.append(required(f"{path}.{name}" if path else name))
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            check = props.get(key)
            if check is None:
                unknown.append(child)
            else:
                check(item, child, errors, unknown)
    return validate_object


def _compile_array(schema: Schema) -> Validator:
    each = compile_schema(schema["items"])
    most = schema.get("maxItems", 0)

    def validate_array(value: list[Any], path: str, errors: list[FieldError],
                       unknown: list[str]) -> None:
        if most and len(value) > most:
            errors.append(FieldError(path, "FieldValueTooMany",
                                     f"Too many: {len(value)}: must have at most {most} items",
                                     len(value)))
        for index, item in enumerate(value):
            each(item, f"{path}[{index}]", errors, unknown)
    return validate_array


def prune(value: Any, schema: Schema) -> Any:
    """Drop unknown fields, as a Kubernetes server does for fieldValidation=Ignore/Warn."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and schema.get("type") == "object":
        if "additionalProperties" in schema:
            return {k: prune(v, schema["additionalProperties"]) for k, v in value.items()}
        props = schema.get("properties", {})
        return {k: prune(v, props[k]) for k, v in value.items() if k in props}
    if isinstance(value, list) and schema.get("type") == "array":
        return [prune(v, schema["items"]) for v in value]
    return value
