"""Shared shape of a benchmark figure: a value, its unit and the goal beside it."""

import resource
from dataclasses import asdict, dataclass
from typing import Optional


@dataclass
class Result:
    name: str
    value: float
    unit: str
    goal: Optional[str] = None  # e.g. "< 1.0"
    ok: Optional[bool] = None

    def as_dict(self) -> dict:
        return asdict(self)


def below(name: str, value: float, unit: str, limit: float) -> Result:
    return Result(name, round(value, 4), unit, f"< {limit}", value < limit)


def above(name: str, value: float, unit: str, limit: float) -> Result:
    return Result(name, round(value, 4), unit, f"> {limit}", value > limit)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
