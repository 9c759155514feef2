"""Per-user limits on requests in flight and open watches."""

from __future__ import annotations

import pytest

from evroc_compute.server import errors
from evroc_compute.server.fairness import Limits

# (held by the user before: (requests, watches), limits: (requests, watches), asking a watch?,
#  admitted?)
CASES = {
    "a request under the limit is admitted": ((1, 0), (2, 2), False, True),
    "a request at the limit is refused": ((2, 0), (2, 2), False, False),
    "open watches do not use up the request budget": ((0, 2), (2, 2), False, True),
    "a watch under its limit is admitted": ((0, 1), (2, 2), True, True),
    "a watch at its limit is refused": ((0, 2), (2, 2), True, False),
    "requests in flight do not use up the watch budget": ((2, 0), (2, 2), True, True),
    "a limit of 0 is no limit": ((500, 500), (0, 0), False, True),
    "a limit of 0 is no limit for watches": ((500, 500), (0, 0), True, True),
}


@pytest.mark.parametrize(("held", "limits", "watch", "admitted"), CASES.values(), ids=CASES.keys())
def test_admit(held: tuple[int, int], limits: tuple[int, int], watch: bool,
               admitted: bool) -> None:
    fair = Limits(*limits)
    for _ in range(held[0]):
        fair.requests["alice"] = fair.requests.get("alice", 0) + 1
    for _ in range(held[1]):
        fair.watches["alice"] = fair.watches.get("alice", 0) + 1
    if admitted:
        fair.admit("alice", watch)
    else:
        with pytest.raises(errors.ApiError) as refused:
            fair.admit("alice", watch)
        status = refused.value.status()
        assert (status["code"], status["reason"]) == (429, "TooManyRequests")
        assert refused.value.retry_after == 1
        option = "--max-watches-per-user" if watch else "--max-requests-per-user"
        assert "'alice'" in status["message"] and option in status["message"]


def test_one_users_limit_is_not_anothers() -> None:
    fair = Limits(max_requests=2, max_watches=1)
    fair.admit("alice", False)
    fair.admit("alice", False)
    with pytest.raises(errors.ApiError):
        fair.admit("alice", False)
    fair.admit("bob", False)  # alice at her limit takes nothing from bob
    fair.admit("bob", True)


def test_a_released_slot_can_be_taken_again_and_idle_users_leave_no_entry() -> None:
    fair = Limits(max_requests=1, max_watches=1)
    fair.admit("alice", False)
    fair.admit("alice", True)
    fair.release("alice", False)
    fair.admit("alice", False)
    fair.release("alice", False)
    fair.release("alice", True)
    assert fair.requests == {} and fair.watches == {}
