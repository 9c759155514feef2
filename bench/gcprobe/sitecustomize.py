"""Loaded into the *server* process (via PYTHONPATH) by `bench/run.py --gc-probe`.

Logs every cyclic-GC pass of generation 2, and any pass of 1 ms or more, as
`<unix time> <generation> <milliseconds> <collected>` lines to $EVROC_BENCH_GC_LOG, so the
benchmark can attribute collector pauses to its phases. No effect when the variable is unset.
"""

import os

_path = os.environ.get("EVROC_BENCH_GC_LOG")
if _path:
    import gc
    import time

    _out = open(_path, "a", buffering=1)
    _started = [0.0]
    _small = [0, 0.0]  # passes under the threshold: count, total seconds

    def _callback(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        took = time.perf_counter() - _started[0]
        generation = info.get("generation", 0)
        if generation == 2 or took >= 0.001:
            _out.write(f"{time.time():.6f} {generation} {took * 1000:.3f} "
                       f"{info.get('collected', 0)}\n")
        else:
            _small[0] += 1
            _small[1] += took
            if _small[0] % 5000 == 0:
                _out.write(f"{time.time():.6f} small {_small[1] * 1000:.3f} {_small[0]}\n")

    gc.callbacks.append(_callback)
