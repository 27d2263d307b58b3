"""What the proxy costs in CPU: milliseconds per request and per streamed
chunk, of the proxy's whole process group, with the engine double's own cost
beside it for reference.

Three sides in front of an engine double that streams 200 tokens 2 ms apart
(each token its own write, so each its own chunk on the wire): llm-entry's
proxy with the master key (no limits; every request metered and logged),
the same with a key from --api-keys-file that has all three limits, counted
in a redis-server (whose CPU is counted with the proxy's), and the proxy
started as llm-entry started it before the relay (LiteLLM's own chat route,
llm-entry's config and key check). Each round loads each side in turn, who
goes first alternating: first non-streaming chat completions (CPU per
request), then streams (CPU per chunk, after taking off the per-request CPU
of the same round once per stream). Nothing else runs meanwhile. Counting
includes warm-up: every request started is counted, and every one finishes.

The relayed routes beside chat: in each round llm-entry's first side also
answers non-streaming Responses and Anthropic Messages requests (ROUTE_BODIES),
and their proxy CPU per request is set against the same round's chat.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import types
from dataclasses import dataclass, field

from . import alone, footprint, load, procs, runner
from .settings import Settings

COST_ENV = {"ENGINE_DOUBLE_TOKENS": "200", "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.002"}
CONCURRENCY = 16
SIDES = ("llm-entry", "llm-entry, a limited key (Redis)", "LiteLLM's chat route")
# Limits no load here reaches: every request takes the limiter's whole path.
LIMITED_KEY_FIELDS = "name=bench rpm=1000000000 tpm=1000000000000 max_parallel=100000"


@dataclass
class CostCell(load.Errors):
    """One side, one value per round."""

    proxy_ms_per_request: list[float] = field(default_factory=list)
    proxy_ms_per_chunk: list[float] = field(default_factory=list)
    engine_ms_per_request: list[float] = field(default_factory=list)
    engine_ms_per_chunk: list[float] = field(default_factory=list)
    requests: int = 0
    streams: int = 0
    chunks: int = 0
    errors: int = 0
    error_sample: str = ""


# The relayed routes measured beside chat, on llm-entry's first side: path -> body.
ROUTE_BODIES = {
    "/v1/chat/completions": runner.chat_body(),
    "/v1/responses": {"model": runner.MODEL_NAME, "input": "hello"},
    "/v1/messages": {"model": runner.MODEL_NAME, "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]},
}


@dataclass
class CostResults:
    concurrency: int
    tokens_per_stream: int
    cells: dict[str, CostCell] = field(default_factory=lambda: {side: CostCell() for side in SIDES})
    # path -> proxy CPU ms per request, one value per round (llm-entry's first side)
    routes: dict[str, list[float]] = field(default_factory=lambda: {path: [] for path in ROUTE_BODIES})
    route_errors: int = 0


@dataclass(frozen=True)
class Side:
    label: str
    port: int
    key: str
    groups: dict        # "proxy" and "engine" -> function giving the pids now


# Every token different: LiteLLM's chat route cuts a stream whose chunks repeat
# 100 times (the double pads a short answer with one token), and it must be measured too.
STREAM_BODY = runner.chat_body(" ".join(f"w{i}" for i in range(int(COST_ENV["ENGINE_DOUBLE_TOKENS"]))))


def one_round(side: Side, settings: Settings, cell: CostCell) -> str:
    meter = footprint.Meter(side.groups).start()
    plain = load.run_load(side.port, side.key, runner.chat_body(), CONCURRENCY, settings.load_duration, 0.0)
    used = meter.stop()
    requests = len(plain.latencies)
    per_request = {name: 1000 * used[name].cpu_s / max(requests, 1) for name in side.groups}
    meter = footprint.Meter(side.groups).start()
    streamed = load.run_streams(side.port, side.key, STREAM_BODY, CONCURRENCY, settings.load_duration, 0.0)
    used = meter.stop()
    streams, chunks = len(streamed.tokens_per_stream), sum(streamed.tokens_per_stream)
    per_chunk = {name: 1000 * max(0.0, used[name].cpu_s - streams * per_request[name] / 1000) / max(chunks, 1)
                 for name in side.groups}
    cell.proxy_ms_per_request.append(per_request["proxy"])
    cell.engine_ms_per_request.append(per_request["engine"])
    cell.proxy_ms_per_chunk.append(per_chunk["proxy"])
    cell.engine_ms_per_chunk.append(per_chunk["engine"])
    cell.requests += requests
    cell.streams += streams
    cell.chunks += chunks
    cell.add_errors_of(plain)
    cell.add_errors_of(streamed)
    return (f"{requests} requests, proxy {per_request['proxy']:.2f} ms/request; {chunks} chunks, "
            f"proxy {per_chunk['proxy'] * 1000:.1f} µs/chunk")


def route_round(side: Side, settings: Settings, results: CostResults) -> str:
    """Proxy CPU per request of each relayed route in ROUTE_BODIES, one after the other."""
    said = []
    for path, body in ROUTE_BODIES.items():
        meter = footprint.Meter(side.groups).start()
        plain = load.run_load(side.port, side.key, body, CONCURRENCY, settings.load_duration, 0.0, path=path)
        used = meter.stop()
        per_request = 1000 * used["proxy"].cpu_s / max(len(plain.latencies), 1)
        results.routes[path].append(per_request)
        results.route_errors += plain.errors
        said.append(f"{path} {per_request:.2f}")
    return "proxy ms/request: " + ", ".join(said)


def start_redis(runs: runner.Runs) -> tuple[subprocess.Popen, str]:
    """A redis-server on a unix socket in the work folder, as llm-entry's private one runs."""
    folder = runs.folder("redis")
    socket = folder / "redis.sock"
    process = procs.launch(["redis-server", "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
                            "--save", "", "--appendonly", "no", "--dir", str(folder)], dict(os.environ),
                            folder / "redis.log")
    runs.track(process, "redis-server")
    procs.wait_for(lambda: socket.exists() or procs.exited(process), 10, "redis-server", poll=0.05)
    return process, f"unix://{socket}"


def measure(runs: runner.Runs, settings: Settings, say) -> CostResults:
    entry = runner.Entry(runs, ["--proxy-workers", "1"], engine_env=COST_ENV).start()
    redis, redis_url = start_redis(runs)
    key = "sk-bench-" + secrets.token_hex(16)
    keys_file = runs.folder("keys") / "keys"
    keys_file.write_text(f"{key} {LIMITED_KEY_FIELDS}\n")
    limited = runner.Entry(runs, ["--proxy-workers", "1", "--api-keys-file", str(keys_file),
                                  "--redis-url", redis_url], engine_env=COST_ENV).start()
    say(f"  cost: llm-entry ready in {entry.wait_ready():.1f} s, with limits in {limited.wait_ready():.1f} s")
    engine = types.SimpleNamespace(port=entry.engine_port, key=entry.engine_key())
    litellm_route = alone.Proxy(runs, engine, route="litellm").start()
    procs.wait_for(lambda: runner.chat_ok(litellm_route.port, litellm_route.master_key)
                   or procs.exited(litellm_route.process), runner.START_DEADLINE, "the proxy alone", poll=0.2)
    engine_group = lambda: procs.group_members(entry.pgid("engine"))   # noqa: E731
    sides = [Side(SIDES[0], entry.port, entry.master_key,
                  {"proxy": lambda: procs.group_members(entry.pgid("proxy")), "engine": engine_group}),
             Side(SIDES[1], limited.port, key,
                  {"proxy": lambda: [*procs.group_members(limited.pgid("proxy")), redis.pid],
                   "engine": lambda: procs.group_members(limited.pgid("engine"))}),
             Side(SIDES[2], litellm_route.port, litellm_route.master_key,
                  {"proxy": lambda: procs.group_members(litellm_route.process.pid), "engine": engine_group})]
    results = CostResults(CONCURRENCY, int(COST_ENV["ENGINE_DOUBLE_TOKENS"]))
    try:
        for round_number in range(settings.load_rounds):
            order = sides if round_number % 2 == 0 else sides[::-1]
            for side in order:
                said = one_round(side, settings, results.cells[side.label])
                say(f"  cost round {round_number + 1} {side.label}: {said}")
            say(f"  cost round {round_number + 1} relayed routes: {route_round(sides[0], settings, results)}")
    finally:
        entry.stop()
        limited.stop()
        litellm_route.stop()
        procs.stop_group(redis)
    return results
