"""What the check results mean: ready, still starting, hung, timed out.

Pure functions over the results and a clock reading, so every threshold in
docs/probes.md is a unit test. One `Vitals` per program per start: a restart
begins a new one, so results from before it can never make it look ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Timing
from .errors import EXIT_HUNG, EXIT_STARTUP_TIMEOUT
from .node_group import LEADER

# What a long silence means, by who is silent: a program that stops answering
# looks hung; a worker's leader that stops answering is gone.
SILENCE_MEANS = {LEADER: "it is gone, and a worker cannot serve without it"}


@dataclass
class Vitals:
    """The check history of one program since its latest start."""

    name: str
    started_at: float
    last_ok: float | None = None
    failures: int = 0             # consecutive failed checks since the last good one
    detail: str = "not checked yet"
    checking_since: float | None = None   # a check in flight began then

    def begin(self, at: float) -> None:
        self.checking_since = at

    def record(self, ok: bool, detail: str, at: float) -> None:
        self.detail = detail
        self.checking_since = None
        if ok:
            self.last_ok, self.failures = at, 0
        else:
            self.failures += 1

    def failures_at(self, now: float, check_timeout: float) -> tuple[int, str]:
        """Failed checks in a row, counting a check still in flight past its
        timeout as one: a server that trickles bytes or a connect stuck in
        the backlog can hold a request well past its socket timeouts."""
        if self.checking_since is not None and now - self.checking_since > check_timeout:
            return self.failures + 1, "no answer within the check timeout (still waiting)"
        return self.failures, self.detail


@dataclass(frozen=True)
class Verdict:
    ready: bool
    waiting_for: str = ""          # why not ready, for the not-ready file and the log
    fatal: str = ""                # why only a restart helps; empty while there is hope
    exit_code: int = 0
    program: str = ""              # whose fatal verdict it is


def assess(vitals: Vitals, now: float, timing: Timing) -> Verdict:
    """One program's verdict from its checks since it (re)started."""
    if vitals.last_ok is None:
        waited = now - vitals.started_at
        if waited > timing.startup_timeout:
            return fatal(vitals, "did not start", EXIT_STARTUP_TIMEOUT,
                         f"was not ready after {waited:.0f} s (--startup-timeout {timing.startup_timeout:g} s)")
        return Verdict(False, f"{vitals.name} starting ({waited:.0f} s): {vitals.detail}")
    silent = now - vitals.last_ok
    if silent > timing.hang_timeout:
        return fatal(vitals, "not answering", EXIT_HUNG,
                     f"has not passed a check for {silent:.0f} s (--hang-timeout {timing.hang_timeout:g} s): "
                     + SILENCE_MEANS.get(vitals.name, "it looks hung"))
    failures, detail = vitals.failures_at(now, timing.check_timeout)
    if failures >= timing.unready_after:
        return Verdict(False, f"{vitals.name} failing checks ({failures} in a row): {detail}")
    return Verdict(True)


def fatal(vitals: Vitals, waiting_for: str, exit_code: int, why: str) -> Verdict:
    """A verdict only a restart can change, with the program's last check."""
    return Verdict(False, f"{vitals.name} {waiting_for}", fatal=f"{vitals.name} {why}; last check: {vitals.detail}",
                   exit_code=exit_code, program=vitals.name)


def combine(verdicts: list[Verdict]) -> Verdict:
    """The container is ready only when every program is; the first fatal wins."""
    for verdict in verdicts:
        if verdict.fatal:
            return verdict
    waiting = [v.waiting_for for v in verdicts if not v.ready]
    return Verdict(not waiting, "; ".join(waiting))
