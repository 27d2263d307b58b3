"""The calendar periods of a key's token quota, in UTC: hour, day, week
(from Monday 00:00) and month (from the 1st, 00:00).

A period is known by its start, so the counter of a period is named after
it: when the clock passes the end, the next request counts under a new name
and starts from zero. Nothing resets a count, so nothing can reset it early
or late, and a replica whose clock runs a little apart from another's moves
to the next period a little apart, never loses a count.

Pure functions of an epoch time; standard library only (the proxy imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

PERIODS = ("hour", "day", "week", "month")
PERIODS_HELP = "hour, day, week or month"


@dataclass(frozen=True)
class PeriodSpan:
    """One period of the calendar: [start, end) in epoch seconds, and the start's name."""

    period: str
    start: int
    end: int

    @property
    def label(self) -> str:
        """The start as a counter's name takes it: '2026-12-07T04', '2026-12-07', '2026-12'."""
        at = datetime.fromtimestamp(self.start, timezone.utc)
        if self.period == "hour":
            return at.strftime("%Y-%m-%dT%H")
        if self.period == "month":
            return at.strftime("%Y-%m")
        return at.strftime("%Y-%m-%d")    # day, and a week by its Monday

    def seconds_left(self, now: float) -> int:
        """Whole seconds until the period ends, at least 1 (what Retry-After says)."""
        return max(1, int(self.end - now + 0.999999))


def _month_after(at: datetime) -> datetime:
    return at.replace(year=at.year + 1, month=1) if at.month == 12 else at.replace(month=at.month + 1)


def span_at(period: str, now: float) -> PeriodSpan:
    """The period of kind `period` that holds the instant `now` (epoch seconds, UTC)."""
    at = datetime.fromtimestamp(int(now // 1), timezone.utc)
    if period == "hour":
        start = at.replace(minute=0, second=0)
        end = start + timedelta(hours=1)
    elif period == "day":
        start = at.replace(hour=0, minute=0, second=0)
        end = start + timedelta(days=1)
    elif period == "week":
        start = at.replace(hour=0, minute=0, second=0) - timedelta(days=at.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = at.replace(day=1, hour=0, minute=0, second=0)
        end = _month_after(start)
    else:
        raise ValueError(f"unknown period {period!r}: use {PERIODS_HELP}")
    return PeriodSpan(period, int(start.timestamp()), int(end.timestamp()))


def keep_seconds(span: PeriodSpan, now: float) -> int:
    """How long a period's counter is kept from `now`: until one period length
    after the period's end, so that a replica whose clock lags still finds it,
    and /metrics can tell the last period's count for a while. Relative, not
    an absolute time: Redis's clock need not agree with the proxy's."""
    return max(1, int(span.end - now) + (span.end - span.start))
