"""Label and field selectors behave like kube-apiserver's for kubectl -l / --field-selector."""

from __future__ import annotations

from typing import Any

import pytest

from evroc_compute.server.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "frontend", "empty": "", "example.com/team": "a", "size": "10"}

LABEL_CASES = [
    ("", {}, True, "empty selector matches everything"),
    ("   ", LABELS, True, "whitespace-only selector matches everything"),
    ("app=web", LABELS, True, "equals matches the same value"),
    ("app=db", LABELS, False, "equals rejects a different value"),
    ("missing=web", LABELS, False, "equals rejects objects without the key"),
    ("app==web", LABELS, True, "double equals matches the same value"),
    ("app==db", LABELS, False, "double equals rejects a different value"),
    ("app!=db", LABELS, True, "not-equals matches a different value"),
    ("app!=web", LABELS, False, "not-equals rejects the same value"),
    ("missing!=web", LABELS, True, "not-equals matches objects without the key"),
    ("app in (db,web)", LABELS, True, "in matches a listed value"),
    ("app in (db,cache)", LABELS, False, "in rejects an unlisted value"),
    ("missing in (web)", LABELS, False, "in rejects objects without the key"),
    ("app notin (db,cache)", LABELS, True, "notin matches an unlisted value"),
    ("app notin (db,web)", LABELS, False, "notin rejects a listed value"),
    ("missing notin (web)", LABELS, True, "notin matches objects without the key"),
    ("app", LABELS, True, "exists matches objects with the key"),
    ("missing", LABELS, False, "exists rejects objects without the key"),
    ("!missing", LABELS, True, "does-not-exist matches objects without the key"),
    ("!app", LABELS, False, "does-not-exist rejects objects with the key"),
    ("empty=", LABELS, True, "equals with no value matches the empty value"),
    ("app=", LABELS, False, "equals with no value rejects a non-empty value"),
    ("empty==", LABELS, True, "double equals with no value matches the empty value"),
    ("empty in ()", LABELS, True, "empty value list matches the empty value"),
    ("empty in (x,)", LABELS, True, "trailing comma in a value list adds the empty value"),
    ("example.com/team=a", LABELS, True, "prefixed keys are supported"),
    ("app=web,tier=frontend", LABELS, True, "all comma-separated requirements must hold"),
    ("app=web,tier=backend", LABELS, False, "one failing requirement rejects the object"),
    ("  app = web ,  tier  in ( frontend , x ) , ! gone ", LABELS, True,
     "whitespace is tolerated between tokens"),
    ("app=web,app!=web", LABELS, False, "repeated keys are combined with AND"),
    ("in=x", {"in": "x"}, True, "the word in can be used as a key"),
    ("app=in", {"app": "in"}, True, "the word in can be used as a value"),
    ("size>5", LABELS, True, "greater-than compares integers"),
    ("size<5", LABELS, False, "less-than compares integers"),
    ("app>5", LABELS, False, "greater-than rejects non-integer label values"),
    ("missing<5", LABELS, False, "less-than rejects objects without the key"),
]


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [case[:3] for case in LABEL_CASES],
    ids=[case[3] for case in LABEL_CASES],
)
def test_label_selector_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_label_selector_accepts_missing_labels_map() -> None:
    assert parse_label_selector("!app").matches(None)
    assert not parse_label_selector("app").matches(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", True), (" ", True), ("app", False), ("!app", False)],
    ids=["empty string", "blank string", "exists requirement", "does-not-exist requirement"],
)
def test_label_selector_empty(text: str, expected: bool) -> None:
    assert parse_label_selector(text).empty is expected


LABEL_ERRORS = [
    ("-x", 'unable to parse requirement: invalid label key "-x": name part must consist of',
     "key must start with an alphanumeric character"),
    ("a" * 64, "name part must be no more than 63 characters", "key name is at most 63 chars"),
    ("/a=b", "prefix part must be non-empty", "key prefix must not be empty"),
    ("Example.com/a", "prefix part a lowercase RFC 1123 subdomain",
     "key prefix must be a lowercase DNS subdomain"),
    ("a/b/c", "a qualified name must consist of", "key has at most one slash"),
    ("a/", "name part must be non-empty", "key name after the prefix must not be empty"),
    ("app=-web", 'invalid label value: "-web": at key: "app": a valid label must be',
     "value must start with an alphanumeric character"),
    ("app=" + "v" * 64, "must be no more than 63 characters", "value is at most 63 chars"),
    ("app in (ok,bad!)", "unable to parse requirement", "every listed value is validated"),
    ("app=web,", "found '', expected: identifier after ','", "trailing comma is rejected"),
    (",app", "found ',', expected: !, identifier, or 'end of string'",
     "leading comma is rejected"),
    ("app web", "found 'web', expected: in, notin, =, ==, !=, gt, lt",
     "missing operator is rejected"),
    ("app in web", "found 'web', expected: '('", "in requires a parenthesised list"),
    ("app in (a", "found '', expected: ',', ')' or identifier", "unclosed list is rejected"),
    ("app in (a b)", "found 'b', expected: ',', ')' or identifier",
     "list values must be comma-separated"),
    ("app=web=x", "found '=', expected: ',' or 'end of string'",
     "junk after a requirement is rejected"),
    ("!app=web", "found '=', expected: ',' or 'end of string'",
     "does-not-exist takes no value"),
    ("size>x", "the value must be an integer", "greater-than requires an integer"),
    ("!", "found '', expected: identifier", "bare exclamation mark is rejected"),
]


@pytest.mark.parametrize(
    ("text", "message"),
    [case[:2] for case in LABEL_ERRORS],
    ids=[case[2] for case in LABEL_ERRORS],
)
def test_label_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as excinfo:
        parse_label_selector(text)
    assert message in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


SUPPORTED = frozenset({"metadata.name", "metadata.namespace", "status.phase", "spec.running"})
OBJ: dict[str, Any] = {
    "metadata": {"name": "vm-1", "namespace": "default"},
    "spec": {"running": True},
    "status": {},
}

FIELD_CASES = [
    ("", True, "empty selector matches everything"),
    ("metadata.name=vm-1", True, "equals matches the same value"),
    ("metadata.name=vm-2", False, "equals rejects a different value"),
    ("metadata.name==vm-1", True, "double equals matches the same value"),
    ("metadata.name!=vm-2", True, "not-equals matches a different value"),
    ("metadata.name!=vm-1", False, "not-equals rejects the same value"),
    ("status.phase=", True, "missing field reads as the empty string"),
    ("status.phase!=Running", True, "not-equals matches a missing field"),
    ("spec.running=true", True, "booleans are rendered as true/false"),
    ("metadata.name=vm-1,metadata.namespace=default", True, "all terms must hold"),
    ("metadata.name=vm-1,metadata.namespace=other", False, "one failing term rejects"),
    (" metadata.name = vm-1 ", True, "whitespace around field and value is ignored"),
    (",metadata.name=vm-1,", True, "empty terms are skipped"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[:2] for case in FIELD_CASES],
    ids=[case[2] for case in FIELD_CASES],
)
def test_field_selector_matching(text: str, expected: bool) -> None:
    assert parse_field_selector(text, SUPPORTED).matches(OBJ) is expected


def test_field_selector_unescapes_values() -> None:
    selector = parse_field_selector(r"metadata.name=a\,b\=c\\d", SUPPORTED)
    assert selector.exact("metadata.name") == "a,b=c\\d"
    assert selector.matches({"metadata": {"name": "a,b=c\\d"}})


FIELD_ERRORS = [
    ("spec.foo=x", "field label not supported: spec.foo", "unsupported field is rejected"),
    ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
     "term without an operator is rejected"),
    ("metadata.name=a=b", "unescaped character in value: =", "unescaped equals is rejected"),
    (r"metadata.name=a\x", r"invalid escape sequence: \x", "unknown escape is rejected"),
    ("metadata.name=a\\", "invalid escape sequence", "dangling backslash is rejected"),
]


@pytest.mark.parametrize(
    ("text", "message"),
    [case[:2] for case in FIELD_ERRORS],
    ids=[case[2] for case in FIELD_ERRORS],
)
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as excinfo:
        parse_field_selector(text, SUPPORTED)
    assert message in str(excinfo.value)


EXACT_CASES = [
    ("metadata.name=vm-1", "metadata.name", "vm-1", "equals term yields its value"),
    ("metadata.name==vm-1", "metadata.name", "vm-1", "double equals term yields its value"),
    ("metadata.name!=vm-1", "metadata.name", None, "not-equals term yields nothing"),
    ("metadata.namespace=default", "metadata.name", None, "other fields yield nothing"),
    ("metadata.namespace=d,metadata.name=x", "metadata.name", "x", "found among several"),
    ("", "metadata.name", None, "empty selector yields nothing"),
]


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [case[:3] for case in EXACT_CASES],
    ids=[case[3] for case in EXACT_CASES],
)
def test_field_selector_exact(text: str, field: str, expected: str | None) -> None:
    assert parse_field_selector(text, SUPPORTED).exact(field) == expected


def test_field_selector_empty() -> None:
    assert parse_field_selector("", SUPPORTED).empty
    assert not parse_field_selector("metadata.name=x", SUPPORTED).empty
