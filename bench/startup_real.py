"""Time to ready with the real engine: vLLM's CPU build serving the demo
model, through llm-entry and through the serial baseline script, beside the
engine alone. Full runs only (one start takes about a minute on 2 cores),
and only where vLLM is installed.

All three sides get the same model folder, engine arguments and engine
environment, so the engine's own start-up is the same work everywhere. On
a 2-core machine llm-entry's proxy starts beside a loading engine and takes
CPU from it; the serial script starts the proxy only after the engine. Both
effects are in the numbers, which is the point.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from entrypoint.demo import model as demo_model
from entrypoint.engine_options import default_engine_cmd

from . import alone, runner
from .procs import Timeout
from .startup import poll_chat

REAL_ENGINE = list(default_engine_cmd())
SIDES = ("llm-entry", "baseline", "engine alone")
DEADLINE = 600.0
# A real engine writes until max_tokens: a readiness poll asks for a few.
READY_BODY = {**runner.chat_body("ready?"), "max_tokens": 4}


@dataclass
class RealStartupResults:
    rounds: int
    engine: str
    times: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    failures: list[str] = field(default_factory=list)

    def overheads(self, side: str) -> list[float]:
        """Per round: side's time minus the engine alone's."""
        return [t - e for t, e in zip(self.times[side], self.times["engine alone"], strict=False)]


def missing() -> str | None:
    """Why the real engine cannot run here, or None."""
    return None if importlib.util.find_spec("vllm") else "vLLM is not installed (scripts/install-cpu-engine.sh)"


def _time_entry(runs: runner.Runs, model: Path) -> float:
    entry = runner.Entry(runs, args=["--served-model-name", runner.MODEL_NAME, "--", *demo_model.DEMO_ENGINE_ARGS],
                         engine_env={"LLM_ENTRY_ENGINE_CMD": " ".join(REAL_ENGINE), **demo_model.DEMO_ENGINE_ENV},
                         model=model)
    try:
        entry.start()
        return poll_chat(entry.port, entry.master_key, entry.launched_at, entry.process, DEADLINE, READY_BODY)
    finally:
        entry.stop()


def _time_baseline(runs: runner.Runs, model: Path) -> float:
    baseline = alone.Baseline(runs, engine_env=demo_model.DEMO_ENGINE_ENV)
    baseline.env["ENGINE_CMD"] = " ".join([*REAL_ENGINE, *demo_model.DEMO_ENGINE_ARGS])
    baseline.env["MODEL"] = str(model)
    try:
        baseline.start()
        return poll_chat(baseline.port, baseline.master_key, baseline.launched_at, baseline.process, DEADLINE,
                         READY_BODY)
    finally:
        baseline.stop()


def _time_engine(runs: runner.Runs, model: Path) -> float:
    engine = alone.Engine(runs, extra_env=demo_model.DEMO_ENGINE_ENV)
    engine.argv = [*REAL_ENGINE, "--model", str(model), "--served-model-name", runner.MODEL_NAME,
                   "--host", "127.0.0.1", "--port", str(engine.port), *demo_model.DEMO_ENGINE_ARGS]
    try:
        engine.start()
        return poll_chat(engine.port, engine.key, engine.launched_at, engine.process, DEADLINE, READY_BODY)
    finally:
        engine.stop()


def measure(runs: runner.Runs, rounds: int, say) -> RealStartupResults:
    model = demo_model.ensure_demo_model(runs.work / "demo-cache")
    results = RealStartupResults(rounds=rounds, engine="vLLM CPU build, demo model ("
                                 + " ".join(demo_model.DEMO_ENGINE_ARGS) + ")")
    timers = {"llm-entry": _time_entry, "baseline": _time_baseline, "engine alone": _time_engine}
    # The first vLLM start after a build reads everything from disk cold (72 s
    # against 37 s seen here): an unmeasured start first, so no side pays it.
    say("  real engine: one unmeasured start of the engine alone (cold caches)")
    try:
        _time_engine(runs, model)
    except (RuntimeError, Timeout, OSError) as error:
        results.failures.append(f"warm-up start: {error}")
    for round_number in range(rounds):
        order = SIDES if round_number % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            try:
                answered = timers[side](runs, model)
            except (RuntimeError, Timeout, OSError) as error:
                results.failures.append(f"{side}, round {round_number + 1}: {error}")
                say(f"  real engine, {side}: FAILED ({error})")
                answered = float("nan")
            results.times[side].append(answered)
            say(f"  real engine, round {round_number + 1}/{rounds} {side}: {answered:.1f} s")
    return results
