"""How a run ends: a failure the monitor found, and the outcome it hands to
the shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EXIT_ENGINE_FAILED, EXIT_PROXY_FAILED
from .inside.names import ENGINE


@dataclass(frozen=True)
class Failure:
    exit_code: int
    summary: str                        # one line
    details: tuple[str, ...] = ()       # lines to print below the summary
    kill_at_once: tuple[str, ...] = ()  # programs that looked hung: no SIGTERM deadline


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    summary: str                        # one line
    requested: bool = False             # a signal asked us to stop: drain gracefully
    was_ready: bool = False
    since: float | None = None          # monotonic time the shutdown's budget counts from
    details: tuple[str, ...] = ()       # lines to print below the summary
    kill_at_once: tuple[str, ...] = ()  # programs that looked hung: no SIGTERM deadline


def exit_code_for(name: str) -> int:
    """The engine's failure, or the proxy side's (the proxy and its limiter)."""
    return EXIT_ENGINE_FAILED if name == ENGINE else EXIT_PROXY_FAILED
