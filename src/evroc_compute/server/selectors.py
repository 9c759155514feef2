"""Kubernetes label and field selectors: parsing from query strings and matching.

kubectl (`-l`, `--field-selector`) and the official clients send `labelSelector` and
`fieldSelector` query parameters on list and watch requests. They expect the exact
kube-apiserver grammar and similar error messages, so this module reimplements
`k8s.io/apimachinery/pkg/labels.Parse` and `pkg/fields.ParseSelector` rather than
inventing a dialect.

Selectors are evaluated for every object of a (possibly 10,000-item) list and for every
watch event, so a selector is parsed once into a tuple of small immutable requirement
records and matching is a plain loop over them with no re-parsing or allocation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evroc_compute.api import meta

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelRequirement",
    "LabelSelector",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(ValueError):
    """A selector could not be parsed; the message is meant to be shown to the user."""


# --- label selectors ---------------------------------------------------------------------

# Operator names follow k8s.io/apimachinery/pkg/selection so messages read the same.
IN = "in"
NOT_IN = "notin"
EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
EXISTS = "exists"
DOES_NOT_EXIST = "!"
GREATER_THAN = "gt"
LESS_THAN = "lt"

_OPERATORS_MSG = "in, notin, =, ==, !=, gt, lt"


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One comma-separated term of a label selector, e.g. `tier in (web,db)`."""

    key: str
    operator: str
    values: frozenset[str]
    # Pre-converted operand for gt/lt so matching never re-parses the selector value.
    number: int = 0

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        value = labels.get(self.key)
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return value is not None and value in self.values
        if op in (NOT_IN, NOT_EQUALS):
            # Kubernetes treats a missing label as "not equal to anything".
            return value is None or value not in self.values
        if value is None:
            return False
        try:
            actual = int(value)
        except ValueError:
            return False
        return actual > self.number if op == GREATER_THAN else actual < self.number


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed label selector; all requirements must hold (logical AND)."""

    requirements: tuple[LabelRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        # Accepting None lets callers pass `metadata.get("labels")` straight through.
        if labels is None:
            labels = {}
        # A plain loop rather than all(genexpr): this runs per object per list/watch event.
        for requirement in self.requirements:
            if not requirement.matches(labels):
                return False
        return True


# Label keys and values are validated by the same rules as metadata.labels (api/meta.py).
_label_key_errors = meta.qualified_name_errors
_label_value_errors = meta.label_value_errors


# Token kinds produced by the lexer; identifiers carry their text, symbols are themselves.
_IDENT = "identifier"
_END = "end"
_SYMBOLS = ("!=", "==", "!", "=", "(", ")", ",", ">", "<")
_SPECIAL_CHARS = frozenset("!=(),<>")


def _lex(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL_CHARS:
            symbol = next(s for s in _SYMBOLS if text.startswith(s, i))
            tokens.append((symbol, symbol))
            i += len(symbol)
            continue
        start = i
        while i < n and not text[i].isspace() and text[i] not in _SPECIAL_CHARS:
            i += 1
        tokens.append((_IDENT, text[start:i]))
    tokens.append((_END, ""))
    return tokens


class _LabelParser:
    """Recursive-descent parser following the structure of labels.Parser."""

    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        if token[0] != _END:
            self.pos += 1
        return token

    def parse(self) -> tuple[LabelRequirement, ...]:
        requirements: list[LabelRequirement] = []
        while True:
            kind, literal = self.peek()
            if kind == _END:
                return tuple(requirements)
            if kind not in (_IDENT, "!"):
                raise SelectorError(
                    f"found '{literal}', expected: !, identifier, or 'end of string'"
                )
            try:
                requirements.append(self.requirement())
            except SelectorError as exc:
                raise SelectorError(f"unable to parse requirement: {exc}") from None
            kind, literal = self.take()
            if kind == _END:
                return tuple(requirements)
            if kind != ",":
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            if self.peek()[0] not in (_IDENT, "!"):
                raise SelectorError(
                    f"found '{self.peek()[1]}', expected: identifier after ','"
                )

    def requirement(self) -> LabelRequirement:
        negated = False
        kind, key = self.take()
        if kind == "!":
            negated = True
            kind, key = self.take()
        if kind != _IDENT:
            raise SelectorError(f"found '{key}', expected: identifier")
        if errors := _label_key_errors(key):
            raise SelectorError(f"invalid label key {_quote(key)}: {'; '.join(errors)}")
        if negated:
            return LabelRequirement(key, DOES_NOT_EXIST, frozenset())
        if self.peek()[0] in (_END, ","):
            return LabelRequirement(key, EXISTS, frozenset())

        operator = self.operator()
        values = self.value_list() if operator in (IN, NOT_IN) else [self.exact_value()]
        for value in values:
            if errors := _label_value_errors(value):
                raise SelectorError(
                    f"invalid label value: {_quote(value)}: at key: {_quote(key)}: "
                    f"{'; '.join(errors)}"
                )
        number = 0
        if operator in (GREATER_THAN, LESS_THAN):
            try:
                number = int(values[0])
            except ValueError:
                raise SelectorError(
                    f"for 'Gt', 'Lt' operators, the value must be an integer, got {values[0]!r}"
                ) from None
        return LabelRequirement(key, operator, frozenset(values), number)

    def operator(self) -> str:
        kind, literal = self.take()
        if kind == _IDENT and literal in (IN, NOT_IN):
            return literal
        symbols = {"=": EQUALS, "==": DOUBLE_EQUALS, "!=": NOT_EQUALS,
                   ">": GREATER_THAN, "<": LESS_THAN}
        if kind in symbols:
            return symbols[kind]
        raise SelectorError(f"found '{literal}', expected: {_OPERATORS_MSG}")

    def exact_value(self) -> str:
        kind, literal = self.peek()
        if kind in (_END, ","):
            return ""  # `key=` selects the empty value, as in Kubernetes.
        self.take()
        if kind != _IDENT:
            raise SelectorError(f"found '{literal}', expected: identifier")
        return literal

    def value_list(self) -> list[str]:
        kind, literal = self.take()
        if kind != "(":
            raise SelectorError(f"found '{literal}', expected: '('")
        # Like Kubernetes, `()` and empty slots such as `(a,)` stand for the empty value.
        values: list[str] = []
        expect_value = True
        while True:
            kind, literal = self.take()
            if kind == ")":
                if expect_value:
                    values.append("")
                return values
            if kind == _IDENT and expect_value:
                values.append(literal)
                expect_value = False
            elif kind == ",":
                if expect_value:
                    values.append("")
                expect_value = True
            else:
                raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")


def _quote(text: str) -> str:
    # Go's %q; plain double quotes are enough for the characters a selector can hold.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a `labelSelector` query value; the empty string selects everything."""
    return LabelSelector(_LabelParser(text).parse())


# --- field selectors ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """One term of a field selector: `field = value` or `field != value`."""

    path: tuple[str, ...]
    field: str
    value: str
    negated: bool


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """A parsed field selector; all requirements must hold (logical AND)."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for requirement in self.requirements:
            if (_field_value(obj, requirement.path) == requirement.value) == requirement.negated:
                return False
        return True

    def exact(self, field: str) -> str | None:
        """The value of the first `field=value` term, so a caller can do a key lookup.

        The caller must still apply `matches`: a selector may hold several terms.
        """
        for requirement in self.requirements:
            if requirement.field == field and not requirement.negated:
                return requirement.value
        return None


def _field_value(obj: Mapping[str, Any], path: tuple[str, ...]) -> str:
    current: Any = obj
    for part in path:
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    # Render scalars the way Kubernetes field-label conversion functions do.
    if isinstance(current, str):
        return current
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, (int, float)):
        return str(current)
    return ""


def _split_terms(text: str) -> list[str]:
    # A backslash escapes the next character, so `\,` does not end a term.
    terms: list[str] = []
    start, escaped = 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _unescape(value: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {ch}")
        else:
            out.append(ch)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(text: str, supported: frozenset[str]) -> FieldSelector:
    """Parse a `fieldSelector` query value; fields outside `supported` are rejected."""
    requirements: list[FieldRequirement] = []
    for term in _split_terms(text):
        if not term.strip():
            continue
        # Operators are tried at each position in the order Kubernetes uses, so the
        # first operator in the term wins and `==` is not mistaken for `=` + "=value".
        for i in range(len(term)):
            op = next((o for o in ("!=", "==", "=") if term.startswith(o, i)), None)
            if op is not None:
                field, value = term[:i].strip(), term[i + len(op):].strip()
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(
            FieldRequirement(tuple(field.split(".")), field, _unescape(value), op == "!=")
        )
    return FieldSelector(tuple(requirements))
