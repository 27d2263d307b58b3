"""Medians, percentiles and spreads: the only statistics the report uses."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks; nan when empty."""
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return data[0]
    position = (len(data) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class Summary:
    """A quantity measured in several runs: its median and the range it fell in."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        data = [v for v in values if not math.isnan(v)]
        if not data:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(median(data), min(data), max(data), len(data))

    def text(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        """"12.3 (11.9-13.0)": median and min-max over the runs."""
        if self.runs == 0:
            return "n/a"
        value = f"{self.median * scale:.{digits}f}"
        if self.runs > 1:
            value += f" ({self.low * scale:.{digits}f}–{self.high * scale:.{digits}f})"
        return value + unit


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator
