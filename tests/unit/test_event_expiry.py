"""When an event expires: a TTL after the newest of its times."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from evroc_compute.api.tables import parse_rfc3339
from evroc_compute.server.expiry import expired
from evroc_compute.store.base import Entry

NOW = parse_rfc3339("2026-12-04T12:00:00Z")
TTL = 3600.0


def entry(**fields: Any) -> Entry:
    obj = {"metadata": {"name": "e", "creationTimestamp": "2026-12-04T09:00:00Z"}, **fields}
    return Entry("/core/events/default/e", 1, 1, orjson.dumps(obj), obj)


@pytest.mark.parametrize(("fields", "gone"), [
    ({}, True),  # only the server's creation time: 3 h old
    ({"lastTimestamp": "2026-12-04T11:30:00Z"}, False),  # bumped 30 min ago
    ({"lastTimestamp": "2026-12-04T10:59:59Z"}, True),
    ({"eventTime": "2026-12-04T11:59:00.123456Z"}, False),
    ({"series": {"count": 3, "lastObservedTime": "2026-12-04T11:10:00.000000Z"}}, False),
    ({"lastTimestamp": "garbage"}, True),  # unreadable times fall back to creation
    ({"lastTimestamp": "2026-12-04Tgarbage-garbage"}, True),
])
def test_expired(fields: dict[str, Any], gone: bool) -> None:
    assert expired(entry(**fields), NOW, TTL) is gone
