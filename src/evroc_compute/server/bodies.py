"""Request bodies into Python values that JSON can carry, or a 400 that says what is wrong.

JSON, YAML (for `application/yaml` and apply patches) and, for `kubectl create namespace`,
Kubernetes protobuf. Everything decoded is later stored and served as JSON, so whatever
JSON cannot represent is refused here rather than failing later.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
import yaml

from evroc_compute.server import errors, protobuf


def decode(body: bytes, content_type: str) -> Any:
    """JSON or YAML into Python values; malformed input is a 400 with the parser's words.

    The result is always representable as JSON (it is stored and served as JSON): YAML
    that is not (non-string mapping keys, !!binary, .nan, integers beyond 64 bits,
    expanding aliases) and bodies nested deeper than MAX_DEPTH are 400s here rather
    than failures later. YAML timestamps stay the strings they were written as, as in
    Kubernetes (sigs.k8s.io/yaml).
    """
    if not body.strip():
        raise errors.bad_request("the request body is empty; send a JSON or YAML object")
    if content_type in ("application/yaml", "application/apply-patch+yaml",
                             "text/yaml", "application/x-yaml"):
        try:
            return _shallow_enough(orjson.loads(body), body, "JSON")
        except orjson.JSONDecodeError:
            pass  # apply bodies from kubectl are JSON; anything else is YAML
        try:
            value = yaml.load(body, Loader=_YamlLoader)  # a SafeLoader
        except (yaml.YAMLError, ValueError) as problem:  # ValueError: e.g. !!float abc
            raise errors.bad_request(f"error decoding YAML: {problem}") from None
        except RecursionError:
            raise errors.bad_request(f"error decoding YAML: nested deeper than {MAX_DEPTH} "
                                     "levels") from None
        _check_json_values(value, len(body))
        return value
    if content_type == protobuf.MEDIA_TYPE:
        # `kubectl create namespace` (a typed client) sends protobuf and never retries as JSON.
        try:
            return protobuf.decode(body)
        except protobuf.UnsupportedKind as problem:
            raise errors.unsupported_media_type(
                f"{content_type} for {problem}",
                ("application/json", "application/yaml")) from None
        except protobuf.ProtobufError as problem:
            raise errors.bad_request(f"error decoding protobuf body: {problem}") from None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as problem:
        raise errors.bad_request(f"error decoding JSON body: {problem}") from None
    return _shallow_enough(value, body, "JSON")


# Deeper bodies are refused: orjson cannot encode more than 254 levels, and stored objects
# gain a few (managedFields, Table rows, watch events). Kubernetes objects nest a dozen.
MAX_DEPTH = 100
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson (and so the store) can encode
_SURROGATE = re.compile("[\ud800-\udfff]")  # YAML's \uXXXX escapes can make lone ones
_NOT_TEXT = "holds a lone UTF-16 surrogate, which is not text JSON can carry"


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as the text written (JSON has no timestamps)."""


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _shallow_enough(value: Any, body: bytes, what: str) -> Any:
    """`value`, decoded from `body`, unless it nests deeper than MAX_DEPTH (a 400)."""
    # Nesting needs a bracket per level: most bodies are cleared without a walk, and most of
    # the rest (a Host's hundreds of allocations) by a walk of their containers alone; only
    # a body that is too deep gets the full walk, for its error's path.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        _check_json_values(value, len(body), what)
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth >= limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


# Where a value sits, built only for an error: (parent's location, key or index), or None.
_Location = tuple[Any, str | int] | None


def _path(location: _Location) -> str:
    parts: list[str] = []
    while location is not None:
        location, step = location
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(reversed(parts)).lstrip(".")


def _short(value: Any) -> str:
    """A YAML scalar for a message: huge integers do not even convert to str."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _check_json_values(value: Any, size: int, what: str = "YAML") -> None:
    """Raise a 400 naming the first value JSON (orjson) cannot carry.

    Also bounds the work: without aliases a document of `size` bytes holds at most about
    one value per byte, so more than that means aliases expanding (a "billion laughs").
    """
    def fail(location: _Location, problem: str) -> errors.ApiError:
        path = _path(location)
        return errors.bad_request(f"error decoding {what}: {path or 'the body'}: {problem}",
                                  field=path)

    budget = 2 * size + 10_000
    stack: list[tuple[Any, _Location, int]] = [(value, None, 0)]
    while stack:
        item, location, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise errors.bad_request(f"error decoding {what}: the document expands to too many "
                                     "values (aliases?)")
        if isinstance(item, dict | list) and depth >= MAX_DEPTH:
            raise fail(location, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise fail(location, f"mapping key {_short(key)} is not a string; quote "
                                         "it to use it as one")
                if _SURROGATE.search(key):
                    raise fail(location, f"mapping key {_short(key)} {_NOT_TEXT}")
                stack.append((child, (location, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, (location, index), depth + 1)
                         for index, child in enumerate(item))
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                raise fail(location, f"{_short(item)} {_NOT_TEXT}")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
                raise fail(location, f"the integer {_short(item)} does not fit in 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise fail(location, f"{item} is not a number JSON can represent")
        else:
            shown = "binary data (!!binary)" if isinstance(item, bytes) else \
                f"a {type(item).__name__} value"
            raise fail(location, f"{shown} cannot be represented in JSON")
