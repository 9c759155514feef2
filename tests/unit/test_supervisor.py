"""The supervisor of serve's controllers process: restart back-off and log lines."""

from __future__ import annotations

import orjson
import pytest

from evroc_compute.supervisor import labelled, next_wait


@pytest.mark.parametrize(("wait", "ran", "expected"), [
    (0.0, 0.1, 0.5),     # the first restart: at once, almost
    (0.5, 0.1, 1.0),     # dying young again: twice as long
    (16.0, 2.0, 30.0),   # but never longer than 30 s
    (30.0, 1.0, 30.0),
    (30.0, 60.0, 0.5),   # a run of a minute was a good run: back to the start
])
def test_a_child_that_keeps_dying_young_waits_longer_each_time(wait: float, ran: float,
                                                               expected: float) -> None:
    assert next_wait(wait, ran) == expected


def test_a_text_line_gets_the_process_name_and_pid_before_it() -> None:
    assert labelled(b"2026-12-04 INFO x: leading\n", "controllers", 42) == \
        b"controllers[42] 2026-12-04 INFO x: leading\n"


def test_a_json_line_stays_one_json_object_with_the_process_added() -> None:
    line = labelled(b'{"level": "info", "message": "leading"}\n', "controllers", 42)
    assert orjson.loads(line) == {"level": "info", "message": "leading",
                                  "process": "controllers", "pid": 42}
    assert labelled(b"{not json\n", "controllers", 42) == b"controllers[42] {not json\n"
