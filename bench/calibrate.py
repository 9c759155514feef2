"""How fast this machine is right now: the CPU seconds of a fixed pure-Python task.

The figures of a benchmark move with the machine: on this 2-core VM the same commit took 46 s
in one session and 67 s in the next, hours later, for 10,000 VMs, with nothing else running.
The fleet benchmark measures this task before it starts the server, so figures taken at
different times can be compared through it (lower is faster).
"""

from __future__ import annotations

import json
import time


def _task() -> int:
    objects = {f"k{i}": {"a": i, "b": [i, str(i)]} for i in range(300_000)}
    json.loads(json.dumps(objects))
    return sum(v["a"] for v in objects.values())


def calibration_seconds(rounds: int = 3) -> float:
    """The least CPU time of `rounds` runs of the task (the least is the least disturbed)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        _task()
        best = min(best, time.process_time() - started)
    return best


if __name__ == "__main__":
    print(f"calibration task: {calibration_seconds():.2f} s of CPU (lower is faster)")
