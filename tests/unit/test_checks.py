"""Unit tests of the checks: one deadline per check, however many requests it
makes, and a checker thread that no exception can kill."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from entrypoint.checks import Checker, describe_failure, proxy_check
from entrypoint.keys import Secret

from fakes import FakeClock

TIMEOUT = 3.0


class Answer:
    def __init__(self, status: int, body: dict | None = None):
        self.status_code = status
        self._body = body or {}

    def json(self) -> dict:
        return self._body


class SlowSession:
    """Each request takes `takes` seconds of the fake clock, if its timeout allows."""

    def __init__(self, clock: FakeClock, takes: float):
        self.clock = clock
        self.takes = takes
        self.timeouts: list[float] = []

    def get(self, url: str, timeout: float, headers: dict | None = None) -> Answer:
        self.timeouts.append(timeout)
        if self.takes > timeout:
            self.clock.sleep(timeout)
            raise requests.exceptions.ReadTimeout("read timed out")
        self.clock.sleep(self.takes)
        if url.endswith("/v1/models"):
            return Answer(200, {"data": [{"id": "tiny"}]})
        return Answer(200)


def check_with(session: SlowSession, clock: FakeClock):
    check = proxy_check("http://127.0.0.1:8080", Secret("sk-" + "k" * 30), "tiny", clock=clock)
    return check(session, clock() + TIMEOUT)


def test_the_proxy_check_passes_when_both_requests_answer_in_time() -> None:
    clock = FakeClock()
    assert check_with(SlowSession(clock, 0.5), clock) == (True, "/health/readiness and /v1/models 200")


def test_both_proxy_requests_share_one_check_timeout() -> None:
    clock = FakeClock()
    session = SlowSession(clock, 2.0)
    with pytest.raises(requests.exceptions.Timeout):
        check_with(session, clock)
    assert session.timeouts == [TIMEOUT, pytest.approx(1.0)]
    assert clock() == pytest.approx(TIMEOUT)


def test_a_check_whose_deadline_passed_makes_no_further_request() -> None:
    clock = FakeClock()
    session = SlowSession(clock, TIMEOUT)
    with pytest.raises(requests.exceptions.Timeout) as raised:
        check_with(session, clock)
    assert len(session.timeouts) == 1
    assert describe_failure(raised.value) == "no answer within the check timeout"


def test_an_unexpected_exception_is_a_failed_check_and_the_checker_goes_on() -> None:
    calls = iter([RuntimeError("surprise"), (True, "/health 200")])
    reports: list[tuple[bool, str]] = []
    done = threading.Event()

    def check(session, deadline):
        outcome = next(calls, (True, "/health 200"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def report(name, generation, ok, detail, at):
        reports.append((ok, detail))
        if ok:
            done.set()

    checker = Checker("engine", check, interval=0.01, timeout=1.0, report=report).start()
    checker.follow(0, True)
    try:
        assert done.wait(10), f"the checker stopped reporting after {reports}"
    finally:
        checker.stop()
    assert reports[0] == (False, "RuntimeError: surprise")
    assert reports[1] == (True, "/health 200")


def test_the_checker_gives_each_check_a_deadline_one_timeout_ahead() -> None:
    seen: list[float] = []
    got = threading.Event()

    def check(session, deadline):
        seen.append(deadline - time.monotonic())
        got.set()
        return True, "ok"

    checker = Checker("engine", check, interval=10, timeout=2.5, report=lambda *a: None).start()
    checker.follow(0, True)
    try:
        assert got.wait(10)
    finally:
        checker.stop()
    # At most one timeout ahead; the lower bound leaves room for a slow thread start.
    assert 1.0 < seen[0] <= 2.5


def test_the_checker_says_when_each_check_begins_before_its_result() -> None:
    events: list[tuple] = []
    got = threading.Event()

    def check(session, deadline):
        events.append(("check",))
        return True, "ok"

    def report(name, generation, ok, detail, at):
        events.append(("report", name, generation, ok))
        got.set()

    checker = Checker("proxy", check, interval=10, timeout=2.5, report=report,
                      began=lambda name, generation, at: events.append(("began", name, generation))).start()
    checker.follow(3, True)
    try:
        assert got.wait(10)
    finally:
        checker.stop()
    assert events[:3] == [("began", "proxy", 3), ("check",), ("report", "proxy", 3, True)]
