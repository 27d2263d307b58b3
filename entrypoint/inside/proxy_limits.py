"""Keys' limits, enforced in front of LiteLLM in every proxy worker.

One limiter for every request a key makes, whichever path serves it (the
model relay or LiteLLM's own routes), so that a key's count is one count.
LiteLLM's parallel-request limiter is not used: it would keep a second set
of counters for the routes it serves, so `rpm=5` would let 5 through each
path, and its `retry-after` is always the window length.

- rpm and tpm: fixed one-minute windows of the `limits` library, counted in
  the storage llm-entry names (names.LIMITS_STORAGE_VARIABLE): this worker's
  memory when it is the only worker, else Redis (a private redis-server on a
  unix socket, or --redis-url, shared by replicas). A window starts with a
  key's first request; a refused request counts too (the count is one
  atomic increment, so two workers can never both take the last place).
  tpm is tested before a request and charged with the tokens the engine
  reported after it, so the request that crosses the limit is answered and
  the next ones wait for the window.
- max_parallel: `limits` has no concurrency limit, so it is the one part
  written here: a count in this worker's memory, or in Redis a sorted set of
  leases (one per request in flight), taken and checked in one Lua script.
  A lease lives LEASE_SECONDS and the worker that holds it renews it every
  RENEW_EVERY seconds while its request runs: a worker killed mid-request
  stops renewing, and its places come back within LEASE_SECONDS (a lease
  that lasted the request timeout kept a key at 429 for 600 s).

- quota: tokens per calendar period, counted durably in the same Redis
  (entrypoint.inside.proxy_quotas), tested before a request and charged
  after it like tpm.

When Redis does not answer, the limiter fails open to this worker's memory
(limits then hold per worker; quotas count from zero there, and the
tokens used meanwhile are added to Redis's count once it answers again), says so once in the log and counts it in
`llm_entry_limiter_fallbacks_total`, and asks Redis again after a second.

Import rules: standard library, `limits` and redis-py (LiteLLM needs both).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.strategies import FixedWindowRateLimiter
from limits.limits import safe_string
from limits.storage import storage_from_string

from entrypoint.inside import proxy_quotas
from entrypoint.inside.keys_file import KeyLimits
from entrypoint.inside.names import MEMORY_STORAGE
from entrypoint.inside.proxy_quotas import QUOTA_LIMIT, LocalQuotas, QuotaState, RedisQuotas

LOCAL = "async+memory://"
RETRY_SHARED_AFTER = 1.0        # seconds of memory-only counting after Redis failed
REDIS_TIMEOUT = 0.5             # seconds per Redis call before it counts as not answering
LEASE_SECONDS = 5.0             # a max_parallel place not renewed for this long is free again
RENEW_EVERY = 1.5               # seconds between two renewals of a lease in use

logger = logging.getLogger(__name__)


class _PerMinute(RateLimitItemPerMinute):
    """A limit whose counter is named by key name alone, not by its amount,
    so that a reload that changes `rpm=5` to `rpm=8` keeps the count."""

    def key_for(self, *identifiers: bytes | str | int | float) -> str:
        return "/".join([self.namespace, *map(safe_string, identifiers)])


@dataclass(frozen=True)
class Refusal:
    """Why a request waits: the 429 the client gets."""

    limit: str            # "rpm", "tpm", "max_parallel" or "quota"
    retry_after: int      # whole seconds until it may try again
    message: str
    headers: tuple[tuple[str, str], ...] = ()   # the key's quota headers
    period: str | None = None                   # the quota's period, for a quota

    @property
    def kind(self) -> str:
        """The error's type and code: OpenAI's own for an account out of quota."""
        return "insufficient_quota" if self.limit == QUOTA_LIMIT else "rate_limit_error"

    @property
    def code(self) -> str:
        return "insufficient_quota" if self.limit == QUOTA_LIMIT else "429"

    @property
    def label(self) -> str:
        """What the access line says was reached: 'rpm', 'quota-month'."""
        return f"{self.limit}-{self.period}" if self.period else self.limit


class Pass:
    """An admitted request: give it back (`release`) once its answer is sent."""

    def __init__(self, release: Callable[[], Any] | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._release = release
        self.headers = headers     # the key's quota headers, for its answer

    async def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            await release()


ADMITTED = Pass()   # for holders without a max_parallel: nothing to give back


@dataclass(frozen=True)
class InUse:
    """How much of one limit a key holds now, as the counters say (its own-key answer)."""

    limit: str               # "rpm", "tpm" or "max_parallel"
    allowed: int
    used: int                # a window's count may pass `allowed` (refused requests, the last answer's tokens)
    resets_in: int | None    # whole seconds until the window ends; None: no window open, or max_parallel
    period: str | None = None   # a quota's period ("day", "month", ...)

    @property
    def left(self) -> int:
        return max(0, self.allowed - self.used)


_TAKE_LEASE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
  return 1
end
return 0
"""

# Renew a lease still held (XX: never bring back one given back or expired).
_RENEW_LEASE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', t + tonumber(ARGV[1]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 1)
return renewed
"""

# The leases a key holds now, by Redis's clock (the one the leases were written with).
_COUNT_LEASES = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
return redis.call('ZCOUNT', KEYS[1], '(' .. t, '+inf')
"""


def storage_uri(value: str) -> str:
    """The `limits` URI for the storage llm-entry named; MEMORY_STORAGE is this worker's memory."""
    return LOCAL if value in ("", MEMORY_STORAGE, LOCAL) else value


def redis_client_url(uri: str) -> str:
    """redis-py's URL for a `limits` Redis URI."""
    return uri.removeprefix("async+").replace("redis+unix://", "unix://")


class LocalLeases:
    """max_parallel in one worker's memory (exact for one worker; a worker
    that dies takes its counts with it)."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    async def take(self, name: str, limit: int) -> Callable[[], Any] | None:
        if self._in_flight.get(name, 0) >= limit:
            return None
        self._in_flight[name] = self._in_flight.get(name, 0) + 1

        async def give_back() -> None:
            self._in_flight[name] -= 1
        return give_back

    async def held(self, name: str) -> int:
        return self._in_flight.get(name, 0)


class RedisLeases:
    """max_parallel across workers and replicas: a sorted set of leases per key,
    each renewed by its holder while its request runs."""

    def __init__(self, url: str, prefix: str, lease_seconds: float = LEASE_SECONDS,
                 renew_every: float = RENEW_EVERY) -> None:
        import redis.asyncio

        self.client = redis.asyncio.from_url(redis_client_url(url), socket_timeout=REDIS_TIMEOUT,
                                             socket_connect_timeout=REDIS_TIMEOUT)
        self._take = self.client.register_script(_TAKE_LEASE)
        self._renew = self.client.register_script(_RENEW_LEASE)
        self._count = self.client.register_script(_COUNT_LEASES)
        self._prefix = prefix
        self._lease_seconds = lease_seconds
        self._renew_every = renew_every

    async def take(self, name: str, limit: int) -> Callable[[], Any] | None:
        key, lease = f"{self._prefix}/in-flight/{name}", uuid.uuid4().hex
        if not await self._take(keys=[key], args=[limit, self._lease_seconds, lease]):
            return None
        renewing = asyncio.ensure_future(self._keep(key, lease))

        async def give_back() -> None:
            renewing.cancel()
            try:
                await self.client.zrem(key, lease)
            except Exception as error:  # noqa: BLE001 - the lease expires on its own
                logger.warning("could not give back a max_parallel place in Redis (%s): it expires "
                               "within %g s", type(error).__name__, self._lease_seconds)
        return give_back

    async def held(self, name: str) -> int:
        return int(await self._count(keys=[f"{self._prefix}/in-flight/{name}"]))

    async def _keep(self, key: str, lease: str) -> None:
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                await self._renew(keys=[key], args=[self._lease_seconds, lease])
            except Exception:  # noqa: BLE001, S112 - Redis away: the lease lapses, the limiter fails open
                continue


class Counters:
    """rpm/tpm windows, max_parallel leases and quota counts in one storage."""

    def __init__(self, uri: str, prefix: str) -> None:
        local = uri == LOCAL
        options: dict[str, Any] = {} if local else {
            "implementation": "redispy", "socket_timeout": REDIS_TIMEOUT,
            "socket_connect_timeout": REDIS_TIMEOUT}
        self.windows = FixedWindowRateLimiter(storage_from_string(uri, wrap_exceptions=True, **options))
        self.leases: LocalLeases | RedisLeases = LocalLeases() if local else RedisLeases(uri, prefix)
        self.quotas = LocalQuotas() if isinstance(self.leases, LocalLeases) else RedisQuotas(self.leases.client)
        self.prefix = prefix


class Limiter:
    """Admits or refuses a key's request, and charges its tokens afterwards."""

    def __init__(self, uri: str, prefix: str, monotonic: Callable[[], float] = time.monotonic,
                 on_fallback: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.time) -> None:
        self._shared = Counters(storage_uri(uri), prefix)
        self._local = self._shared if storage_uri(uri) == LOCAL else Counters(LOCAL, prefix)
        self._monotonic = monotonic
        self._clock = clock        # the calendar of quota periods (epoch seconds, UTC)
        # Quota tokens counted in memory while Redis did not answer: added to Redis once it does.
        self._unsaved: list[tuple[str, KeyLimits, int, float]] = []
        self._on_fallback = on_fallback
        self._shared_down_until: float | None = None

    async def admit(self, name: str, limits: KeyLimits) -> Pass | Refusal:
        if limits.unlimited:
            return ADMITTED
        return await self._with_fallback(lambda counters: self._admit(counters, name, limits))

    async def charge(self, name: str, limits: KeyLimits, tokens: int) -> None:
        """Count the tokens a request used against its key's tpm and quotas."""
        if tokens <= 0 or (limits.tpm is None and not limits.quotas):
            return
        now = self._clock()

        async def count(counters: Counters) -> None:
            if limits.tpm is not None:
                item = _PerMinute(limits.tpm, namespace=counters.prefix + "/tpm")
                await counters.windows.hit(item, name, cost=tokens)
            if limits.quotas:
                if counters is self._local and self._shared is not self._local:
                    self._unsaved.append((name, limits, tokens, now))
                await proxy_quotas.charge(counters.quotas, counters.prefix, name, limits.quotas, tokens, now)
        await self._with_fallback(count)

    async def quota_states(self, name: str, limits: KeyLimits) -> list[QuotaState]:
        """A key's quotas as counted now: used, quota and the period's end, one per period."""
        return [state for _, state in await self.quota_report([(name, limits)])]

    async def quota_report(self, holders: list[tuple[str, KeyLimits]]) -> list[tuple[str, QuotaState]]:
        """(name, state) of every quota of the keys given, in one read (/metrics)."""
        keys = [(name, limits.quotas) for name, limits in holders if limits.quotas]
        if not keys:
            return []
        return await self._with_fallback(
            lambda counters: proxy_quotas.report(counters.quotas, counters.prefix, keys, self._clock()))

    async def in_use(self, name: str, limits: KeyLimits) -> tuple[InUse, ...]:
        """What the key has used of each of its limits now, read from the counters that enforce them."""
        return await self._with_fallback(lambda counters: self._in_use(counters, name, limits))

    async def _in_use(self, counters: Counters, name: str, limits: KeyLimits) -> tuple[InUse, ...]:
        found = []
        for limit, allowed in (("rpm", limits.rpm), ("tpm", limits.tpm)):
            if allowed is not None:
                key = _PerMinute(allowed, namespace=f"{counters.prefix}/{limit}").key_for(name)
                used = await counters.windows.storage.get(key)
                ends = await counters.windows.storage.get_expiry(key)   # epoch time, as the library keeps it
                found.append(InUse(limit, allowed, used, max(1, math.ceil(ends - time.time())) if used else None))
        if limits.max_parallel is not None:
            found.append(InUse("max_parallel", limits.max_parallel, await counters.leases.held(name), None))
        if limits.quotas:
            now = self._clock()
            for state in await proxy_quotas.states(counters.quotas, counters.prefix, name, limits.quotas, now):
                found.append(InUse(QUOTA_LIMIT, state.quota.tokens, state.used, state.span.seconds_left(now),
                                   state.quota.period))
        return tuple(found)

    async def _admit(self, counters: Counters, name: str, limits: KeyLimits) -> Pass | Refusal:
        headers: tuple[tuple[str, str], ...] = ()
        if limits.quotas:
            now = self._clock()
            found = await proxy_quotas.states(counters.quotas, counters.prefix, name, limits.quotas, now)
            headers = proxy_quotas.quota_headers(found, now)
            refused = proxy_quotas.refused_by(found, now)
            if refused is not None:
                state, wait = refused
                return Refusal(QUOTA_LIMIT, wait, proxy_quotas.refusal_message(state, wait),
                               (*headers, proxy_quotas.NO_RETRY), state.quota.period)
        if limits.tpm is not None:
            item = _PerMinute(limits.tpm, namespace=counters.prefix + "/tpm")
            if not await counters.windows.test(item, name):
                return await self._refusal(counters, item, name, "tpm",
                                           f"This key used its {limits.tpm} tokens per minute", headers)
        if limits.rpm is not None:
            item = _PerMinute(limits.rpm, namespace=counters.prefix + "/rpm")
            if not await counters.windows.hit(item, name):
                return await self._refusal(counters, item, name, "rpm",
                                           f"This key made its {limits.rpm} requests per minute", headers)
        if limits.max_parallel is not None:
            give_back = await counters.leases.take(name, limits.max_parallel)
            if give_back is None:
                return Refusal("max_parallel", 1, f"This key has {limits.max_parallel} requests in flight, "
                                                  "its max_parallel: try again when one has finished.", headers)
            return Pass(give_back, headers)
        return Pass(headers=headers) if headers else ADMITTED

    async def _refusal(self, counters: Counters, item: _PerMinute, name: str, limit: str,
                       what: str, headers: tuple[tuple[str, str], ...]) -> Refusal:
        reset_at = (await counters.windows.get_window_stats(item, name)).reset_time
        wait = max(1, math.ceil(reset_at - time.time()))   # the library's windows are in epoch time
        return Refusal(limit, wait, f"{what}: try again in {wait} s.", headers)

    async def _save_unsaved(self) -> None:
        """Add the quota tokens counted in memory while Redis was away to Redis's count."""
        unsaved, self._unsaved = self._unsaved, []
        for name, limits, tokens, at in unsaved:
            await proxy_quotas.charge(self._shared.quotas, self._shared.prefix, name, limits.quotas, tokens, at)

    async def _with_fallback(self, act: Callable[[Counters], Any]) -> Any:
        """Run `act` on the shared counters, or on this worker's while they do not answer."""
        now = self._monotonic()
        if self._shared_down_until is not None and now < self._shared_down_until:
            self._on_fallback()
            return await act(self._local)
        try:
            result = await act(self._shared)
        except Exception as error:  # noqa: BLE001 - Redis errors come wrapped or raw, by path
            if self._shared is self._local:
                raise
            if self._shared_down_until is None:
                logger.warning("the limiter's Redis does not answer (%s): limits count in each proxy worker's "
                               "memory until it answers again", _reason(error))
            self._shared_down_until = now + RETRY_SHARED_AFTER
            self._on_fallback()
            return await act(self._local)
        if self._shared_down_until is not None:
            self._shared_down_until = None
            logger.warning("the limiter's Redis answers again: limits count there again")
            try:
                await self._save_unsaved()
            except Exception as error:  # noqa: BLE001 - gone again: those tokens stay uncounted there
                logger.warning("could not add the quota tokens counted in memory to Redis (%s)", _reason(error))
        return result


def _reason(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
