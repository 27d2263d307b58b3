"""BENCHMARKS.md from one run's results: header, goals, sections, chart."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import chart
from .footprint import ProbeTimes
from .keys import KeysResults
from .markdown import per_round, s, table, verdict
from .overhead import OverheadResults
from .reaction import MEASUREMENT_ALLOWANCE, Scenario, over_worst, within_worst
from .report_keys import keys_goals, keys_panel, keys_section
from .report_lifecycle import footprint_section, reaction_section, real_startup_section, startup_section
from .report_overhead import (
    cpu_ms_per_request,
    load_section,
    profile_section,
    route_section,
    stream_section,
    workers_section,
)
from .report_request_path import cost_section, request_path_goals, vllm_client_section
from .settings import Settings
from .startup import StartupResults
from .startup_real import RealStartupResults
from .stats import Summary, ratio
from .vllm_client import ClientResults


@dataclass
class Run:
    settings: Settings
    command: str
    machine: dict[str, str]
    versions: dict[str, str]
    started: str
    seconds: float = 0.0
    load_at_end: str = ""
    startup: StartupResults | None = None
    real_startup: RealStartupResults | None = None
    overhead: OverheadResults | None = None
    vllm_client: ClientResults | None = None
    keys: KeysResults | None = None
    reaction: list[Scenario] | None = None
    probes: ProbeTimes | None = None
    errors: list[str] = field(default_factory=list)


# -- goals -------------------------------------------------------------------

@dataclass
class Goal:
    name: str
    target: str
    measured: str
    ok: bool | None
    note: str = ""
    by: str = ""          # how far from the target, when missed


def goals(run: Run) -> list[Goal]:
    found = []
    if run.startup:
        over = Summary.of(run.startup.overheads("llm-entry"))
        found.append(Goal("time to ready: llm-entry over max(engine alone, proxy alone)", "≤ 1 s",
                          over.text(1, 2, " s"), None if over.runs == 0 else over.median <= 1.0,
                          by=f"{over.median - 1.0:.2f} s"))
    if run.real_startup:
        over = Summary.of(run.real_startup.overheads("llm-entry"))
        found.append(Goal("time to ready, real vLLM CPU engine: llm-entry over the engine alone", "≤ 1 s",
                          over.text(1, 2, " s"), None if over.runs == 0 else over.median <= 1.0,
                          "the proxy's start shares the 2 cores with the loading engine",
                          by=f"{over.median - 1.0:.2f} s"))
    o = run.overhead
    if o and "load" in o.cells:
        direct, proxy = o.cells["load"]["direct"], o.cells["load"]["proxy"]
        if 1 in direct:
            added = Summary.of(per_round(proxy[1].p50_ms, direct[1].p50_ms, lambda p, d: p - d))
            cpu = Summary.of(cpu_ms_per_request(proxy[1], "proxy"))
            found.append(Goal("added median latency, c=1", "< 10 ms", added.text(1, 2, " ms"),
                              None if added.runs == 0 else added.median < 10,
                              f"the proxy's CPU per request at c=1: {cpu.text(1, 1, ' ms')}",
                              by=f"{added.median - 10:.1f} ms"))
        top = max(direct)
        share = Summary.of(per_round(proxy[top].rps, direct[top].rps, ratio))
        cpu = Summary.of(cpu_ms_per_request(proxy[top], "proxy"))
        bound = f"; the proxy spends {cpu.median:.1f} ms of CPU per request, so one worker tops out near " \
                f"{1000 / cpu.median:.0f} req/s" if cpu.runs and cpu.median > 0 else ""
        found.append(Goal(f"proxy throughput at c={top} / direct", "≥ 0.5", share.text(1, 3),
                          None if share.runs == 0 else share.median >= 0.5,
                          f"{s(proxy[top].rps, 0)} vs {s(direct[top].rps, 0)} req/s{bound}",
                          by=f"a factor of {0.5 / share.median:.0f}" if share.runs and share.median else ""))
    found += request_path_goals(o.cost if o else None, run.vllm_client, Goal)
    found += keys_goals(run.keys, Goal)
    if o and o.streams:
        c = min(o.streams["direct"])
        added = Summary.of(per_round(o.streams["proxy"][c].itl_p50_ms, o.streams["direct"][c].itl_p50_ms,
                                     lambda p, d: p - d))
        found.append(Goal(f"added inter-token latency (median), c={c}", "< 1 ms", added.text(1, 3, " ms"),
                          None if added.runs == 0 else added.median < 1, by=f"{added.median - 1:.2f} ms"))
    for scenario in run.reaction or []:
        for event, values in scenario.events.items():
            worst = scenario.worst.get(event, math.nan)
            if math.isnan(worst) or not values:
                continue
            clean = [v for v in values if not math.isnan(v)]
            found.append(Goal(f"{scenario.name} → {event} ({scenario.timings.split(':')[0]})",
                              f"≤ {worst:.2f} s (worst case) + {MEASUREMENT_ALLOWANCE:g} s", s(values, 2, " s"),
                              within_worst(clean, worst), by=over_worst(clean, worst)))
    return found


# -- sections ----------------------------------------------------------------

def header(run: Run) -> str:
    mode = "quick (`--quick`: short windows, one round; for CI, not for reading)" if run.settings.quick \
        else "full"
    text = [
        "# Benchmarks\n",
        "Generated by `python -m bench` (bench/): do not edit by hand, run it again. From the repo root, "
        "with the project's venv: `python -m bench` (full, 25-30 min, writes this file and "
        "bench/results.svg) or `python -m bench --quick --out bench/out/quick.md` (about 3 min, for CI: it "
        "checks that every benchmark still runs, its numbers are not for reading). The profile uses "
        "py-spy, from the `test` extra.\n",
        f"- command: `{run.command}`",
        f"- mode: {mode}",
        f"- started: {run.started}, took {run.seconds / 60:.1f} min; load average at the end: {run.load_at_end}",
        "- method: every comparison runs its sides in the same run, one after the other, and who goes "
        "first rotates from cell to cell (time to ready: the order reverses every round), so that the "
        "noise of a shared 2-core machine hits every side; tables give the median over the rounds and, in brackets, "
        "the lowest and highest round "
        "(min–max). Differences and ratios are taken per round, then summarised the same way.",
        "- engine: the engine test double (tests/engine_double.py), so that the numbers are about llm-entry "
        "and LiteLLM, not about a model; the real vLLM CPU engine only in \"time to ready, real engine\". "
        "All traffic is on 127.0.0.1.\n",
    ]
    if run.errors:
        text.append("**Parts of this run failed:** " + "; ".join(run.errors) + "\n")
    text.append(table(["machine", ""], [[k, v] for k, v in run.machine.items()]))
    text.append(table(["version", ""], [[k, v] for k, v in run.versions.items()]))
    return "\n".join(text)


def goals_section(run: Run) -> str:
    rows = [[g.name, g.target, g.measured, verdict(g.ok, g.by), g.note] for g in goals(run)]
    return "## Goals\n\n" + table(["goal", "target", "measured: median (min–max)", "", "note"], rows)


# -- chart -------------------------------------------------------------------

def panels(run: Run) -> list[chart.Panel]:
    found = []

    def bar(series: str, values) -> chart.Bar:
        summary = Summary.of(values)
        return chart.Bar(series, summary.median, summary.low, summary.high)

    if run.startup:
        r = run.startup
        found.append(chart.Panel("1. Time to ready (launch → authenticated chat answers)", "seconds", [
            (label, [bar("median, min–max", r.times[side])]) for side, label in (
                ("engine alone", "engine double alone"), ("proxy alone", "proxy alone"),
                ("llm-entry", "llm-entry"), ("baseline", "baseline script"))]))
    if run.real_startup:
        r = run.real_startup
        found.append(chart.Panel("1b. Time to ready, real vLLM CPU engine", "seconds", [
            (label, [bar("median, min–max", r.times[side])]) for side, label in (
                ("engine alone", "vLLM alone"), ("llm-entry", "llm-entry"), ("baseline", "baseline script"))]))
    o = run.overhead
    if o and "load" in o.cells:
        d, p = o.cells["load"]["direct"], o.cells["load"]["proxy"]
        found.append(chart.Panel("2. Non-streaming throughput", "requests/s", [
            (f"c={c}", [bar("direct", d[c].rps), bar("through llm-entry's proxy", p[c].rps)]) for c in sorted(d)],
            log=True))
        found.append(chart.Panel("2. Median latency", "ms", [
            (f"c={c}", [bar("direct", d[c].p50_ms), bar("through llm-entry's proxy", p[c].p50_ms)])
            for c in sorted(d)], log=True))
    if o and "workers" in o.cells:
        w = o.cells["workers"]
        first = next(iter(w.values()))
        found.append(chart.Panel("2. Proxy workers: throughput", "requests/s", [
            (f"c={c}", [bar(name, w[name][c].rps) for name in w]) for c in sorted(first)]))
    if run.keys:
        found.append(keys_panel(run.keys))
    if run.reaction:
        rows = []
        for scenario in run.reaction:
            for event, worst in scenario.worst.items():
                values = scenario.events.get(event, [])
                rows.append((f"{scenario.short} → {event}", [bar("measured", values),
                                                                 chart.Bar("worst case", worst)]))
        found.append(chart.Panel("3. Reaction times", "seconds", rows, log=True))
    return found


def render(run: Run, chart_link: str) -> str:
    parts = [header(run), goals_section(run), f"![benchmark chart]({chart_link})\n"]
    if run.startup:
        parts.append(startup_section(run.startup))
    if run.real_startup:
        parts.append(real_startup_section(run.real_startup))
    o = run.overhead
    if o:
        for key, section in (("load", lambda: load_section(o, run.settings)), ("streams", lambda: stream_section(o)),
                             ("workers", lambda: workers_section(o)), ("route", lambda: route_section(o))):
            if key in o.cells or (key == "streams" and o.streams):
                parts.append(section())
        if o.cost:
            parts.append(cost_section(o.cost))
        parts.append(profile_section(o))
        if o.notes:
            parts.append("Notes: " + "; ".join(o.notes) + "\n")
    if run.vllm_client:
        parts.append(vllm_client_section(run.vllm_client))
    if run.keys:
        parts.append(keys_section(run.keys))
    if run.reaction:
        parts.append(reaction_section(run.reaction, run.settings))
    parts.append(footprint_section(o, run.probes, run.settings))
    return "\n".join(part for part in parts if part)
