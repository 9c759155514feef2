"""Which encoding of /openapi/v2 an Accept header gets (kube-openapi's rules)."""

from __future__ import annotations

import pytest

from evroc_compute.server.openapi_v2 import JSON, PROTOBUF, negotiate

ASKED = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


@pytest.mark.parametrize(("accept", "served"), [
    ("", JSON),
    ("*/*", JSON),
    ("application/*", JSON),
    ("application/json", JSON),
    ("application/json, */*", JSON),
    (ASKED, PROTOBUF),
    (PROTOBUF, PROTOBUF),
    (f"{ASKED}, application/json", PROTOBUF),
    (f"application/json;q=0.5, {ASKED}", PROTOBUF),
    (f"{ASKED};q=0, application/json", JSON),
    ("APPLICATION/JSON", JSON),
    ("application/yaml", None),
    ("text/html, application/xml;q=0.9", None),
    ("application/json;q=0", None),
    ("application/json;q=bogus", None),
], ids=[
    "no-accept-means-any", "any", "any-application", "json", "json-then-any",
    "kubectl-protobuf", "protobuf-as-kube-answers-it", "first-listed-wins",
    "higher-quality-wins", "q0-refuses", "case-insensitive", "yaml-not-served",
    "browser-without-wildcard", "json-refused", "unreadable-quality-refuses",
])
def test_negotiate(accept: str, served: str | None) -> None:
    assert negotiate(accept) == served
