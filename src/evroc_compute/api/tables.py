"""Cell readers for printer columns, shared by every kind's column list.

kubectl prints Table cells verbatim, so dates are humanised here the way kube-apiserver
does it (`duration.HumanDuration`).
"""

from __future__ import annotations

import time
from calendar import timegm
from collections.abc import Callable
from functools import lru_cache
from typing import Any

Cell = Callable[[dict[str, Any]], Any]


def path(*keys: str) -> Cell:
    def read(obj: dict[str, Any]) -> Any:
        value: Any = obj
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value
    return read


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return {}


def condition_status(kind: str) -> Cell:
    return lambda obj: _condition(obj, kind).get("status")


def condition_reason(kind: str) -> Cell:
    return lambda obj: _condition(obj, kind).get("reason")


@lru_cache(maxsize=8192)
def parse_rfc3339(stamp: str) -> float:
    """Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` (fractions and offsets ignored)."""
    return float(timegm((int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
                         int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19]), 0, 0, 0)))


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age(obj: dict[str, Any]) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    return human_duration(time.time() - parse_rfc3339(stamp))
