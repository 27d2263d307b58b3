"""Time to ready: llm-entry against the serial baseline script, and the two
lower bounds (the engine alone, the proxy alone).

"Ready" is what a client sees: an authenticated /v1/chat/completions through
the public port answers 200, polled every 50 ms from the moment of launch.
For llm-entry also the moment the readiness probe would pass (not-ready gone,
heartbeat fresh). The sides run one after the other, in an order that
reverses every round, so a slow spell of the machine hits all of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import alone, procs, runner
from .procs import Timeout
from .watch import Watch, probe_ready

POLL = 0.05
SIDES = ("llm-entry", "baseline", "proxy alone", "engine alone")


@dataclass
class StartupResults:
    engine_delay: float
    rounds: int
    times: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    probe_ready: list[float] = field(default_factory=list)   # llm-entry: launch -> not-ready removed
    spawned: dict[str, list[float]] = field(default_factory=dict)  # llm-entry: launch -> supervisord/engine/proxy start
    failures: list[str] = field(default_factory=list)

    def overheads(self, side: str) -> list[float]:
        """Per round: side's time minus the later of engine alone and proxy alone."""
        bound = [max(e, p) for e, p in zip(self.times["engine alone"], self.times["proxy alone"], strict=False)]
        return [t - b for t, b in zip(self.times[side], bound, strict=False)]


def poll_chat(port: int, key: str, launched_at: float, process, timeout: float = runner.START_DEADLINE,
              body: dict | None = None) -> float:
    """Seconds from launch until a chat completion through `port` answers 200."""
    deadline = launched_at + timeout
    while time.monotonic() < deadline:
        if runner.chat_ok(port, key, body=body):
            return time.monotonic() - launched_at
        if procs.exited(process):
            raise RuntimeError(f"it exited with {procs.stop_group(process)} before answering")
        time.sleep(POLL)
    raise Timeout(f"no answer within {timeout:g} s")


def time_entry(runs: runner.Runs, delay: float, results: StartupResults) -> tuple[float, float]:
    entry = runner.Entry(runs, engine_env={"ENGINE_DOUBLE_STARTUP_DELAY": str(delay)})
    watch = Watch({"probe ready": lambda: probe_ready(entry.probe_dir)})
    try:
        launched = procs.boot_clock()
        entry.start()
        watch.start()
        answered = poll_chat(entry.port, entry.master_key, entry.launched_at, entry.process)
        at = watch.wait("probe ready", 30)
        files = at - entry.launched_at if at is not None else float("nan")
        entry.remember_programs()
        for name in ("supervisord", "engine", "proxy"):
            started = procs.started_at(entry.pgid(name))
            results.spawned.setdefault(name, []).append(float("nan") if started is None else started - launched)
        return answered, files
    finally:
        watch.stop()
        entry.stop()


def time_baseline(runs: runner.Runs, delay: float) -> float:
    baseline = alone.Baseline(runs, engine_env={"ENGINE_DOUBLE_STARTUP_DELAY": str(delay)})
    try:
        baseline.start()
        return poll_chat(baseline.port, baseline.master_key, baseline.launched_at, baseline.process)
    finally:
        baseline.stop()


def time_proxy(runs: runner.Runs, engine: alone.Engine) -> float:
    proxy = alone.Proxy(runs, engine)
    try:
        proxy.start()
        return poll_chat(proxy.port, proxy.master_key, proxy.launched_at, proxy.process)
    finally:
        proxy.stop()


def time_engine(runs: runner.Runs, delay: float) -> float:
    engine = alone.Engine(runs, startup_delay=delay)
    try:
        engine.start()
        return poll_chat(engine.port, engine.key, engine.launched_at, engine.process)
    finally:
        engine.stop()


def measure(runs: runner.Runs, delay: float, rounds: int, say) -> StartupResults:
    results = StartupResults(engine_delay=delay, rounds=rounds)
    backend = alone.Engine(runs).start()   # what the proxy alone talks to
    try:
        for round_number in range(rounds):
            order = SIDES if round_number % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                try:
                    if side == "llm-entry":
                        answered, files = time_entry(runs, delay, results)
                        results.probe_ready.append(files)
                    elif side == "baseline":
                        answered = time_baseline(runs, delay)
                    elif side == "proxy alone":
                        answered = time_proxy(runs, backend)
                    else:
                        answered = time_engine(runs, delay)
                except (RuntimeError, Timeout) as error:
                    results.failures.append(f"{side}, round {round_number + 1}: {error}")
                    say(f"  {side}: FAILED ({error})")
                    answered = float("nan")
                    if side == "llm-entry":
                        results.probe_ready.append(float("nan"))
                results.times[side].append(answered)
                say(f"  round {round_number + 1}/{rounds} {side}: {answered:.2f} s")
    finally:
        backend.stop()
    return results
