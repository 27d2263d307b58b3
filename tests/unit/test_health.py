"""Unit tests of the verdicts: starting, startup timeout, ready, unready after
failures, hung, and how the two programs' verdicts combine."""

from __future__ import annotations

import pytest

from entrypoint.config import Timing
from entrypoint.errors import EXIT_HUNG, EXIT_STARTUP_TIMEOUT
from entrypoint.health import Verdict, Vitals, assess, combine

TIMING = Timing(startup_timeout=100.0, check_interval=2.0, check_timeout=3.0, unready_after=2,
                hang_timeout=30.0, heartbeat_ttl=15.0, grace_period=25.0, drain_delay=0.0)
START = 1000.0


def started() -> Vitals:
    return Vitals("engine", started_at=START)


def ready_at(at: float) -> Vitals:
    vitals = started()
    vitals.record(True, "/health 200", at)
    return vitals


def test_a_program_never_checked_is_starting() -> None:
    verdict = assess(started(), START + 5, TIMING)
    assert verdict == Verdict(False, "engine starting (5 s): not checked yet")


def test_a_starting_program_that_fails_checks_is_still_starting_not_fatal() -> None:
    vitals = started()
    for at in range(5):
        vitals.record(False, "connection refused (still loading?)", START + at)
    verdict = assess(vitals, START + 50, TIMING)
    assert not verdict.ready
    assert verdict.fatal == "" and verdict.exit_code == 0
    assert verdict.waiting_for == "engine starting (50 s): connection refused (still loading?)"


def test_a_program_at_exactly_the_startup_timeout_still_has_time() -> None:
    assert assess(started(), START + 100, TIMING).fatal == ""


def test_a_program_not_ready_after_the_startup_timeout_is_fatal() -> None:
    vitals = started()
    vitals.record(False, "/health answered 503", START + 90)
    verdict = assess(vitals, START + 101, TIMING)
    assert not verdict.ready
    assert verdict.exit_code == EXIT_STARTUP_TIMEOUT
    assert verdict.fatal == ("engine was not ready after 101 s (--startup-timeout 100 s); "
                             "last check: /health answered 503")


def test_a_program_that_passed_a_check_is_ready() -> None:
    assert assess(ready_at(START + 10), START + 11, TIMING) == Verdict(True)


def test_a_ready_program_is_never_timed_out_by_the_startup_timeout() -> None:
    assert assess(ready_at(START + 99), START + 120, TIMING).ready


def test_one_failure_below_unready_after_keeps_a_program_ready() -> None:
    vitals = ready_at(START + 10)
    vitals.record(False, "no answer within the check timeout", START + 12)
    assert assess(vitals, START + 13, TIMING).ready


def test_unready_after_failures_in_a_row_make_a_program_not_ready() -> None:
    vitals = ready_at(START + 10)
    vitals.record(False, "/health answered 503", START + 12)
    vitals.record(False, "/health answered 503", START + 14)
    verdict = assess(vitals, START + 15, TIMING)
    assert verdict == Verdict(False, "engine failing checks (2 in a row): /health answered 503")


def test_a_passing_check_makes_a_failing_program_ready_again() -> None:
    vitals = ready_at(START + 10)
    for at in (12, 14, 16):
        vitals.record(False, "/health answered 503", START + at)
    assert not assess(vitals, START + 17, TIMING).ready
    vitals.record(True, "/health 200", START + 18)
    assert vitals.failures == 0
    assert assess(vitals, START + 19, TIMING) == Verdict(True)


def test_a_program_silent_for_exactly_the_hang_timeout_is_not_yet_hung() -> None:
    assert assess(ready_at(START + 10), START + 40, TIMING).fatal == ""


def test_a_program_without_a_passing_check_beyond_the_hang_timeout_is_hung() -> None:
    vitals = ready_at(START + 10)
    vitals.record(False, "no answer within the check timeout", START + 20)
    verdict = assess(vitals, START + 41, TIMING)
    assert not verdict.ready
    assert verdict.exit_code == EXIT_HUNG
    assert verdict.waiting_for == "engine not answering"
    assert verdict.fatal == ("engine has not passed a check for 31 s (--hang-timeout 30 s): it looks hung; "
                             "last check: no answer within the check timeout")


def test_a_hang_wins_over_failing_checks() -> None:
    vitals = ready_at(START + 10)
    for at in range(12, 42, 2):
        vitals.record(False, "/health answered 503", START + at)
    assert assess(vitals, START + 45, TIMING).exit_code == EXIT_HUNG


# --- combine -----------------------------------------------------------------

READY = Verdict(True)
ENGINE_STARTING = Verdict(False, "engine starting (5 s): not checked yet")
PROXY_FAILING = Verdict(False, "proxy failing checks (2 in a row): /health/readiness answered 503")
ENGINE_HUNG = Verdict(False, "engine not answering", fatal="engine looks hung", exit_code=EXIT_HUNG)
PROXY_TIMED_OUT = Verdict(False, "proxy did not start", fatal="proxy was not ready",
                          exit_code=EXIT_STARTUP_TIMEOUT)


def test_the_container_is_ready_only_when_every_program_is() -> None:
    assert combine([READY, READY]) == Verdict(True, "")


@pytest.mark.parametrize("verdicts", [[READY, ENGINE_STARTING], [ENGINE_STARTING, READY]])
def test_one_program_not_ready_makes_the_container_not_ready(verdicts: list[Verdict]) -> None:
    assert combine(verdicts) == Verdict(False, ENGINE_STARTING.waiting_for)


def test_every_reason_for_waiting_is_named() -> None:
    verdict = combine([ENGINE_STARTING, PROXY_FAILING])
    assert not verdict.ready
    assert verdict.waiting_for == f"{ENGINE_STARTING.waiting_for}; {PROXY_FAILING.waiting_for}"
    assert verdict.fatal == ""


def test_a_fatal_verdict_wins_over_not_ready_ones() -> None:
    assert combine([ENGINE_STARTING, PROXY_TIMED_OUT]) is PROXY_TIMED_OUT
    assert combine([READY, ENGINE_HUNG]) is ENGINE_HUNG


def test_the_first_fatal_verdict_wins() -> None:
    assert combine([ENGINE_HUNG, PROXY_TIMED_OUT]) is ENGINE_HUNG
    assert combine([PROXY_TIMED_OUT, ENGINE_HUNG]) is PROXY_TIMED_OUT


def test_a_fatal_verdict_names_its_program_so_a_hung_one_can_be_killed_at_once() -> None:
    assert assess(ready_at(START + 10), START + 41, TIMING).program == "engine"
    assert assess(started(), START + 101, TIMING).program == "engine"
    assert assess(ready_at(START + 10), START + 11, TIMING).program == ""


def test_a_check_in_flight_past_its_timeout_counts_as_a_failure() -> None:
    vitals = ready_at(START)
    vitals.record(False, "no answer within the check timeout", START + 5)
    vitals.begin(START + 7)              # a server that trickles bytes holds this one
    assert assess(vitals, START + 10, TIMING).ready        # 3 s: still within --check-timeout
    verdict = assess(vitals, START + 10.5, TIMING)
    assert verdict == Verdict(False, "engine failing checks (2 in a row): "
                                     "no answer within the check timeout (still waiting)")


def test_a_check_that_answers_ends_its_time_in_flight() -> None:
    vitals = ready_at(START)
    vitals.begin(START + 2)
    vitals.record(True, "/health 200", START + 2.1)
    assert assess(vitals, START + 20, TIMING).ready
