"""Keys' token quotas: the count of each quota's current period, where it is
kept, what a request may do by it, and how it shows (headers, /metrics).

A quota's count is one counter per key name, period and period start
(`<prefix>/quota/<name>/month/2026-12`), kept in the limiter's Redis: the
operator's --redis-url, shared by replicas, or the private redis-server
with its append-only file in --state-dir. A charge is one INCRBY (exact
across workers and replicas: no read-modify-write) and an EXPIRE one period
after the period's end, relative to now, so that Redis's clock need not
agree with the proxy's. A new period's counter has a new name: no job
resets anything. A count is named by the key's name, not by its quota, so
a reload that changes the quota keeps the count.

Admission is tpm's: a request is refused when a period's count has reached
its quota; the request that crosses it is answered and charged.

The proxy_limits.Limiter owns when these run (and the fail-open when Redis
does not answer); this module owns the counting and the decisions.

Import rules: standard library and redis-py (LiteLLM's dependency), lazily.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from entrypoint.inside.keys_file import Quota
from entrypoint.inside.quota_periods import PeriodSpan, keep_seconds, span_at

# The headers of every answer to a key with a quota, per period ("day", "month", ...).
LIMIT_HEADER = "x-quota-limit-tokens-"          # the quota
REMAINING_HEADER = "x-quota-remaining-tokens-"  # tokens left when the request was admitted
RESET_HEADER = "x-quota-reset-tokens-"          # whole seconds until the period ends
# On a quota's 429: the OpenAI SDKs retry a 429 unless told not to, and a
# retry seconds later cannot succeed before the period ends.
NO_RETRY = ("x-should-retry", "false")
QUOTA_LIMIT = "quota"                           # the limit's name in refusals, access lines and metrics


@dataclass(frozen=True)
class QuotaState:
    """One quota of one key as counted now: what the key used of it, and when the period ends."""

    quota: Quota
    used: int
    span: PeriodSpan

    @property
    def remaining(self) -> int:
        return max(0, self.quota.tokens - self.used)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.quota.tokens


def counter_name(prefix: str, name: str, span: PeriodSpan) -> str:
    return f"{prefix}/quota/{name}/{span.period}/{span.label}"


def spans(quotas: Sequence[Quota], now: float) -> list[PeriodSpan]:
    return [span_at(quota.period, now) for quota in quotas]


class LocalQuotas:
    """Counts in one worker's memory: what the limiter falls back to while
    Redis does not answer (it starts from zero: the quota fails open)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    async def used(self, names: Sequence[str]) -> list[int]:
        return [self._counts.get(name, 0) for name in names]

    async def add(self, names: Sequence[str], tokens: int, keep: Sequence[int]) -> None:
        for name in names:
            self._counts[name] = self._counts.get(name, 0) + tokens


class RedisQuotas:
    """Counts in Redis, shared by every worker and replica that names it."""

    def __init__(self, client: Any) -> None:
        self._client = client     # a redis.asyncio client

    async def used(self, names: Sequence[str]) -> list[int]:
        if not names:
            return []
        return [int(value or 0) for value in await self._client.mget(list(names))]

    async def add(self, names: Sequence[str], tokens: int, keep: Sequence[int]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for name, seconds in zip(names, keep, strict=True):
            pipe.incrby(name, tokens)
            pipe.expire(name, seconds)
        await pipe.execute()


async def report(store: LocalQuotas | RedisQuotas, prefix: str, keys: Sequence[tuple[str, Sequence[Quota]]],
                 now: float) -> list[tuple[str, QuotaState]]:
    """(name, state) of each quota of each key as counted now, in one read."""
    wanted = [(name, quota, span_at(quota.period, now)) for name, quotas in keys for quota in quotas]
    used = await store.used([counter_name(prefix, name, span) for name, _, span in wanted])
    return [(name, QuotaState(quota, count, span)) for (name, quota, span), count in zip(wanted, used, strict=True)]


async def states(store: LocalQuotas | RedisQuotas, prefix: str, name: str, quotas: Sequence[Quota],
                 now: float) -> list[QuotaState]:
    """Each quota of the key `name` as counted now, in one read."""
    return [state for _, state in await report(store, prefix, [(name, quotas)], now)]


async def charge(store: LocalQuotas | RedisQuotas, prefix: str, name: str, quotas: Sequence[Quota],
                 tokens: int, now: float) -> None:
    """Count `tokens` in the period of each quota that holds `now`."""
    periods = spans(quotas, now)
    await store.add([counter_name(prefix, name, span) for span in periods], tokens,
                    [keep_seconds(span, now) for span in periods])


def refused_by(found: Iterable[QuotaState], now: float) -> tuple[QuotaState, int] | None:
    """The exhausted quota that keeps the key waiting longest, and for how many
    seconds; None when no quota is exhausted."""
    waits = [(state.span.seconds_left(now), state) for state in found if state.exhausted]
    if not waits:
        return None
    wait, state = max(waits, key=lambda pair: pair[0])
    return state, wait


def refusal_message(state: QuotaState, wait: int) -> str:
    return (f"This key used its quota of {state.quota.tokens} tokens per {state.quota.period} "
            f"({state.used} used): it is refused until the {state.quota.period} ends in {wait} s.")


def quota_headers(found: Iterable[QuotaState], now: float) -> tuple[tuple[str, str], ...]:
    """The headers of an answer to a key with quotas (see the names above)."""
    headers: list[tuple[str, str]] = []
    for state in found:
        period = state.quota.period
        headers += [(LIMIT_HEADER + period, str(state.quota.tokens)),
                    (REMAINING_HEADER + period, str(state.remaining)),
                    (RESET_HEADER + period, str(state.span.seconds_left(now)))]
    return tuple(headers)


_METRICS = (
    ("llm_entry_quota_tokens", "A key's token quota per period, by key name and period.",
     lambda state: state.quota.tokens),
    ("llm_entry_quota_used_tokens", "Tokens a key used in the current period of its quota, by key name "
     "and period (as its quota's store counts them).", lambda state: state.used),
    ("llm_entry_quota_period_end_seconds", "When the current period of a key's quota ends (Unix time), "
     "by key name and period.", lambda state: state.span.end),
)


def quota_metrics_text(found: Iterable[tuple[str, QuotaState]]) -> bytes:
    """The quota families of /metrics (Prometheus text format). Key names and
    periods need no escaping: the keys file allows neither quotes nor backslashes."""
    rows = list(found)
    if not rows:
        return b""
    lines = []
    for metric, help_text, value in _METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [f'{metric}{{key="{name}",period="{state.quota.period}"}} {float(value(state))}'
                  for name, state in rows]
    return ("\n".join(lines) + "\n").encode()
