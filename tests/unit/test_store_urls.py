"""Store URLs in logs never show a password."""

from __future__ import annotations

import pytest

from evroc_compute.store.urls import redacted


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://h/db?user=u&password=secret&sslmode=require",
     "postgresql://h/db?user=u&password=***&sslmode=require"),
    ("postgresql://h/db?password=secret", "postgresql://h/db?password=***"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("sqlite:///data/store.db", "sqlite:///data/store.db"),
])
def test_redacted(url: str, shown: str) -> None:
    assert redacted(url) == shown
