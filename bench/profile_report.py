"""Summarise a py-spy `--format raw` (collapsed stacks) profile: self and inclusive time.

    python bench/profile_report.py bench/results/profile-create.txt [--top 25] [--by line]

Percentages are of all samples in the file (py-spy records only non-idle stacks unless run
with --idle, so this is "share of the server's busy time").
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def _key(frame: str, by: str) -> str:
    frame = frame.strip()
    if by == "function":
        frame = _LINE.sub(")", frame)
    frame = frame.replace(str(Path.cwd()) + "/", "")
    frame = re.sub(r"\S*/site-packages/", "", frame)
    frame = re.sub(r"\S*/lib/python3\.\d+/", "", frame)
    return frame


def load(path: Path, by: str = "function",
         thread: str = "") -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """(self, inclusive, per-thread, total) sample counts; `thread`: only stacks of threads
    whose label contains it (e.g. MainThread, the event loop)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread (", "process ")):
            if thread and thread not in frames[0]:
                continue
            threads[frames[0]] += count
            frames = frames[1:]
            while frames and frames[0].startswith(("thread (", "process ")):
                frames = frames[1:]
        total += count
        keys = [_key(f, by) for f in frames]
        if keys:
            own[keys[-1]] += count
        for key in set(keys):
            inclusive[key] += count
    return own, inclusive, threads, total


def report(path: Path, top: int = 25, by: str = "function", thread: str = "") -> str:
    own, inclusive, threads, total = load(path, by, thread)
    if not total:
        return f"{path}: no samples"
    out = [f"{path}: {total} samples" + (f" in threads matching {thread!r}" if thread else "")]
    if threads:
        out.append("  by thread:")
        out += [f"    {100 * n / total:5.1f}%  {t}" for t, n in threads.most_common(6)]
    out.append(f"  top {top} by self time:")
    out += [f"    {100 * n / total:5.1f}%  {k}" for k, n in own.most_common(top)]
    out.append(f"  top {top} by inclusive time:")
    out += [f"    {100 * n / total:5.1f}%  {k}" for k, n in inclusive.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--by", choices=("function", "line"), default="function")
    parser.add_argument("--thread", default="",
                        help="only threads whose label contains this (needs py-spy --threads)")
    args = parser.parse_args()
    for path in args.profiles:
        print(report(path, args.top, args.by, args.thread))
        print()


if __name__ == "__main__":
    main()
