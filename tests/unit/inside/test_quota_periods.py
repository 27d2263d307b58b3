"""Unit tests of the quota periods' calendar (UTC): where each period starts
and ends around hour, day, week, month and year boundaries and leap days,
the name a period's counter takes, Retry-After and how long a counter is kept."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from entrypoint.inside.quota_periods import PERIODS, keep_seconds, span_at


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.mark.parametrize(("period", "now", "start", "end", "label"), [
    ("hour", "2026-12-07 03:59:59.999", "2026-12-07T03:00:00", "2026-12-07T04:00:00", "2026-12-07T03"),
    ("hour", "2026-12-07 04:00:00", "2026-12-07T04:00:00", "2026-12-07T05:00:00", "2026-12-07T04"),
    ("day", "2026-12-31 23:59:59", "2026-12-31T00:00:00", "2027-01-01T00:00:00", "2026-12-31"),
    ("day", "2028-02-29 12:00:00", "2028-02-29T00:00:00", "2028-03-01T00:00:00", "2028-02-29"),
    # 2026-12-07 is a Monday: it starts its week; Sunday the 6th ends the one before.
    ("week", "2026-12-07 00:00:00", "2026-12-07T00:00:00", "2026-12-14T00:00:00", "2026-12-07"),
    ("week", "2026-12-06 23:59:59", "2026-11-30T00:00:00", "2026-12-07T00:00:00", "2026-11-30"),
    ("week", "2027-01-01 10:00:00", "2026-12-28T00:00:00", "2027-01-04T00:00:00", "2026-12-28"),
    ("month", "2026-12-31 23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00", "2026-12"),
    ("month", "2027-01-01 00:00:00", "2027-01-01T00:00:00", "2027-02-01T00:00:00", "2027-01"),
    ("month", "2028-02-15 00:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00", "2028-02"),   # leap year
    ("month", "2027-02-28 23:59:59", "2027-02-01T00:00:00", "2027-03-01T00:00:00", "2027-02"),
    ("month", "2100-02-28 23:59:59", "2100-02-01T00:00:00", "2100-03-01T00:00:00", "2100-02"),   # no leap day
])
def test_a_period_starts_and_ends_on_the_utc_calendar(period, now, start, end, label) -> None:
    span = span_at(period, at(now))
    assert (iso(span.start), iso(span.end), span.label) == (start, end, label)


def test_a_period_ends_exactly_where_the_next_begins() -> None:
    for period in PERIODS:
        now = at("2028-02-29 23:30:00")
        span = span_at(period, now)
        assert span_at(period, span.end - 0.001).start == span.start
        assert span_at(period, span.end).start == span.end


def test_february_of_a_leap_year_has_29_days_and_of_others_28() -> None:
    assert span_at("month", at("2028-02-10 00:00:00")).end - span_at("month", at("2028-02-10 00:00:00")).start \
        == 29 * 86400
    assert span_at("month", at("2027-02-10 00:00:00")).end - span_at("month", at("2027-02-10 00:00:00")).start \
        == 28 * 86400


def test_retry_after_is_the_whole_seconds_left_and_never_zero() -> None:
    span = span_at("day", at("2026-12-07 12:00:00"))
    assert span.seconds_left(at("2026-12-07 12:00:00")) == 12 * 3600
    assert span.seconds_left(at("2026-12-07 23:59:59.5")) == 1
    assert span.seconds_left(span.end - 0.0001) == 1


def test_a_counter_is_kept_one_period_past_its_end() -> None:
    now = at("2026-12-20 00:00:00")
    span = span_at("month", now)
    assert keep_seconds(span, now) == (span.end - now) + 31 * 86400


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown period 'year'"):
        span_at("year", 0.0)
