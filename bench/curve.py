"""Scaling curve of the fleet benchmark: the same fleet at several sizes, one after the other.

Runs bench/fleet.py (its own server each time) at 1,000 / 5,000 / 10,000 / 20,000 VMs on one
fleet big enough for the largest (90 hosts of 256 vCPU / 2 TB, so every size is placed on the
same hosts), then prints one row per size: wall time (first create -> last VM Running), CPU
seconds of the server and its controllers process together and that CPU per VM, peak RSS (the
two processes' peaks added), stored writes and events per VM. A cost per VM that stays flat as
the fleet grows is the point of the curve; the RSS target (<= 1 GiB at 10,000) is checked.

    .venv/bin/python bench/curve.py                       # 1k, 5k, 10k, 20k
    .venv/bin/python bench/curve.py --sizes 1000,5000 --runs 2

Each run's full report is in bench/results/fleet-*.json; the curve goes to
bench/results/curve-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RSS_TARGET_MIB = 1024.0
RSS_TARGET_VMS = 10_000
WALL_TARGET_S = 30.0


def row(size: int, result: dict[str, Any]) -> dict[str, Any]:
    """One size's figures from a fleet.py results document."""
    r = result["results"]
    server, child = r["server"], r.get("controllers_process") or {}
    writes = r["writes"]["per_kind"]
    cpu = server["cpu_s"] + child.get("cpu_s", 0.0)
    return {"vms": size, "wall_s": r["wall_s"], "cpu_s": cpu,
            "cpu_ms_per_vm": 1000 * cpu / size,
            "peak_rss_mib": max(server["rss_peak_sampled_mib"], server["vm_hwm_mib"])
            + max(child.get("rss_peak_sampled_mib", 0.0), child.get("vm_hwm_mib", 0.0)),
            "writes_per_vm": sum(n for kind, n in writes.items() if kind != "Host"),
            "events_per_vm": (r.get("events") or {}).get("per_vm", 0.0),
            "all_running": bool((r.get("checks") or {}).get("all_running"))}


def render(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'VMs':>7}  {'wall':>8}  {'CPU':>10}  {'CPU/VM':>8}  {'peak RSS':>9}  "
             f"{'writes/VM':>9}  {'events/VM':>9}  ok"]
    for r in rows:
        lines.append(f"{r['vms']:>7,}  {r['wall_s']:>6.1f} s  {r['cpu_s']:>8.1f} s  "
                     f"{r['cpu_ms_per_vm']:>5.2f} ms  {r['peak_rss_mib']:>5.0f} MiB  "
                     f"{r['writes_per_vm']:>9.2f}  {r['events_per_vm']:>9.1f}  "
                     f"{'yes' if r['all_running'] else 'NO'}")
    at_target = [r for r in rows if r["vms"] == RSS_TARGET_VMS]
    for r in at_target:
        lines.append(f"{RSS_TARGET_VMS:,} VMs: peak RSS {r['peak_rss_mib']:.0f} MiB (target <= "
                     f"{RSS_TARGET_MIB:.0f}: {'met' if r['peak_rss_mib'] <= RSS_TARGET_MIB else 'NOT MET'}), "
                     f"wall {r['wall_s']:.1f} s (target <= {WALL_TARGET_S:.0f} s: "
                     f"{'met' if r['wall_s'] <= WALL_TARGET_S else 'NOT MET'})")
    return "\n".join(lines)


def spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size: the median run's figures, with the wall times of every run."""
    out = []
    for size in sorted({r["vms"] for r in rows}):
        runs = sorted((r for r in rows if r["vms"] == size), key=lambda r: r["wall_s"])
        middle = dict(runs[(len(runs) - 1) // 2])
        middle["wall_runs_s"] = [round(r["wall_s"], 1) for r in runs]
        middle["wall_median_s"] = statistics.median(r["wall_s"] for r in runs)
        out.append(middle)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,10000,20000")
    parser.add_argument("--runs", type=int, default=1, help="runs per size")
    parser.add_argument("--fleet-arg", action="append", default=[],
                        help="an extra argument for bench/fleet.py (repeatable)")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="evroc-curve-") as tmp:
        for run in range(args.runs):
            for size in (int(s) for s in args.sizes.split(",")):
                out = Path(tmp) / f"{size}-{run}"
                print(f"== {size:,} VMs (run {run + 1} of {args.runs})", file=sys.stderr,
                      flush=True)
                code = subprocess.call(
                    [sys.executable, str(BENCH / "fleet.py"), "--vms", str(size),
                     "--host-vcpu", "256", "--host-memory-gb", "2048", "--results-dir",
                     str(out), *args.fleet_arg], stdout=subprocess.DEVNULL)
                found = sorted(out.glob("fleet-*.json"))
                if not found:
                    print(f"fleet.py at {size} VMs wrote no results (exit {code})",
                          file=sys.stderr)
                    return 1
                result = json.loads(found[-1].read_text())
                (BENCH / "results").mkdir(exist_ok=True)
                (BENCH / "results" / found[-1].name).write_text(found[-1].read_text())
                rows.append(row(size, result))
                print(render(rows[-1:]).splitlines()[1], file=sys.stderr, flush=True)
    curve = spread(rows)
    print()
    print(render(curve))
    if args.runs > 1:
        for r in curve:
            print(f"{r['vms']:>7,} VMs: wall over {args.runs} runs {r['wall_runs_s']} s")
    path = BENCH / "results" / f"curve-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"started": started.isoformat(), "runs": rows, "curve": curve},
                               indent=2) + "\n")
    print(f"results in {path}")
    return 0 if all(r["all_running"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
