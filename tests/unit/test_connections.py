"""How many connections a server may hold, given the open-file limit."""

from __future__ import annotations

import pytest

from evroc_compute.server.connections import FD_RESERVE, connection_cap


@pytest.mark.parametrize(("requested", "fd_limit", "cap"), [
    (4096, 1_048_576, 4096),
    (4096, 1024, 1024 - FD_RESERVE),
    (100, 1024, 100),
    (4096, 256, 192),
    (4096, 2, 2),
    (4096, 1, 1),
], ids=["plenty of descriptors: as requested", "a low limit lowers it, keeping a reserve",
        "a small request is kept", "macOS's 256: a quarter kept, not all of it",
        "a tiny limit: the reserve shrinks with it", "never below one"])
def test_connection_cap(requested: int, fd_limit: int, cap: int) -> None:
    assert connection_cap(requested, fd_limit) == cap
