"""The registry of kinds: the one description of each kind that the rest of the server reads.

Discovery, OpenAPI, Tables, admission and storage keys are all derived from a `Kind`;
nothing else repeats a kind's name, plural, scope or field list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evroc_compute.api.meta import OBJECT_META
from evroc_compute.api.schema import FieldError, Schema, Validator, compile_schema, string

# (new object, old object or None on create) -> semantic errors beyond the schema.
SemanticCheck = Callable[[dict[str, Any], dict[str, Any] | None], list[FieldError]]


def _no_semantic_checks(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    return []


@dataclass(frozen=True)
class Column:
    """A printer column; `value` reads the cell from the object."""

    name: str
    type: str
    value: Callable[[dict[str, Any]], Any]
    description: str = ""
    priority: int = 0  # > 0: only with `kubectl get -o wide`
    format: str = ""


@dataclass(frozen=True)
class StoredAs:
    """A kind served as another version of a stored kind (events.k8s.io/v1 Event is a view of
    core v1 Event): one set of objects, converted on the way in and out."""

    kind: Kind
    to_storage: Callable[[dict[str, Any]], dict[str, Any]]
    from_storage: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Kind:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    description: str
    spec: Schema | None
    status: Schema | None
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    semantic_check: SemanticCheck = _no_semantic_checks
    # stored object -> why it may not be deleted now (None when it may), e.g. an address in use.
    delete_check: Callable[[dict[str, Any]], FieldError | None] = lambda obj: None
    # Objects written at start-up (the catalog); they may be edited by admins afterwards.
    seed: tuple[dict[str, Any], ...] = ()
    # Top-level fields besides spec and status (an Event has no spec: its fields are at the top).
    fields: tuple[tuple[str, Schema], ...] = ()
    # Field selector paths served besides metadata.name and metadata.namespace.
    field_labels: frozenset[str] = frozenset()
    # Tables start with a Name column, except for kinds whose name means nothing to a reader.
    name_column: bool = True
    stored_as: StoredAs | None = None
    # Whether writes record metadata.managedFields. Events do not: nobody applies them, and
    # the record would double what each of the many events holds in memory.
    managed_fields: bool = True
    # The status a new object starts with (a Namespace is Active); None: none until written.
    initial_status: dict[str, Any] | None = None
    # Subresources besides /status (a Namespace has /finalize).
    extra_subresources: tuple[str, ...] = ()
    # False: create-only, answered by the server and never stored (the access reviews).
    stored: bool = True

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def subresources(self) -> tuple[str, ...]:
        return ("status",) * (self.status is not None) + self.extra_subresources

    @property
    def builtin(self) -> bool:
        """A kind of kube-apiserver's own (core, *.k8s.io), not a custom resource: decoded
        with the endpoint's apiVersion and kind as defaults, strategic merge accepted."""
        return not self.group or self.group.endswith(".k8s.io")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_resource(self) -> str:
        """`virtualmachines.compute.evroclabs.net`, the name used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def schema(self) -> Schema:
        return _object_schema(self)

    @property
    def validator(self) -> Validator:
        return _validator(self)

    def key(self, namespace: str, name: str) -> str:
        return f"{self.key_prefix(namespace)}{name}"

    def key_prefix(self, namespace: str | None) -> str:
        """Storage key prefix; with namespace None, the prefix of every namespace."""
        if self.stored_as is not None:
            return self.stored_as.kind.key_prefix(namespace)
        base = f"/{self.group or 'core'}/{self.plural}/"
        if not self.namespaced:
            return base
        return base if namespace is None else f"{base}{namespace}/"


_schemas: dict[str, Schema] = {}
_validators: dict[str, Validator] = {}


def _object_schema(kind: Kind) -> Schema:
    cached = _schemas.get(kind.qualified_resource)
    if cached is None:
        props: dict[str, Schema] = {
            "apiVersion": string("APIVersion defines the versioned schema of this representation "
                                 "of an object.", enum=(kind.api_version,)),
            "kind": string("Kind is a string value representing the REST resource this object "
                           "represents. In CamelCase.", enum=(kind.kind,)),
            "metadata": OBJECT_META,
        }
        props.update(kind.fields)
        if kind.spec is not None:
            props["spec"] = kind.spec
        if kind.status is not None:
            props["status"] = kind.status
        cached = {"type": "object", "description": kind.description, "properties": props,
                  "x-kubernetes-group-version-kind": [
                      {"group": kind.group, "version": kind.version, "kind": kind.kind}]}
        _schemas[kind.qualified_resource] = cached
    return cached


def _validator(kind: Kind) -> Validator:
    cached = _validators.get(kind.qualified_resource)
    if cached is None:
        cached = _validators[kind.qualified_resource] = compile_schema(kind.schema)
    return cached


class Registry:
    """All kinds served, indexed the ways requests look them up."""

    def __init__(self, kinds: list[Kind]) -> None:
        self.kinds = tuple(kinds)
        self._by_resource = {(k.group, k.version, k.plural): k for k in kinds}

    def resource(self, group: str, version: str, plural: str) -> Kind | None:
        return self._by_resource.get((group, version, plural))

    def group_versions(self) -> dict[str, list[str]]:
        """group -> versions, in registration order, core group excluded."""
        groups: dict[str, list[str]] = {}
        for k in self.kinds:
            if k.group and k.version not in groups.setdefault(k.group, []):
                groups[k.group].append(k.version)
        return groups

    def in_group_version(self, group: str, version: str) -> list[Kind]:
        return [k for k in self.kinds if k.group == group and k.version == version]
