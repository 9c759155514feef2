"""Just enough Kubernetes protobuf to read what kubectl's typed clients send.

`kubectl create namespace NAME` posts a `v1 Namespace` as `application/vnd.kubernetes.protobuf`
(the typed clientset prefers protobuf for core kinds and does not fall back to JSON on 415).
This decodes that envelope (`k8s\\0` + runtime.Unknown) and the messages kubectl sends that
way (Namespace; RBAC objects from `kubectl create role|rolebinding|...`; the reviews of `kubectl
auth can-i|whoami`; the ResourceQuota of `kubectl create quota`) into the JSON-shaped dict the
handlers expect. Other kinds are answered with 415 by the caller.
Replies stay JSON: kubectl's Accept lists application/json as well.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """The body is not a well-formed Kubernetes protobuf message."""


class UnsupportedKind(ProtobufError):
    """A well-formed message of a kind this server does not decode from protobuf."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value): an int for varints, bytes for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated length-delimited field")
            yield number, data[pos:pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def _str(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise ProtobufError(f"a string is not valid UTF-8: {problem}") from None


def _int64(value: int | bytes) -> int:
    """A varint read as protobuf int64 (negative numbers travel as two's complement)."""
    if not isinstance(value, int):
        raise ProtobufError("expected an integer")
    return value - (1 << 64) if value >= 1 << 63 else value


def _msg(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a message")
    return value


# metav1.Time covers years 0001 to 9999, as RFC 3339 does.
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MIN_SECONDS = int((datetime.datetime(1, 1, 1, tzinfo=datetime.UTC) - _EPOCH).total_seconds())
_MAX_SECONDS = int((datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
                    - _EPOCH).total_seconds())


def _time(data: bytes) -> str:
    seconds = 0
    for number, value in fields(data):
        if number == 1:
            seconds = _int64(value)
    if not seconds:
        return ""
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise ProtobufError(f"timestamp out of range: {seconds} seconds since 1970 is not "
                            "within the years 0001 to 9999")
    stamp = _EPOCH + datetime.timedelta(seconds=seconds)
    return f"{stamp.year:04d}-{stamp:%m-%dT%H:%M:%SZ}"


def _map_entry(data: bytes) -> tuple[str, str]:
    key = val = ""
    for number, value in fields(data):
        if number == 1:
            key = _str(value)
        elif number == 2:
            val = _str(value)
    return key, val


def _owner_reference(data: bytes) -> dict[str, Any]:
    names = {1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}
    flags = {6: "controller", 7: "blockOwnerDeletion"}
    ref: dict[str, Any] = {}
    for number, value in fields(data):
        if number in names:
            ref[names[number]] = _str(value)
        elif number in flags:
            ref[flags[number]] = bool(value)
    return ref


def _object_meta(data: bytes) -> dict[str, Any]:
    strings = {1: "name", 2: "generateName", 3: "namespace", 4: "selfLink", 5: "uid",
               6: "resourceVersion"}
    meta: dict[str, Any] = {}
    for number, value in fields(data):
        if number in strings:
            text = _str(value)
            if text:
                meta[strings[number]] = text
        elif number == 7 and _int64(value):
            meta["generation"] = _int64(value)
        elif number in (8, 9):
            stamp = _time(_msg(value))
            if stamp:
                meta["creationTimestamp" if number == 8 else "deletionTimestamp"] = stamp
        elif number == 10:
            meta["deletionGracePeriodSeconds"] = _int64(value)
        elif number in (11, 12):
            key, val = _map_entry(_msg(value))
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = val
        elif number == 13:
            meta.setdefault("ownerReferences", []).append(_owner_reference(_msg(value)))
        elif number == 14:
            meta.setdefault("finalizers", []).append(_str(value))
    return meta


def _namespace(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, value in fields(data):
        if number == 1:
            obj["metadata"] = _object_meta(_msg(value))
        elif number == 2:
            finalizers = [_str(v) for n, v in fields(_msg(value)) if n == 1]
            if finalizers:
                obj["spec"] = {"finalizers": finalizers}
        elif number == 3:
            phase = "".join(_str(v) for n, v in fields(_msg(value)) if n == 1)
            if phase:
                obj["status"] = {"phase": phase}
    obj.setdefault("metadata", {})
    return obj


# A message as field number -> (JSON name, how to read one value, repeated).
Fields = dict[int, tuple[str, Callable[[int | bytes], Any], bool]]


def _message(spec: Fields) -> Callable[[int | bytes], dict[str, Any]]:
    def read(value: int | bytes) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for number, item in fields(_msg(value)):
            if number not in spec:
                continue
            name, decode, repeated = spec[number]
            if repeated:
                out.setdefault(name, []).append(decode(item))
            else:
                out[name] = decode(item)
        return out
    return read


def _with_meta(spec: Fields) -> Callable[[bytes], dict[str, Any]]:
    read = _message({1: ("metadata", lambda v: _object_meta(_msg(v)), False), **spec})
    return lambda data: {"metadata": {}, **read(data)}


def _string_list(value: int | bytes) -> list[str]:
    return [_str(v) for n, v in fields(_msg(value)) if n == 1]


_POLICY_RULE = _message({1: ("verbs", _str, True), 2: ("apiGroups", _str, True),
                         3: ("resources", _str, True), 4: ("resourceNames", _str, True),
                         5: ("nonResourceURLs", _str, True)})
_SUBJECT = _message({1: ("kind", _str, False), 2: ("apiGroup", _str, False),
                     3: ("name", _str, False), 4: ("namespace", _str, False)})
_ROLE_REF = _message({1: ("apiGroup", _str, False), 2: ("kind", _str, False),
                      3: ("name", _str, False)})
_ROLE = _with_meta({2: ("rules", _POLICY_RULE, True)})
_BINDING = _with_meta({2: ("subjects", _SUBJECT, True), 3: ("roleRef", _ROLE_REF, False)})
_RESOURCE_ATTRIBUTES = _message({
    1: ("namespace", _str, False), 2: ("verb", _str, False), 3: ("group", _str, False),
    4: ("version", _str, False), 5: ("resource", _str, False),
    6: ("subresource", _str, False), 7: ("name", _str, False)})
_NON_RESOURCE_ATTRIBUTES = _message({1: ("path", _str, False), 2: ("verb", _str, False)})
_ACCESS = {1: ("resourceAttributes", _RESOURCE_ATTRIBUTES, False),
           2: ("nonResourceAttributes", _NON_RESOURCE_ATTRIBUTES, False)}


def _extra(value: int | bytes) -> tuple[str, list[str]]:
    key, values = "", []
    for number, item in fields(_msg(value)):
        if number == 1:
            key = _str(item)
        elif number == 2:
            values = _string_list(item)
    return key, values


def _subject_access_spec(value: int | bytes) -> dict[str, Any]:
    spec = _message({**_ACCESS, 3: ("user", _str, False), 4: ("groups", _str, True),
                     6: ("uid", _str, False), 5: ("extra", _extra, True)})(value)
    if "extra" in spec:
        spec["extra"] = dict(spec["extra"])
    return spec
def _quantities(entries: list[bytes]) -> dict[str, str]:
    """A map<string, Quantity> (a Quantity message holds its string form as field 1)."""
    result: dict[str, str] = {}
    for entry in entries:
        key, quantity = "", ""
        for number, value in fields(entry):
            if number == 1:
                key = _str(value)
            elif number == 2:
                quantity = "".join(_str(v) for n, v in fields(_msg(value)) if n == 1)
        result[key] = quantity
    return result


def _resource_quota(data: bytes) -> dict[str, Any]:
    """`kubectl create quota` sends one: spec.hard and spec.scopes (refused by admission)."""
    obj: dict[str, Any] = {}
    for number, value in fields(data):
        if number == 1:
            obj["metadata"] = _object_meta(_msg(value))
        elif number == 2:
            spec = list(fields(_msg(value)))
            obj["spec"] = {"hard": _quantities([_msg(v) for n, v in spec if n == 1])}
            scopes = [_str(v) for n, v in spec if n == 2]
            if scopes:
                obj["spec"]["scopes"] = scopes
    obj.setdefault("metadata", {})
    return obj


DECODERS: dict[tuple[str, str], Callable[[bytes], dict[str, Any]]] = {
    ("v1", "Namespace"): _namespace,
    ("rbac.authorization.k8s.io/v1", "Role"): _ROLE,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): _ROLE,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _BINDING,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _BINDING,
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): _with_meta(
        {2: ("spec", _message(_ACCESS), False)}),
    ("authorization.k8s.io/v1", "SubjectAccessReview"): _with_meta(
        {2: ("spec", _subject_access_spec, False)}),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): _with_meta(
        {2: ("spec", _message({1: ("namespace", _str, False)}), False)}),
    ("authentication.k8s.io/v1", "SelfSubjectReview"): _with_meta({}),
    ("v1", "ResourceQuota"): _resource_quota,
}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as the dict its JSON form would decode to.

    Every failure to decode is a ProtobufError (UnsupportedKind for a kind not handled).
    """
    try:
        return _decode(body)
    except ProtobufError:
        raise
    except (ValueError, OverflowError, OSError, RecursionError) as problem:
        raise ProtobufError(str(problem) or type(problem).__name__) from None


def _decode(body: bytes) -> dict[str, Any]:
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf prefix k8s\\0")
    api_version = kind = ""
    raw = b""
    for number, value in fields(body[len(MAGIC):]):
        if number == 1:
            for sub, text in fields(_msg(value)):
                if sub == 1:
                    api_version = _str(text)
                elif sub == 2:
                    kind = _str(text)
        elif number == 2:
            raw = _msg(value)
    decoder = DECODERS.get((api_version, kind))
    if decoder is None:
        raise UnsupportedKind(f"{kind or 'an object'} ({api_version or 'no apiVersion'})")
    obj = decoder(raw)
    return {"apiVersion": api_version, "kind": kind, **obj}
