"""The report's sections on the request path's cost: CPU per request and per
streamed chunk (bench/cost.py), and the real engine through the proxy and
direct under vLLM's own benchmark client (bench/vllm_client.py)."""

from __future__ import annotations

from .cost import CostResults
from .load import CHAT_PATH
from .markdown import per_round, s, table
from .stats import Summary, ratio
from .vllm_client import ClientResults

CHUNK_GOAL_MS = 0.05
REQUEST_GOAL_MS = 3.0
THROUGHPUT_GOAL = 0.9
TTFT_GOAL_MS = 15.0


def cost_section(c: CostResults) -> str:
    rows = [[side, s(cell.proxy_ms_per_request, 2), s(cell.proxy_ms_per_chunk, 4),
             s(cell.engine_ms_per_request, 2), s(cell.engine_ms_per_chunk, 4),
             f"{cell.requests} / {cell.streams} / {cell.chunks}", str(cell.errors)]
            for side, cell in c.cells.items()]
    sides = list(c.cells)
    gains = []
    for other in sides[1:]:
        new, old = c.cells[sides[0]], c.cells[other]
        per_request = Summary.of(per_round(old.proxy_ms_per_request, new.proxy_ms_per_request, ratio))
        per_chunk = Summary.of(per_round(old.proxy_ms_per_chunk, new.proxy_ms_per_chunk, ratio))
        if per_request.runs and per_chunk.runs:
            gains.append(f"{other} spends {per_request.text(1, _digits(per_request))}× the CPU of {sides[0]} "
                         f"per request and {per_chunk.text(1, _digits(per_chunk))}× per streamed chunk "
                         "(per round).\n")
    errors = [f"{side}: {cell.error_sample}" for side, cell in c.cells.items() if cell.error_sample]
    return "\n".join([
        "### The request path: CPU per request and per streamed chunk\n",
        f"{c.concurrency} clients, closed loop, non-streaming chat completions, then streams of "
        f"{c.tokens_per_stream} tokens written 2 ms apart (each its own chunk on the wire); CPU of the "
        "whole process group from /proc, over requests (per request) and over content chunks after taking "
        "off the same round's per-request CPU once per stream (per chunk). The engine double's own cost "
        "is beside it for reference. Goals: at most 3 ms per request and 0.05 ms per chunk for the proxy.\n",
        table(["proxy", "proxy CPU ms/request", "proxy CPU ms/chunk", "engine CPU ms/request",
               "engine CPU ms/chunk", "requests / streams / chunks", "errors"], rows),
        *gains,
        ("Errors: " + "; ".join(errors) + "\n") if errors else "",
        routes_part(c),
        TRIED,
    ])


ROUTE_GOAL = 2.0     # a relayed route costs the proxy at most twice the relayed chat route


def route_ratios(c: CostResults) -> dict[str, Summary]:
    """Each relayed route's proxy CPU per request over the same round's chat."""
    chat = c.routes.get(CHAT_PATH, [])
    return {path: Summary.of(per_round(values, chat, ratio)) for path, values in c.routes.items() if path != CHAT_PATH}


def routes_part(c: CostResults) -> str:
    """The relayed routes beside chat: proxy CPU per request and its ratio to chat, per round."""
    ratios = route_ratios(c)
    rows = [[f"`{path}`", s(values, 2), ratios[path].text(1, 2) if path in ratios and ratios[path].runs else "-"]
            for path, values in c.routes.items()]
    return "\n".join([
        "Relayed routes, non-streaming, the same clients, llm-entry with the master key, one after the other "
        f"in each round; goal: at most {ROUTE_GOAL:g}× the relayed chat route's proxy CPU per request "
        f"(median of the rounds). Errors: {c.route_errors}.\n",
        table(["route", "proxy CPU ms/request", "× chat (per round)"], rows),
    ])


def _digits(summary: Summary) -> int:
    """Whole numbers for tens of times, two decimals near 1."""
    return 0 if summary.median >= 10 else 2


TRIED = """What was tried on the way, measured on this machine:

- LiteLLM's own chat route with llm-entry's config (the second row): every chunk parsed into pydantic
  objects and serialised again, a dozen middlewares and the router per request; its settings for speed
  (no retries or cooldowns, message, spend and error logs off, callbacks) gave 0.86-1.19× the requests/s
  of llm-entry's config in two earlier full runs, within the spread between rounds.
- LiteLLM's vLLM pass-through route (`/vllm/{endpoint}`, `use_in_pass_through: true`) relays bytes
  (0.02-0.09 ms per chunk in a quick try) but still costs about 10 ms per request in the same middleware
  stack, did not send the engine's key as configured, and lives under `/vllm/`, not `/v1/`.
- The relay in front of LiteLLM's app, aiohttp to the engine: 0.19-0.23 ms per request. Per chunk,
  48.9-52.0 µs with LiteLLM's CORS middleware around every request; 39.2-42.0 µs with the middleware only
  for requests that carry an `Origin` (a browser's; it wraps every chunk's send) and the stream read with
  `readany` instead of the async iterator (2 rounds each, same load). What remains per chunk is one read
  from the engine's socket and one write to the client's, through uvicorn's and aiohttp's protocol code
  on uvloop: a profile of the relay streaming shows about 70% of the proxy's samples in the event loop
  itself (socket calls) and 14% in uvicorn's send.
"""


def vllm_client_section(v: ClientResults) -> str:
    load = v.load
    rows = [[side, s(v.throughput[side], 2), s(v.ttft_median_ms[side], 0), s(v.tpot_median_ms[side], 1),
             str(sum(v.failed[side]))] for side in v.throughput]
    share = Summary.of(per_round(v.throughput["proxy"], v.throughput["direct"], ratio))
    added = Summary.of(per_round(v.ttft_median_ms["proxy"], v.ttft_median_ms["direct"], lambda p, d: p - d))
    return "\n".join([
        "### The real engine under vLLM's own benchmark client\n",
        f"`vllm.benchmarks.serve` (vLLM's load generator, run as a module) against llm-entry serving the "
        f"demo model on vLLM's CPU build: {load.prompts} random prompts of {load.input_len} tokens, "
        f"{load.output_len} output tokens each (`--ignore-eos`), at most {load.concurrency} in flight, "
        "`openai-chat` backend, through the public port (master key) and direct to the engine's port "
        f"(internal key), alternating, {v.rounds} round(s), the same prompts on both sides in a round. "
        f"The engine computes on core {v.engine_cores} only (`VLLM_CPU_OMP_THREADS_BIND`), the client and "
        "the proxy have the other: on a GPU node the engine does not compete with the proxy for the cores.\n",
        table(["side", "requests/s", "median TTFT ms", "median TPOT ms", "failed"], rows),
        f"Proxy over direct, per round: throughput {share.text(1, 3)}×, median time to first token "
        f"{added.text(1, 1, ' ms')} added. The proxy's process group spent "
        f"{s(v.proxy_cpu_ms_per_request, 2)} ms of CPU per request meanwhile (the client's CPU included "
        "nowhere).\n",
        ("Failures: " + "; ".join(v.failures) + "\n") if v.failures else "",
    ])


def request_path_goals(c: CostResults | None, v: ClientResults | None, goal) -> list:
    found = []
    if c is not None:
        cell = next(iter(c.cells.values()))
        label = next(iter(c.cells))
        chunk = Summary.of(cell.proxy_ms_per_chunk)
        request = Summary.of(cell.proxy_ms_per_request)
        found.append(goal(f"proxy CPU per streamed chunk ({label})", f"≤ {CHUNK_GOAL_MS} ms",
                          chunk.text(1, 4, " ms"), None if chunk.runs == 0 else chunk.median <= CHUNK_GOAL_MS,
                          by=f"{chunk.median - CHUNK_GOAL_MS:.3f} ms"))
        found.append(goal(f"proxy CPU per non-streamed request ({label})", f"≤ {REQUEST_GOAL_MS:g} ms",
                          request.text(1, 2, " ms"),
                          None if request.runs == 0 else request.median <= REQUEST_GOAL_MS,
                          by=f"{request.median - REQUEST_GOAL_MS:.2f} ms"))
        for path, times in route_ratios(c).items():
            found.append(goal(f"proxy CPU per request, {path} / relayed chat", f"≤ {ROUTE_GOAL:g}×",
                              times.text(1, 2), None if times.runs == 0 else times.median <= ROUTE_GOAL,
                              by=f"{times.median - ROUTE_GOAL:.2f}×"))
    if v is not None:
        share = Summary.of(per_round(v.throughput["proxy"], v.throughput["direct"], ratio))
        added = Summary.of(per_round(v.ttft_median_ms["proxy"], v.ttft_median_ms["direct"], lambda p, d: p - d))
        found.append(goal(f"real engine, vLLM's client, c={v.load.concurrency}: throughput proxy / direct",
                          f"≥ {THROUGHPUT_GOAL}", share.text(1, 3),
                          None if share.runs == 0 else share.median >= THROUGHPUT_GOAL,
                          by=f"{THROUGHPUT_GOAL - share.median:.3f}"))
        found.append(goal(f"real engine, vLLM's client, c={v.load.concurrency}: added median TTFT",
                          f"≤ {TTFT_GOAL_MS:g} ms", added.text(1, 1, " ms"),
                          None if added.runs == 0 else added.median <= TTFT_GOAL_MS,
                          by=f"{added.median - TTFT_GOAL_MS:.1f} ms"))
    return found
