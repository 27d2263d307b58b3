"""Unit tests of keys' token quotas in the proxy's limiter, with a clock the
test sets: admission like tpm (the request that crosses the quota is answered,
the next are refused until the period ends), the 429's fields and the quota
headers, the rollover to a new period, a changed quota keeping its count,
exact counts from two limiters (two workers) on one real redis-server, the
fail-open when Redis does not answer and the tokens counted meanwhile added
to Redis afterwards, and the /metrics lines."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import redis

from entrypoint.inside.keys_file import KeyLimits, Quota
from entrypoint.inside.proxy_limits import Limiter, Pass, Refusal
from entrypoint.inside.proxy_quotas import quota_metrics_text
from entrypoint.inside.proxy_usage import AnsweredRequest, Meter, access_line

from harness import start_redis, stop_redis

DAY = KeyLimits(quotas=(Quota(100, "day"),))


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, text: str) -> None:
        self.now = at(text)

    def __call__(self) -> float:
        return self.now


def admit(limiter: Limiter, limits: KeyLimits = DAY, name: str = "team-a") -> Pass | Refusal:
    return asyncio.run(limiter.admit(name, limits))


def charge(limiter: Limiter, tokens: int, limits: KeyLimits = DAY, name: str = "team-a") -> None:
    asyncio.run(limiter.charge(name, limits, tokens))


def test_the_request_that_crosses_the_quota_is_answered_and_the_next_is_refused_until_the_day_ends() -> None:
    clock = Clock("2026-12-07 18:00:00")
    limiter = Limiter("memory://", "t", clock=clock)
    assert isinstance(admit(limiter), Pass)
    charge(limiter, 60)
    assert isinstance(admit(limiter), Pass)      # 60 used of 100: admitted
    charge(limiter, 60)                          # crosses: 120
    refused = admit(limiter)
    assert isinstance(refused, Refusal)
    assert (refused.limit, refused.kind, refused.code, refused.label) == (
        "quota", "insufficient_quota", "insufficient_quota", "quota-day")
    assert refused.retry_after == 6 * 3600
    assert "quota of 100 tokens per day (120 used)" in refused.message
    assert dict(refused.headers) == {"x-quota-limit-tokens-day": "100", "x-quota-remaining-tokens-day": "0",
                                     "x-quota-reset-tokens-day": str(6 * 3600), "x-should-retry": "false"}


def test_every_admitted_request_carries_the_tokens_left_per_period() -> None:
    limits = KeyLimits(quotas=(Quota(1000, "hour"), Quota(5000, "month")))
    limiter = Limiter("memory://", "t", clock=Clock("2026-12-07 18:59:00"))
    charge(limiter, 300, limits)
    admitted = admit(limiter, limits)
    assert isinstance(admitted, Pass)
    assert dict(admitted.headers) == {
        "x-quota-limit-tokens-hour": "1000", "x-quota-remaining-tokens-hour": "700",
        "x-quota-reset-tokens-hour": "60",
        "x-quota-limit-tokens-month": "5000", "x-quota-remaining-tokens-month": "4700",
        "x-quota-reset-tokens-month": str(24 * 86400 + 5 * 3600 + 60)}


def test_a_key_waits_for_the_longest_of_its_exhausted_periods() -> None:
    limits = KeyLimits(quotas=(Quota(10, "hour"), Quota(10, "day")))
    limiter = Limiter("memory://", "t", clock=Clock("2026-12-07 22:30:00"))
    charge(limiter, 10, limits)
    refused = admit(limiter, limits)
    assert isinstance(refused, Refusal)
    assert (refused.label, refused.retry_after) == ("quota-day", 90 * 60)


def test_a_new_period_starts_from_zero_without_anything_reset() -> None:
    clock = Clock("2026-12-31 23:59:59")
    limiter = Limiter("memory://", "t", clock=clock)
    month = KeyLimits(quotas=(Quota(50, "month"),))
    charge(limiter, 50, month)
    assert isinstance(admit(limiter, month), Refusal)
    clock.now = at("2027-01-01 00:00:00")
    admitted = admit(limiter, month)
    assert isinstance(admitted, Pass) and dict(admitted.headers)["x-quota-remaining-tokens-month"] == "50"


def test_a_changed_quota_keeps_the_count_of_its_period() -> None:
    limiter = Limiter("memory://", "t", clock=Clock("2026-12-07 12:00:00"))
    charge(limiter, 80)
    assert isinstance(admit(limiter, KeyLimits(quotas=(Quota(80, "day"),))), Refusal)
    admitted = admit(limiter, KeyLimits(quotas=(Quota(200, "day"),)))
    assert isinstance(admitted, Pass) and dict(admitted.headers)["x-quota-remaining-tokens-day"] == "120"


def test_keys_count_apart_and_a_key_without_quota_gets_no_headers() -> None:
    limiter = Limiter("memory://", "t", clock=Clock("2026-12-07 12:00:00"))
    charge(limiter, 100, name="team-a")
    assert isinstance(admit(limiter, name="team-a"), Refusal)
    assert isinstance(admit(limiter, name="team-b"), Pass)
    plain = admit(limiter, KeyLimits(rpm=5))
    assert isinstance(plain, Pass) and plain.headers == ()


def test_two_workers_on_one_redis_count_every_token_exactly(redis_socket: Path) -> None:
    clock = Clock("2026-12-07 12:00:00")
    uri = f"async+redis+unix://{redis_socket}"
    limits = KeyLimits(quotas=(Quota(10**9, "day"), Quota(10**9, "month")))

    async def worker() -> None:
        limiter = Limiter(uri, "t", clock=clock)
        # Interleaved, a few at a time as a worker's requests end: 200 at once
        # open 200 connections, and on a busy machine one of them may miss the
        # limiter's 0.5 s Redis timeout, which counts in memory by design.
        at_once = asyncio.Semaphore(8)

        async def one() -> None:
            async with at_once:
                await limiter.charge("team-a", limits, 7)
        await asyncio.gather(*(one() for _ in range(200)))
    async def both() -> None:
        await asyncio.gather(worker(), worker())
    asyncio.run(both())
    client = redis.Redis(unix_socket_path=str(redis_socket))
    assert int(client.get("t/quota/team-a/day/2026-12-07")) == 2 * 200 * 7
    assert int(client.get("t/quota/team-a/month/2026-12")) == 2 * 200 * 7
    # Kept one period past the period's end, counted from now (not Redis's clock's idea of the end).
    assert 12 * 3600 + 86400 - 5 <= client.ttl("t/quota/team-a/day/2026-12-07") <= 12 * 3600 + 86400


def test_quota_state_tells_used_quota_and_period_end_for_a_key(redis_socket: Path) -> None:
    limits = KeyLimits(quotas=(Quota(500, "day"), Quota(2000000, "month")))

    async def go() -> list:
        limiter = Limiter(f"async+redis+unix://{redis_socket}", "t", clock=Clock("2026-12-07 12:00:00"))
        await limiter.charge("team-a", limits, 42)
        assert await limiter.quota_states("team-a", KeyLimits(rpm=1)) == []
        return await limiter.quota_states("team-a", limits)
    states = asyncio.run(go())
    assert [(s.quota.period, s.used, s.quota.tokens, s.remaining, s.span.end) for s in states] == [
        ("day", 42, 500, 458, at("2026-12-08 00:00:00")), ("month", 42, 2000000, 1999958, at("2027-01-01 00:00:00"))]


def test_metrics_lines_name_the_key_and_the_period() -> None:
    limiter = Limiter("memory://", "t", clock=Clock("2026-12-07 12:00:00"))
    charge(limiter, 42)
    report = asyncio.run(limiter.quota_report([("team-a", DAY), ("team-b", KeyLimits(rpm=3))]))
    text = quota_metrics_text(report).decode()
    assert 'llm_entry_quota_tokens{key="team-a",period="day"} 100.0' in text
    assert 'llm_entry_quota_used_tokens{key="team-a",period="day"} 42.0' in text
    assert f'llm_entry_quota_period_end_seconds{{key="team-a",period="day"}} {at("2026-12-08 00:00:00")}' in text
    assert "team-b" not in text
    assert quota_metrics_text([]) == b""


def test_a_redis_gone_fails_open_and_the_tokens_counted_meanwhile_reach_redis_when_it_is_back(
        tmp_path: Path) -> None:
    socket, now, fallbacks = tmp_path / "redis.sock", [0.0], []
    servers = [start_redis(tmp_path, unix_socket=socket)]
    limiter = Limiter(f"async+redis+unix://{socket}", "t", monotonic=lambda: now[0],
                      on_fallback=lambda: fallbacks.append(1), clock=Clock("2026-12-07 12:00:00"))

    async def go() -> list[str]:
        seen = []
        await limiter.charge("team-a", DAY, 100)
        seen.append(type(await limiter.admit("team-a", DAY)).__name__)
        stop_redis(servers[0])
        seen.append(type(await limiter.admit("team-a", DAY)).__name__)   # fails open: memory counts from zero
        await limiter.charge("team-a", DAY, 30)
        servers.append(start_redis(tmp_path, unix_socket=socket))    # a fresh one: it holds none of the 100
        now[0] = 2.0
        await limiter.quota_states("team-a", DAY)                    # Redis answers again: the 30 go there
        return seen
    try:
        assert asyncio.run(go()) == ["Refusal", "Pass"]
        assert fallbacks
        client = redis.Redis(unix_socket_path=str(socket))
        assert int(client.get("t/quota/team-a/day/2026-12-07")) == 30
    finally:
        stop_redis(servers[-1])


def test_the_access_line_of_a_refused_request_says_which_limit_refused_it() -> None:
    refused = AnsweredRequest("team-a", "-", "/v1/chat/completions", 429, None, 0.001, None, "quota-month")
    assert access_line(0.0, refused).endswith("status=429 prompt_tokens=- completion_tokens=- ms=1.0 "
                                              "refused=quota-month")
    answered = AnsweredRequest("team-a", "demo", "/v1/chat/completions", 200, None, 0.001)
    assert "refused" not in access_line(0.0, answered)


def test_the_meter_adds_the_quota_headers_to_the_answer() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)
    meter = Meter(send)
    meter.headers = (("x-quota-remaining-tokens-day", "42"),)
    asyncio.run(meter.send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]}))
    assert sent[0]["headers"] == [(b"content-type", b"application/json"), (b"x-quota-remaining-tokens-day", b"42")]
