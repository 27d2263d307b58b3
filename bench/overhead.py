"""Request overhead: what the proxy hop costs, and the proxy settings that
change it.

All sides share one engine double (the one llm-entry "A" runs; the
benchmark reads its internal key from /proc to reach it directly), so the
proxy is the only difference between "direct" and "proxy". Experiments:

- load:      direct vs llm-entry's proxy, non-streaming, concurrency 1/8/32
- streams:   direct vs proxy, streaming 50 tokens 10 ms apart: TTFT and ITL
- workers:   llm-entry --proxy-workers 1 ("A") vs 2 ("B"): speed and memory
- route:     the proxy alone with the model relay (llm-entry's), and as it
             was before the relay (LiteLLM's own chat route)
- cost:      CPU per request and per streamed chunk of both (bench/cost.py)
- profile:   py-spy on A's proxy at the highest concurrency
- reuse:     connections the proxy opens to the engine, per request

Every cell runs each side once per round, one after the other; who goes
first rotates from cell to cell.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path

from . import alone, cost, footprint, load, procs, profile, reuse, runner
from .settings import Settings
from .stats import median, percentile

STREAM_ENV = {"ENGINE_DOUBLE_TOKENS": "50", "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.01"}


@dataclass(frozen=True)
class Target:
    label: str
    port: int
    key: str
    meter: dict | None = None     # process groups to measure while this side is loaded


@dataclass
class Cell(load.Errors):
    """One side at one concurrency, one value per round."""

    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    error_sample: str = ""
    cpu_cores: dict[str, list[float]] = field(default_factory=dict)   # group -> cores busy per round


@dataclass
class StreamCell(load.Errors):
    ttft_p50_ms: list[float] = field(default_factory=list)
    ttft_p99_ms: list[float] = field(default_factory=list)
    itl_p50_ms: list[float] = field(default_factory=list)
    itl_p99_ms: list[float] = field(default_factory=list)
    streams: int = 0
    tokens: int = 0
    errors: int = 0
    error_sample: str = ""


@dataclass
class OverheadResults:
    cells: dict[str, dict[str, dict[int, Cell]]] = field(default_factory=dict)   # experiment -> side -> c
    streams: dict[str, dict[int, StreamCell]] = field(default_factory=dict)      # side -> c
    idle: dict[str, footprint.Window] = field(default_factory=dict)
    serving: dict[str, footprint.Window] = field(default_factory=dict)
    proxy_memory: dict[str, procs.Usage] = field(default_factory=dict)          # workers side -> usage
    profile: profile.Profile | None = None
    profile_load: Cell | None = None
    proxy_libraries: dict[str, bool] = field(default_factory=dict)
    engine_connections: list[reuse.Reuse] = field(default_factory=list)
    cost: cost.CostResults | None = None
    notes: list[str] = field(default_factory=list)


def _orders(sides: list, rounds: int, concurrencies) -> list[tuple[int, int, list]]:
    """Every cell runs every side; who goes first rotates from round to round
    within a cell, and from cell to cell within a round. (One turn counter
    across cells would fix the order of every cell whenever the number of
    cells is a multiple of the number of sides.)"""
    plan = []
    for round_number in range(rounds):
        for index, c in enumerate(concurrencies):
            turn = (round_number + index) % len(sides)
            plan.append((round_number, c, sides[turn:] + sides[:turn]))
    return plan


def compare(sides: list[Target], concurrencies, settings: Settings, say, experiment: str,
            serving: dict[str, footprint.Window] | None = None) -> dict[str, dict[int, Cell]]:
    cells = {side.label: {c: Cell() for c in concurrencies} for side in sides}
    for round_number, c, order in _orders(sides, settings.load_rounds, concurrencies):
        for side in order:
            meter = footprint.Meter(side.meter).start() if side.meter else None
            result = load.run_load(side.port, side.key, runner.chat_body(), c,
                                   settings.load_duration, settings.load_warmup)
            cell = cells[side.label][c]
            if meter is not None:
                for name, window in meter.stop().items():
                    cell.cpu_cores.setdefault(name, []).append(window.cpu_s / window.seconds)
                    if serving is not None:
                        serving.setdefault(name, footprint.Window()).add(window)
            cell.rps.append(result.rps)
            cell.p50_ms.append(median(result.latencies) * 1000)
            cell.p99_ms.append(percentile(result.latencies, 99) * 1000)
            cell.requests += len(result.latencies)
            cell.add_errors_of(result)
            say(f"  {experiment} round {round_number + 1} c={c} {side.label}: {result.rps:.0f} req/s, "
                f"p50 {cell.p50_ms[-1]:.2f} ms, p99 {cell.p99_ms[-1]:.2f} ms"
                + (f", {result.errors} errors ({result.error_sample})" if result.errors else ""))
    return cells


def compare_streams(sides: list[Target], settings: Settings, say) -> dict[str, dict[int, StreamCell]]:
    concurrencies = settings.stream_concurrencies
    cells = {side.label: {c: StreamCell() for c in concurrencies} for side in sides}
    for round_number, c, order in _orders(sides, settings.load_rounds, concurrencies):
        for side in order:
            result = load.run_streams(side.port, side.key, runner.chat_body(), c,
                                      settings.load_duration, settings.load_warmup)
            cell = cells[side.label][c]
            cell.ttft_p50_ms.append(median(result.ttft) * 1000)
            cell.ttft_p99_ms.append(percentile(result.ttft, 99) * 1000)
            cell.itl_p50_ms.append(median(result.itl) * 1000)
            cell.itl_p99_ms.append(percentile(result.itl, 99) * 1000)
            cell.streams += len(result.ttft)
            cell.tokens += sum(result.tokens_per_stream)
            cell.add_errors_of(result)
            say(f"  streams round {round_number + 1} c={c} {side.label}: TTFT p50 {cell.ttft_p50_ms[-1]:.2f} ms, "
                f"ITL p50 {cell.itl_p50_ms[-1]:.3f} ms p99 {cell.itl_p99_ms[-1]:.2f} ms")
    return cells


def loaded_libraries(pid: int) -> dict[str, bool]:
    """Which fast paths the proxy process actually loaded."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {}
    return {name: f"/{name}/" in maps for name in ("uvloop", "httptools", "orjson", "aiohttp")}


def proxy_pid_serving(entry: runner.Entry) -> int:
    """The process that serves requests: the proxy itself with one worker,
    its busiest child with several (uvicorn's supervisor only watches)."""
    leader = entry.pgid("proxy")
    members = [p for p in procs.group_members(leader) if p != leader]
    if not members:
        return leader
    return max(members, key=lambda p: procs.usage_of(p).cpu_s)


def start_all(runs: runner.Runs, say) -> tuple[runner.Entry, runner.Entry]:
    one = runner.Entry(runs, ["--proxy-workers", "1"], engine_env=STREAM_ENV).start()
    two = runner.Entry(runs, ["--proxy-workers", "2"], engine_env=STREAM_ENV).start()
    say(f"  llm-entry --proxy-workers 1 ready in {one.wait_ready():.1f} s, "
        f"--proxy-workers 2 ready in {two.wait_ready():.1f} s (started together)")
    return one, two


ROUTE_NAMES = {"relay": "model relay (llm-entry)", "litellm": "LiteLLM's chat route"}


def start_proxies(runs: runner.Runs, engine, say) -> dict[str, alone.Proxy]:
    """The proxy alone with and without the model relay, in front of `engine`. (LiteLLM's
    gunicorn mode serves its app object, past the relay: no longer compared.)"""
    proxies = {ROUTE_NAMES[route]: alone.Proxy(runs, engine, route=route).start() for route in alone.Proxy.ROUTES}
    for proxy in proxies.values():
        procs.wait_for(lambda proxy=proxy: runner.chat_ok(proxy.port, proxy.master_key) or procs.exited(proxy.process),
                       runner.START_DEADLINE, "the proxy alone", poll=0.2)
        if procs.exited(proxy.process):
            raise RuntimeError(f"the proxy alone exited: see {proxy.dir / 'proxy.log'}")
    say(f"  proxies alone ({', '.join(proxies)}) ready")
    return proxies


def _guarded(results: OverheadResults, name: str, say, action) -> None:
    """One experiment; a failure (a process that died under us) is noted, not fatal."""
    try:
        action()
    except (RuntimeError, procs.Timeout, OSError, KeyError, ValueError) as error:
        results.notes.append(f"{name} failed: {type(error).__name__}: {error}")
        say(f"  {name}: FAILED ({error})")


def measure(runs: runner.Runs, settings: Settings, say) -> OverheadResults:
    results = OverheadResults()
    one, two = start_all(runs, say)
    engine = types.SimpleNamespace(port=one.engine_port, key=one.engine_key())
    proxies = start_proxies(runs, engine, say)
    direct = Target("direct", one.engine_port, engine.key)
    proxied = Target("proxy", one.port, one.master_key, footprint.entry_groups(one))

    def idle() -> None:
        say(f"  idle footprint over {settings.idle_window:g} s")
        results.idle = footprint.idle(one, settings.idle_window)
        results.proxy_libraries = loaded_libraries(one.pgid("proxy"))

    def plain() -> None:
        results.cells["load"] = compare([direct, proxied], settings.concurrencies, settings, say, "load",
                                        serving=results.serving)

    def streams() -> None:
        results.streams = compare_streams([direct, proxied], settings, say)

    def workers() -> None:
        groups = {"1 worker": lambda: procs.group_members(one.pgid("proxy")),
                  "2 workers": lambda: procs.group_members(two.pgid("proxy"))}
        sides = [Target("1 worker", one.port, one.master_key, {"proxy": groups["1 worker"]}),
                 Target("2 workers", two.port, two.master_key, {"proxy": groups["2 workers"]})]
        results.cells["workers"] = compare(sides, settings.worker_concurrencies, settings, say, "workers")
        for label, members in groups.items():
            results.proxy_memory[label] = procs.usage_of_all(members())

    def route() -> None:
        sides = [Target(name, proxies[name].port, proxies[name].master_key,
                        {"proxy": lambda name=name: procs.group_members(proxies[name].process.pid)})
                 for name in ROUTE_NAMES.values()]
        results.cells["route"] = compare(sides, settings.worker_concurrencies, settings, say, "route")

    def profiled() -> None:
        top = max(settings.concurrencies)
        say(f"  profiling the proxy at c={top} for {settings.profile_duration:g} s")
        recorded, loaded = profile.record_during(
            proxy_pid_serving(one), settings.profile_duration, runs.work / "proxy-profile.txt",
            lambda: load.run_load(one.port, one.master_key, runner.chat_body(), top,
                                  settings.profile_duration - 0.5, 0.5))
        results.profile = recorded
        results.profile_load = Cell(rps=[loaded.rps], p50_ms=[median(loaded.latencies) * 1000],
                                    p99_ms=[percentile(loaded.latencies, 99) * 1000])

    def reused() -> None:
        results.engine_connections = [reuse.measure(one.port, one.master_key, one.engine_port, c,
                                                    settings.load_duration) for c in (1, 8)]

    try:
        for name, action in (("idle footprint", idle), ("load", plain), ("streams", streams),
                             ("workers", workers), ("route", route), ("profile", profiled), ("reuse", reused)):
            _guarded(results, name, say, action)
    finally:
        for entry in (one, two):
            entry.stop()
        for proxy in proxies.values():
            proxy.stop()

    def costs() -> None:
        results.cost = cost.measure(runs, settings, say)

    _guarded(results, "cost", say, costs)   # alone on the machine: the others are stopped
    return results
