"""The own-key answer (GET /llm-entry/key): what a key has used of its limits,
read from the limiter's own counters, in this worker's memory and in a real
redis-server, and the answer's shape."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from entrypoint.inside.key_ring import MASTER_HOLDER, Holder, KeySource
from entrypoint.inside.keys_file import KeyLimits, Quota
from entrypoint.inside.own_key import own_key_answer, own_key_body
from entrypoint.inside.proxy_limits import InUse, Limiter, Pass

from harness import start_redis, stop_redis

LIMITS = KeyLimits(rpm=5, tpm=100, max_parallel=3)
TEAM = Holder(KeySource.KEYS_FILE, "team-a", LIMITS)


@pytest.fixture(params=["memory", "redis"])
def storage(request, tmp_path: Path):
    if request.param == "memory":
        yield "memory://"
        return
    server = start_redis(tmp_path, unix_socket=tmp_path / "redis.sock")
    try:
        yield f"async+redis+unix://{tmp_path / 'redis.sock'}"
    finally:
        stop_redis(server)


def by_limit(found: tuple[InUse, ...]) -> dict[str, InUse]:
    return {use.limit: use for use in found}


def test_what_a_key_used_is_read_from_the_counters_that_limit_it(storage) -> None:
    async def go() -> tuple[InUse, ...]:
        limiter = Limiter(storage, "llm-entry/test")
        passes = [await limiter.admit("team-a", LIMITS) for _ in range(3)]
        await limiter.charge("team-a", LIMITS, 42)
        assert isinstance(passes[0], Pass)
        await passes[0].release()            # two still in flight
        found = await limiter.in_use("team-a", LIMITS)
        for held in passes[1:]:
            assert isinstance(held, Pass)
            await held.release()
        return found
    used = by_limit(asyncio.run(go()))
    assert (used["rpm"].allowed, used["rpm"].used, used["rpm"].left) == (5, 3, 2)
    assert (used["tpm"].allowed, used["tpm"].used, used["tpm"].left) == (100, 42, 58)
    assert (used["max_parallel"].used, used["max_parallel"].left, used["max_parallel"].resets_in) == (2, 1, None)
    assert 1 <= used["rpm"].resets_in <= 60 and 1 <= used["tpm"].resets_in <= 60


def test_a_key_that_used_nothing_has_no_window_and_everything_left(storage) -> None:
    used = asyncio.run(Limiter(storage, "llm-entry/test").in_use("team-b", LIMITS))
    assert [(use.limit, use.used, use.left, use.resets_in) for use in used] == [
        ("rpm", 0, 5, None), ("tpm", 0, 100, None), ("max_parallel", 0, 3, None)]


def test_another_keys_use_is_not_counted_as_this_keys() -> None:
    async def go() -> tuple[InUse, ...]:
        limiter = Limiter("memory://", "p")
        await limiter.admit("team-b", LIMITS)
        return await limiter.in_use("team-a", LIMITS)
    assert all(use.used == 0 for use in asyncio.run(go()))


def test_a_count_past_the_limit_leaves_nothing_rather_than_less_than_nothing() -> None:
    assert InUse("tpm", 100, 130, 20).left == 0


def test_the_answer_names_the_key_its_limits_and_an_empty_list_of_quotas() -> None:
    body = own_key_body(Holder(KeySource.KEYS_FILE, "team-a", KeyLimits(rpm=5)), (InUse("rpm", 5, 2, 41),))
    assert body == {"name": "team-a", "source": "keys file", "limits": {"rpm": 5, "tpm": None, "max_parallel": None},
                    "usage": [{"limit": "rpm", "allowed": 5, "used": 2, "left": 3, "resets_in": 41}],
                    "quotas": []}


def test_the_master_key_is_told_it_has_no_limits() -> None:
    status, headers, body = asyncio.run(own_key_answer(MASTER_HOLDER, Limiter("memory://", "p")))
    assert status == 200 and (b"cache-control", b"no-store") in headers
    assert json.loads(body) == {"name": "master", "source": "master key",
                                "limits": {"rpm": None, "tpm": None, "max_parallel": None}, "usage": [], "quotas": []}


def test_a_keys_quotas_are_listed_with_their_period_from_the_quotas_counters(storage) -> None:
    limits = KeyLimits(rpm=5, quotas=(Quota(1000, "day"), Quota(20000, "month")))

    async def go() -> dict:
        limiter = Limiter(storage, "llm-entry/test")
        await limiter.admit("team-q", limits)
        await limiter.charge("team-q", limits, 42)
        return own_key_body(Holder(KeySource.KEYS_FILE, "team-q", limits), await limiter.in_use("team-q", limits))
    body = asyncio.run(go())
    assert [use["limit"] for use in body["usage"]] == ["rpm"] and "period" not in body["usage"][0]
    assert [(q["limit"], q["period"], q["allowed"], q["used"], q["left"]) for q in body["quotas"]] == [
        ("quota", "day", 1000, 42, 958), ("quota", "month", 20000, 42, 19958)]
    assert all(0 < q["resets_in"] <= 31 * 86400 for q in body["quotas"])
