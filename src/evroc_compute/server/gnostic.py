"""Swagger 2.0 as the protobuf message kubectl 1.27 and 1.28 read (gnostic `openapi.v2.Document`).

Those kubectl versions ask `/openapi/v2` for protobuf only and unmarshal whatever comes
back as this message (a JSON reply fails to parse), so the document is encoded here, once.
Field numbers are those of gnostic's `openapiv2/OpenAPIv2.proto`. Values that are free
JSON (vendor extensions, `default`, `enum`) travel as `Any.yaml`, which kube-openapi reads
with a YAML parser; JSON text is valid YAML, so they are written as JSON.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

import orjson

Json = dict[str, Any]


# ---- wire format ----------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64: negative numbers as two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string(number: int, value: str) -> bytes:
    return _bytes(number, value.encode()) if value else b""


def _strings(number: int, values: Iterable[str]) -> bytes:
    return b"".join(_bytes(number, v.encode()) for v in values)


def _bool(number: int, value: bool) -> bytes:
    return _varint(number << 3) + b"\x01" if value else b""


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def _any(number: int, value: Any) -> bytes:
    return _bytes(number, _string(2, orjson.dumps(value).decode()))


def _named(number: int, entries: dict[str, Any], encode: Callable[[Any], bytes]) -> bytes:
    """A JSON map as gnostic's repeated Named<T> {name = 1; value = 2}."""
    return b"".join(_bytes(number, _string(1, name) + _bytes(2, encode(value)))
                    for name, value in entries.items())


def _extensions(number: int, node: Json) -> bytes:
    return b"".join(_bytes(number, _string(1, key) + _any(2, value))
                    for key, value in node.items() if key.startswith("x-"))


# ---- messages -------------------------------------------------------------------------

_SCHEMA_STRINGS = {"$ref": 1, "format": 2, "title": 3, "description": 4, "pattern": 13,
                   "discriminator": 26}
_SCHEMA_INTS = {"maxLength": 11, "minLength": 12, "maxItems": 14, "minItems": 15,
                "maxProperties": 17, "minProperties": 18}
_SCHEMA_DOUBLES = {"multipleOf": 6, "maximum": 7, "minimum": 9}
_SCHEMA_BOOLS = {"exclusiveMaximum": 8, "exclusiveMinimum": 10, "uniqueItems": 16,
                 "readOnly": 27}


def schema(node: Json) -> bytes:
    out = bytearray()
    for key, value in node.items():
        if key in _SCHEMA_STRINGS:
            out += _string(_SCHEMA_STRINGS[key], value)
        elif key in _SCHEMA_INTS:
            out += _int(_SCHEMA_INTS[key], value)
        elif key in _SCHEMA_DOUBLES:
            out += _double(_SCHEMA_DOUBLES[key], float(value))
        elif key in _SCHEMA_BOOLS:
            out += _bool(_SCHEMA_BOOLS[key], value)
        elif key == "default":
            out += _any(5, value)
        elif key == "example":
            out += _any(30, value)
        elif key == "required":
            out += _strings(19, value)
        elif key == "enum":
            out += b"".join(_any(20, v) for v in value)
        elif key == "additionalProperties":
            out += _bytes(21, _bool(2, value) if isinstance(value, bool)
                          else _bytes(1, schema(value)))
        elif key == "type":
            out += _bytes(22, _strings(1, [value] if isinstance(value, str) else value))
        elif key == "items":
            out += _bytes(23, b"".join(_bytes(1, schema(s))
                                       for s in (value if isinstance(value, list) else [value])))
        elif key == "allOf":
            out += b"".join(_bytes(24, schema(s)) for s in value)
        elif key == "properties":
            out += _bytes(25, _named(1, value, schema))
    out += _extensions(31, node)
    return bytes(out)


def _parameter(node: Json) -> bytes:
    """A ParametersItem: a $ref, a body parameter, or a query/path/header parameter."""
    if "$ref" in node:
        return _bytes(2, _string(1, node["$ref"]))
    where = node.get("in", "")
    common = _bool(1, node.get("required", False)) + _string(2, where) \
        + _string(3, node.get("description", "")) + _string(4, node.get("name", ""))
    if where == "body":
        body = _string(1, node.get("description", "")) + _string(2, node.get("name", "")) \
            + _string(3, where) + _bool(4, node.get("required", False)) \
            + _bytes(5, schema(node.get("schema", {}))) + _extensions(6, node)
        return _bytes(1, _bytes(1, body))
    # Query (3) and header (1) sub-schemas have allow_empty_value at 5, so their type,
    # format and uniqueItems sit one number later than the path sub-schema's (4).
    choice, shift = {"query": (3, 1), "header": (1, 0), "path": (4, 0)}[where]
    sub = common + _string(5 + shift, node.get("type", "")) \
        + _string(6 + shift, node.get("format", "")) \
        + _bool(19 + shift, node.get("uniqueItems", False)) \
        + _extensions(22 + shift, node)
    return _bytes(1, _bytes(2, _bytes(choice, sub)))


def _response(node: Json) -> bytes:
    out = _string(1, node.get("description", ""))
    if "schema" in node:
        out += _bytes(2, _bytes(1, schema(node["schema"])))
    return _bytes(1, out + _extensions(5, node))


def _operation(node: Json) -> bytes:
    return (_strings(1, node.get("tags", ())) + _string(2, node.get("summary", ""))
            + _string(3, node.get("description", "")) + _string(5, node.get("operationId", ""))
            + _strings(6, node.get("produces", ())) + _strings(7, node.get("consumes", ()))
            + b"".join(_bytes(8, _parameter(p)) for p in node.get("parameters", ()))
            + _bytes(9, _named(1, node.get("responses", {}), _response))
            + _strings(10, node.get("schemes", ())) + _extensions(13, node))


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(node: Json) -> bytes:
    out = bytearray()
    for method, number in _METHODS.items():
        if method in node:
            out += _bytes(number, _operation(node[method]))
    out += b"".join(_bytes(9, _parameter(p)) for p in node.get("parameters", ()))
    return bytes(out + _extensions(10, node))


def document(node: Json) -> bytes:
    """The Swagger 2.0 document `node` (as served in JSON) as an openapi.v2.Document."""
    info = node.get("info", {})
    return (_string(1, node.get("swagger", "")) + _bytes(2, _string(1, info.get("title", ""))
                                                       + _string(2, info.get("version", "")))
            + _strings(5, node.get("schemes", ())) + _strings(6, node.get("consumes", ()))
            + _strings(7, node.get("produces", ()))
            + _bytes(8, _named(2, node.get("paths", {}), _path_item))
            + _bytes(9, _named(1, node.get("definitions", {}), schema))
            + _extensions(16, node))
