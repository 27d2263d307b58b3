"""Unit tests of the keys' limits inside the proxy, on the `limits` library's
memory storage and on a real redis-server this test starts on a unix socket:
exact counts, Retry-After from the window, tokens charged after the answer,
places in flight given back, a changed limit keeping its count, and the
fall back to memory when Redis does not answer."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from entrypoint.inside.keys_file import KeyLimits
from entrypoint.inside.proxy_limits import Limiter, Pass, Refusal

from harness import start_redis, stop_redis


def outcomes(limiter: Limiter, limits: KeyLimits, count: int, name: str = "team-a") -> list[str]:
    async def go() -> list[str]:
        seen = []
        for _ in range(count):
            result = await limiter.admit(name, limits)
            seen.append(result.limit if isinstance(result, Refusal) else "ok")
            if isinstance(result, Pass):
                await result.release()
        return seen
    return asyncio.run(go())


def test_an_rpm_limit_lets_exactly_that_many_through_then_says_when_to_come_back() -> None:
    limiter = Limiter("memory://", "t")
    assert outcomes(limiter, KeyLimits(rpm=5), 7) == ["ok"] * 5 + ["rpm", "rpm"]

    async def refused() -> Refusal:
        return await limiter.admit("team-a", KeyLimits(rpm=5))
    refusal = asyncio.run(refused())
    assert 1 <= refusal.retry_after <= 60 and "5 requests per minute" in refusal.message


def test_each_key_name_has_its_own_count_and_no_limits_means_no_count() -> None:
    limiter = Limiter("memory://", "t")
    assert outcomes(limiter, KeyLimits(rpm=2), 3, "team-a") == ["ok", "ok", "rpm"]
    assert outcomes(limiter, KeyLimits(rpm=2), 2, "team-b") == ["ok", "ok"]
    assert outcomes(limiter, KeyLimits(), 50, "team-c") == ["ok"] * 50


def test_a_raised_limit_keeps_the_count_of_the_window() -> None:
    limiter = Limiter("memory://", "t")
    assert outcomes(limiter, KeyLimits(rpm=3), 3) == ["ok"] * 3
    # 3 made (and 1 refused, which counts too) of a new limit of 6: 2 more.
    assert outcomes(limiter, KeyLimits(rpm=3), 1) == ["rpm"]
    assert outcomes(limiter, KeyLimits(rpm=6), 3) == ["ok", "ok", "rpm"]


def test_tokens_are_charged_after_the_answer_and_refuse_the_next_request() -> None:
    limiter = Limiter("memory://", "t")
    limits = KeyLimits(tpm=100)

    async def go() -> list[str]:
        seen = []
        for _ in range(4):
            result = await limiter.admit("team-a", limits)
            seen.append(result.limit if isinstance(result, Refusal) else "ok")
            if isinstance(result, Pass):
                await limiter.charge("team-a", limits, 40)
        return seen
    # 0, 40, 80 used: admitted; 120 used: the fourth waits.
    assert asyncio.run(go()) == ["ok", "ok", "ok", "tpm"]


def test_max_parallel_counts_requests_in_flight_and_their_release() -> None:
    limiter = Limiter("memory://", "t")
    limits = KeyLimits(max_parallel=2)

    async def go() -> list[str]:
        first, second = await limiter.admit("k", limits), await limiter.admit("k", limits)
        third = await limiter.admit("k", limits)
        await first.release()
        await first.release()          # twice is once
        fourth = await limiter.admit("k", limits)
        fifth = await limiter.admit("k", limits)
        return [type(r).__name__ for r in (first, second, third, fourth, fifth)]
    assert asyncio.run(go()) == ["Pass", "Pass", "Refusal", "Pass", "Refusal"]


def test_counts_in_redis_are_shared_by_two_limiters_as_by_two_workers(redis_socket: Path) -> None:
    uri = f"async+redis+unix://{redis_socket}"
    limits = KeyLimits(rpm=4, max_parallel=1)

    async def go() -> list[str]:
        one, two = Limiter(uri, "t"), Limiter(uri, "t")
        seen = []
        held = await one.admit("team-a", limits)
        seen.append(type(held).__name__)
        busy = await two.admit("team-a", limits)      # one in flight, from the other worker
        seen.append(busy.limit if isinstance(busy, Refusal) else "ok")
        await held.release()
        for limiter in (two, one, two):
            result = await limiter.admit("team-a", limits)
            seen.append(result.limit if isinstance(result, Refusal) else "ok")
            if isinstance(result, Pass):
                await result.release()
        return seen
    # rpm counts the refused one as well: 1 + 1 + 2 = 4, so the last is over.
    assert asyncio.run(go()) == ["Pass", "max_parallel", "ok", "ok", "rpm"]


def test_a_redis_that_does_not_answer_falls_back_to_memory_and_says_so_once(tmp_path: Path, caplog) -> None:
    fallbacks = []
    limiter = Limiter(f"async+redis+unix://{tmp_path / 'nothing.sock'}", "t",
                      on_fallback=lambda: fallbacks.append(1))
    caplog.set_level(logging.WARNING, logger="entrypoint.inside.proxy_limits")
    assert outcomes(limiter, KeyLimits(rpm=2), 3) == ["ok", "ok", "rpm"]
    assert len(fallbacks) == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "limits count in each proxy worker's memory" in warnings[0]


def test_the_limiter_goes_back_to_redis_when_it_answers_again(tmp_path: Path, caplog) -> None:
    socket, now = tmp_path / "redis.sock", [0.0]
    server = start_redis(tmp_path, unix_socket=socket)
    limiter = Limiter(f"async+redis+unix://{socket}", "t", monotonic=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="entrypoint.inside.proxy_limits")
    try:
        assert outcomes(limiter, KeyLimits(rpm=10), 1) == ["ok"]
        stop_redis(server)
        assert outcomes(limiter, KeyLimits(rpm=10), 2) == ["ok", "ok"]     # in memory now
        server = start_redis(tmp_path, unix_socket=socket)
        now[0] = 0.5                                                        # not asked again yet
        assert outcomes(limiter, KeyLimits(rpm=10), 1) == ["ok"]
        now[0] = 2.0
        assert outcomes(limiter, KeyLimits(rpm=10), 1) == ["ok"]
    finally:
        stop_redis(server)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "does not answer" in warnings[0]
    assert warnings[1] == "the limiter's Redis answers again: limits count there again"
