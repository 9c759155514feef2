"""How many connections a server may hold, given the open-file limit."""

from __future__ import annotations

import pytest

from evroc_compute.server.connections import FD_RESERVE, connection_cap


@pytest.mark.parametrize(("requested", "fd_limit", "cap"), [
    (4096, 1_048_576, 4096),
    (4096, 1024, 1024 - FD_RESERVE),
    (100, 1024, 100),
    (4096, FD_RESERVE, 1),
    (4096, 10, 1),
], ids=["plenty of descriptors: as requested", "a low limit lowers it, keeping a reserve",
        "a small request is kept", "nothing left past the reserve: still one",
        "a limit below the reserve: still one"])
def test_connection_cap(requested: int, fd_limit: int, cap: int) -> None:
    assert connection_cap(requested, fd_limit) == cap
