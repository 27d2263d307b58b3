"""Reaction times: how fast the probe files and llm-entry's exit follow a
crash, a hang and a SIGTERM, against the worst case the code allows.

Each run starts a fresh llm-entry, waits for ready, injects the fault and
watches (every 10 ms) for not-ready, not-healthy and the exit. The worst
cases come from the defaults in entrypoint/ (read at run time, so they follow
the code): the monitor ticks every TICK s; checks run every check_interval
and may take check_timeout; not-ready after unready_after failed checks in a
row; not-healthy once hang_timeout passed without a good check; the whole
shutdown is budgeted at grace_period.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import requests

from . import runner
from .procs import Timeout
from .settings import Settings
from .watch import Watch

FAST = {"check_interval": 0.5, "check_timeout": 0.5, "unready_after": 2, "hang_timeout": 3.0, "grace_period": 6.0}
LONG_STREAM_ENV = {"ENGINE_DOUBLE_TOKENS": "300", "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.01"}

# Worst cases count a monitor tick as TICK, but a real tick also spends its
# own work (a reap, one XML-RPC call, the probe-file writes) and the watch
# polls every 10 ms: a time this far over is the measurement, not a miss.
MEASUREMENT_ALLOWANCE = 0.05


def within_worst(clean: list[float], worst: float) -> bool | None:
    """The verdict on measured times against a derived worst case (None: nothing measured)."""
    return None if not clean else max(clean) <= worst + MEASUREMENT_ALLOWANCE


def over_worst(clean: list[float], worst: float) -> str:
    return f"{(max(clean) - worst) * 1000:.0f} ms at worst" if clean else ""
STREAM_TOKENS_BEFORE_SIGTERM = 30
# Distinct words, so that the double streams distinct tokens: LiteLLM cuts a
# stream after 100 identical chunks in a row (REPEATED_STREAMING_CHUNK_LIMIT),
# and the double pads short answers with identical " tok" tokens.
LONG_PROMPT = " ".join(f"word{i}" for i in range(int(LONG_STREAM_ENV["ENGINE_DOUBLE_TOKENS"])))


@dataclass(frozen=True)
class Timings:
    check_interval: float
    check_timeout: float
    unready_after: int
    hang_timeout: float
    grace_period: float
    tick: float

    @classmethod
    def defaults(cls) -> Timings:
        from entrypoint.config import Options
        from entrypoint.monitor import TICK
        o = Options(model="-")
        return cls(o.check_interval, o.check_timeout, o.unready_after, o.hang_timeout, o.grace_period, TICK)

    def with_fast(self) -> Timings:
        return Timings(tick=self.tick, **FAST)

    def args(self) -> list[str]:
        return ["--check-interval", f"{self.check_interval:g}", "--check-timeout", f"{self.check_timeout:g}",
                "--unready-after", str(self.unready_after), "--hang-timeout", f"{self.hang_timeout:g}",
                "--grace-period", f"{self.grace_period:g}"]

    def label(self) -> str:
        return (f"interval {self.check_interval:g} s, timeout {self.check_timeout:g} s, unready after "
                f"{self.unready_after}, hang {self.hang_timeout:g} s, grace {self.grace_period:g} s")

    # The worst cases, from the moment of the fault.
    def crash_detected(self) -> float:
        return self.tick

    def hang_not_ready(self) -> float:
        return self.unready_after * (self.check_interval + self.check_timeout) + self.tick

    def hang_not_healthy(self) -> float:
        return self.hang_timeout + self.tick

    def sigterm_not_ready(self) -> float:
        return self.tick


@dataclass
class Scenario:
    name: str
    timings: str
    short: str = ""                                                   # for the chart
    events: dict[str, list[float]] = field(default_factory=dict)     # event -> seconds after the fault
    worst: dict[str, float] = field(default_factory=dict)            # event -> worst case (nan: none documented)
    worst_note: dict[str, str] = field(default_factory=dict)
    exit_codes: list[int | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self, event: str, seconds: float | None) -> None:
        self.events.setdefault(event, []).append(math.nan if seconds is None else seconds)


class Stream:
    """One long streaming request through the proxy, read in a thread."""

    def __init__(self, entry: runner.Entry):
        self.entry = entry
        self.tokens = 0
        self.done = False
        self.ended_at: float | None = None
        self.error = ""
        self._thread = threading.Thread(target=self._run, name="bench-stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with requests.post(f"http://127.0.0.1:{self.entry.port}/v1/chat/completions",
                               json=runner.chat_body(LONG_PROMPT, stream=True), stream=True, timeout=60,
                               headers={"Authorization": f"Bearer {self.entry.master_key}"}) as response:
                for line in response.iter_lines():
                    if line == b"data: [DONE]":
                        self.done = True
                    elif line.startswith(b"data: ") and b'"content":"' in line and b'"content":""' not in line:
                        self.tokens += 1
        except requests.RequestException as error:
            self.error = f"{type(error).__name__}: {error}"
        self.ended_at = time.monotonic()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def one_run(runs: runner.Runs, scenario: Scenario, timings: Timings, fault: str,
            engine_env: dict[str, str] | None = None) -> None:
    entry = runner.Entry(runs, timings.args(), engine_env=engine_env).start()
    try:
        entry.wait_ready()
        watch = Watch({
            "not-ready": lambda: entry.has("not-ready"),
            "not-healthy": lambda: entry.has("not-healthy"),
            "exit": lambda: not entry.running(),
        })
        stream = None
        if fault == "sigterm-stream":
            stream = Stream(entry).start()
            deadline = time.monotonic() + 30
            while stream.tokens < STREAM_TOKENS_BEFORE_SIGTERM and stream.ended_at is None \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
        watch.start()
        at = time.monotonic()
        if fault == "crash":
            os.kill(entry.pgid("engine"), signal.SIGKILL)
        elif fault == "hang":
            os.killpg(entry.pgid("engine"), signal.SIGSTOP)
        else:
            os.kill(entry.pid, signal.SIGTERM)
        budget = (timings.hang_timeout if fault == "hang" else 0) + timings.grace_period + 30
        watch.wait("exit", budget)
        watch.stop()
        for event in ("not-ready", "not-healthy", "exit"):
            if event in scenario.worst:
                scenario.record(event, watch.since(event, at))
        scenario.exit_codes.append(entry.stop())
        if stream is not None:
            stream.join(30)
            scenario.record("stream end", None if stream.ended_at is None else stream.ended_at - at)
            expected = int(LONG_STREAM_ENV["ENGINE_DOUBLE_TOKENS"])
            scenario.notes.append(
                f"stream: {stream.tokens}/{expected} tokens, "
                + ("ended with [DONE]" if stream.done else f"cut ({stream.error or 'no [DONE]'})"))
    finally:
        entry.stop()


def scenarios(settings: Settings) -> list[tuple[Scenario, Timings, str, dict | None]]:
    defaults = Timings.defaults()
    fast = defaults.with_fast()
    plan = []

    def add(name: str, timings: Timings, fault: str, worst: dict[str, tuple[float, str]], env=None):
        fast_tag = "" if timings == defaults else " (fast)"
        short = {"crash": "SIGKILL engine", "hang": "hang", "sigterm": "SIGTERM idle",
                 "sigterm-stream": "SIGTERM + stream"}[fault] + fast_tag
        scenario = Scenario(name, "defaults" if timings == defaults else "fast: " + timings.label(), short)
        scenario.worst = {event: value for event, (value, _) in worst.items()}
        scenario.worst_note = {event: note for event, (_, note) in worst.items()}
        plan.append((scenario, timings, fault, env))

    def shutdown(t: Timings, after: str) -> tuple[float, str]:
        return (t.grace_period, f"--grace-period {t.grace_period:g} s after {after} (the shutdown budget)")

    add("engine SIGKILL", defaults, "crash", {
        "not-healthy": (defaults.crash_detected(), f"one monitor tick ({defaults.tick:g} s)"),
        "exit": shutdown(defaults, "the crash")})
    for timings in ([defaults] if settings.default_hang else []) + [fast]:
        add("engine hang (SIGSTOP)", timings, "hang", {
            "not-ready": (timings.hang_not_ready(),
                          f"{timings.unready_after} × ({timings.check_interval:g} + {timings.check_timeout:g}) "
                          f"+ tick {timings.tick:g}"),
            "not-healthy": (timings.hang_not_healthy(), f"{timings.hang_timeout:g} + tick {timings.tick:g}"),
            "exit": (timings.hang_not_healthy() + timings.grace_period,
                     f"not-healthy + --grace-period {timings.grace_period:g} s")})
    add("SIGTERM, idle", defaults, "sigterm", {
        "not-ready": (defaults.sigterm_not_ready(), f"one monitor tick ({defaults.tick:g} s)"),
        "exit": shutdown(defaults, "SIGTERM")})
    add("SIGTERM, stream in flight", defaults, "sigterm-stream", {
        "not-ready": (defaults.sigterm_not_ready(), f"one monitor tick ({defaults.tick:g} s)"),
        "exit": shutdown(defaults, "SIGTERM")}, env=LONG_STREAM_ENV)
    return plan


def measure(runs: runner.Runs, settings: Settings, say) -> list[Scenario]:
    done = []
    for scenario, timings, fault, env in scenarios(settings):
        for repeat in range(settings.reaction_repeats if timings.hang_timeout < 10 or fault != "hang" else 1):
            try:
                one_run(runs, scenario, timings, fault, env)
                latest = {event: values[-1] for event, values in scenario.events.items()}
                say(f"  {scenario.name} ({scenario.timings.split(':')[0]}) #{repeat + 1}: "
                    + ", ".join(f"{event} {value:.2f} s" for event, value in latest.items())
                    + f", exit code {scenario.exit_codes[-1]}")
            except (RuntimeError, Timeout, OSError) as error:
                scenario.notes.append(f"run {repeat + 1} failed: {error}")
                say(f"  {scenario.name}: FAILED ({error})")
        done.append(scenario)
    return done
