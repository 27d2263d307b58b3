"""Sections 1, 3 and 4 of the report: time to ready, reaction times, footprint."""

from __future__ import annotations

import math

from .footprint import ProbeTimes
from .markdown import per_round, s, table, verdict
from .overhead import OverheadResults
from .reaction import MEASUREMENT_ALLOWANCE, Scenario, over_worst, within_worst
from .settings import Settings
from .startup import StartupResults
from .startup_real import RealStartupResults
from .stats import median, percentile


def startup_section(r: StartupResults) -> str:
    rows = []
    for side, label in (("engine alone", "engine double alone (delay "
                         f"{r.engine_delay:g} s)"), ("proxy alone", "LiteLLM proxy alone (llm-entry's command "
                         "and config)"), ("llm-entry", "llm-entry"), ("baseline", "baseline: bench/baseline_start.sh")):
        over = s(r.overheads(side), 2) if side in ("llm-entry", "baseline") else ""
        rows.append([label, s(r.times[side], 2), over])
    rows.append(["llm-entry: launch → not-ready removed (readiness probe passes)", s(r.probe_ready, 2), ""])
    for name in ("supervisord", "engine", "proxy"):
        if r.spawned.get(name):
            rows.append([f"llm-entry: launch → {name} process started", s(r.spawned[name], 2), ""])
    lower = [max(e, p) for e, p in zip(r.times["engine alone"], r.times["proxy alone"], strict=False)]
    saved = per_round(r.times["baseline"], r.times["llm-entry"], lambda b, e: b - e)
    text = [
        "## 1. Time to ready\n",
        f"From launch until an authenticated `/v1/chat/completions` through the public port answers 200 "
        f"(polled every 50 ms), {r.rounds} round(s); the engine double loads for "
        f"{r.engine_delay:g} s (ENGINE_DOUBLE_STARTUP_DELAY). The lower bound is the later of the engine "
        "alone and the proxy alone, measured in the same round; overhead = time − that bound.\n",
        table(["side", "seconds: median (min–max)", "overhead over max(engine, proxy), s"], rows),
        f"Lower bound max(engine alone, proxy alone): {s(lower, 2)} s. llm-entry saves {s(saved, 2)} s "
        "against the serial script, which starts the proxy only once the engine answers and polls each "
        "once a second.\n",
    ]
    if r.failures:
        text.append("Failures: " + "; ".join(r.failures) + "\n")
    return "\n".join(text)


def real_startup_section(r: RealStartupResults) -> str:
    rows = [[side, s(r.times[side], 1), s(r.overheads(side), 2) if side != "engine alone" else ""]
            for side in ("engine alone", "llm-entry", "baseline")]
    saved = per_round(r.times["baseline"], r.times["llm-entry"], lambda b, e: b - e)
    text = [
        "### With the real engine\n",
        f"The same measure with {r.engine}, {r.rounds} round(s), the order reversed every other round; "
        "every side serves the same model folder with the same engine arguments and environment. Here the "
        "engine alone is the lower bound (the proxy alone is ready far sooner).\n",
        table(["side", "seconds: median (min–max)", "overhead over the engine alone, s"], rows),
        f"llm-entry saves {s(saved, 1)} s against the serial script.\n",
    ]
    if r.failures:
        text.append("Failures: " + "; ".join(r.failures) + "\n")
    return "\n".join(text)


def reaction_section(scenarios: list[Scenario], settings: Settings) -> str:
    rows = []
    for scenario in scenarios:
        for event, worst in scenario.worst.items():
            values = scenario.events.get(event, [])
            clean = [v for v in values if not math.isnan(v)]
            rows.append([scenario.name, scenario.timings, event, s(values, 2), f"{worst:.2f}",
                         scenario.worst_note.get(event, ""),
                         verdict(within_worst(clean, worst), over_worst(clean, worst))])
        if "stream end" in scenario.events:
            rows.append([scenario.name, scenario.timings, "stream end", s(scenario.events["stream end"], 2),
                         "", "", ""])
    notes = []
    for scenario in scenarios:
        codes = ", ".join(str(c) for c in scenario.exit_codes)
        notes.append(f"- {scenario.name} ({scenario.timings.split(':')[0]}): exit codes {codes or 'none'}"
                     + ("; " + "; ".join(scenario.notes) if scenario.notes else ""))
    hang_gaps = []
    for scenario in scenarios:
        if scenario.name.startswith("engine hang") and "exit" in scenario.events:
            gap = per_round(scenario.events["exit"], scenario.events["not-healthy"], lambda a, b: a - b)
            hang_gaps.append(f"{scenario.timings.split(':')[0]}: {s(gap, 1)} s")
    text = [
        "## 3. Reaction times\n",
        f"A fresh llm-entry per run ({settings.reaction_repeats} run(s) per scenario; the hang with default "
        "timings once), the probe files watched every 10 ms; seconds from the fault (SIGKILL of the engine, "
        "SIGSTOP of the engine's process group, SIGTERM to llm-entry) to each event. Worst cases are "
        "derived from entrypoint/ (monitor TICK, checks.py, health.py) for the timings used. They count "
        "a tick as TICK; a real tick also spends the time of its own work (reaping, one XML-RPC call to "
        "supervisord, the probe-file writes), and the watch adds up to 10 ms, so a few tens of ms over "
        "a one-tick worst case is the measurement, not a missed deadline: a verdict allows "
        f"{MEASUREMENT_ALLOWANCE * 1000:.0f} ms for it.\n",
        table(["scenario", "timings", "event", "measured: median (min–max)", "worst case", "from", ""], rows),
        "\n".join(notes) + "\n",
    ]
    if hang_gaps:
        text.append("After a hang, llm-entry exits this long after not-healthy ("
                    + "; ".join(hang_gaps) + "): a hung engine is SIGKILLed by process group at once (it "
                    "would ignore SIGTERM), then the proxy drains as in any shutdown.\n")
    return "\n".join(text)


def footprint_section(o: OverheadResults | None, probes: ProbeTimes | None, settings: Settings) -> str:
    text = ["## 4. Footprint\n"]
    if o and o.idle:
        rows = []
        for name in ("llm-entry", "supervisord", "proxy", "engine"):
            idle, busy = o.idle.get(name), o.serving.get(name)
            if idle is None:
                continue
            rows.append([name, f"{idle.cpu_percent:.2f}", f"{busy.cpu_percent:.2f}" if busy else "n/a",
                         f"{idle.rss_mb:.0f}", f"{idle.pss_mb:.0f}"])
        text += [
            f"CPU as % of one core, idle (after ready, {settings.idle_window:g} s, health checks running) "
            f"and while serving (the proxy cells of the load test, {o.serving['llm-entry'].seconds:.0f} s "
            "in all); memory idle. llm-entry and supervisord are what llm-entry adds; the proxy "
            "(1 worker) and the engine double are shown for scale.\n",
            table(["process", "CPU % idle", "CPU % serving", "RSS MB", "PSS MB"], rows),
        ]
    if probes:
        rows = [[name, str(len(times)), f"{median(times):.2f}", f"{percentile(times, 99):.2f}",
                 f"`{probes.commands[name]}`"] for name, times in probes.times_ms.items()]
        text += [
            "Probe scripts: run back to back on a ready probe folder (fresh heartbeat, no not-ready), "
            "interleaved with `python3 -c pass` (this venv's interpreter) for comparison; wall time of "
            "the whole process in ms.\n",
            table(["command", "runs", "median ms", "p99 ms", "command line"], rows),
        ]
    return "\n".join(text)
