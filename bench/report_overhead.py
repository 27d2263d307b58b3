"""Section 2 of the report: request overhead, streaming, workers, the relay against LiteLLM's route, profile."""

from __future__ import annotations

from entrypoint.workers import MAX_AUTO_WORKERS

from .markdown import per_round, s, table
from .overhead import OverheadResults
from .settings import Settings
from .stats import Summary, median, ratio


def load_section(o: OverheadResults, settings: Settings) -> str:
    cells = o.cells["load"]
    direct, proxy = cells["direct"], cells["proxy"]
    rows = []
    for c in sorted(direct):
        d, p = direct[c], proxy[c]
        rows.append([str(c), s(d.rps, 0), s(p.rps, 0), s(per_round(p.rps, d.rps, ratio), 3),
                     s(d.p50_ms, 2), s(p.p50_ms, 1), s(per_round(p.p50_ms, d.p50_ms, lambda a, b: a - b), 1),
                     s(d.p99_ms, 2), s(p.p99_ms, 1),
                     f"{d.errors}/{p.errors}"])
    errors = [f"{side} c={c}: {cell.error_sample}" for side in cells for c, cell in cells[side].items()
              if cell.error_sample]
    cpu = [[str(c), s(p.cpu_cores.get("proxy", []), 2), s(cpu_ms_per_request(p, "proxy"), 2),
            s(p.cpu_cores.get("engine", []), 2), s(cpu_ms_per_request(p, "engine"), 3)]
           for c, p in sorted(proxy.items())]
    text = [
        "## 2. Request overhead\n",
        "### Non-streaming chat completions: direct to the engine vs through llm-entry's proxy\n",
        f"Closed loop: each of c clients sends its next request when the last one is answered; "
        f"{settings.load_duration:g} s measured after {settings.load_warmup:g} s of warm-up, "
        f"{settings.load_rounds} round(s). Same engine double on both sides (llm-entry's own, "
        "reached directly with its internal key), so the proxy is the only difference. "
        "Latencies in ms.\n",
        table(["c", "direct req/s", "proxy req/s", "proxy/direct", "direct p50", "proxy p50",
               "added p50", "direct p99", "proxy p99", "errors d/p"], rows),
        "CPU while the proxy side ran: cores busy (of 2) and CPU milliseconds per request, for the "
        "proxy's process group and the engine double. The proxy's CPU per request is what bounds its "
        "throughput: one worker is one process with one GIL, so it cannot pass 1000 / (CPU ms per "
        "request) req/s however many clients wait.\n",
        table(["c", "proxy cores", "proxy CPU ms/request", "engine cores", "engine CPU ms/request"], cpu),
    ]
    if errors:
        text.append("Errors: " + "; ".join(errors) + "\n")
    return "\n".join(text)


def cpu_ms_per_request(cell, group: str) -> list[float]:
    """Per round: CPU seconds per second of `group`, over requests per second, in ms."""
    rounds = zip(cell.cpu_cores.get(group, []), cell.rps, strict=False)
    return [1000 * cores / rps if rps else float("nan") for cores, rps in rounds]


def stream_section(o: OverheadResults) -> str:
    rows = []
    direct, proxy = o.streams["direct"], o.streams["proxy"]
    for c in sorted(direct):
        d, p = direct[c], proxy[c]
        rows.append([str(c), s(d.ttft_p50_ms, 1), s(p.ttft_p50_ms, 1),
                     s(per_round(p.ttft_p50_ms, d.ttft_p50_ms, lambda a, b: a - b), 1),
                     s(d.itl_p50_ms, 2), s(p.itl_p50_ms, 2),
                     s(per_round(p.itl_p50_ms, d.itl_p50_ms, lambda a, b: a - b), 3),
                     s(d.itl_p99_ms, 2), s(p.itl_p99_ms, 2), f"{d.streams}/{p.streams}",
                     f"{d.errors}/{p.errors}"])
    return "\n".join([
        "### Streaming: time to first token and inter-token latency\n",
        "The double streams 50 tokens, sleeping 10 ms before each (ENGINE_DOUBLE_TOKENS=50, "
        "ENGINE_DOUBLE_TOKEN_INTERVAL=0.01), so 10 ms is the floor of both. Times in ms, per content "
        "token as the client receives it.\n",
        table(["c", "direct TTFT p50", "proxy TTFT p50", "added TTFT", "direct ITL p50", "proxy ITL p50",
               "added ITL p50", "direct ITL p99", "proxy ITL p99", "streams d/p", "errors d/p"], rows),
    ])


def against_first(cells: dict) -> list[tuple[str, int, object, object]]:
    """(side, c, its cell, the first side's cell at c) for every side and c."""
    names = list(cells)
    base = cells[names[0]]
    return [(name, c, cells[name][c], base[c]) for name in names for c in sorted(base)]


def workers_section(o: OverheadResults) -> str:
    cells = o.cells["workers"]
    names = list(cells)
    base = cells[names[0]]
    rows = [[name, str(c), s(cell.rps, 0), s(per_round(cell.rps, first.rps, ratio), 2),
             s(cell.p50_ms, 1), s(cell.p99_ms, 1), s(cell.cpu_cores.get("proxy", []), 2)]
            for name, c, cell, first in against_first(cells)]
    memory = [[label, str(u.count), f"{u.rss_mb:.0f}", f"{u.pss_mb:.0f}"] for label, u in o.proxy_memory.items()]
    text = [
        "### Proxy workers: `--proxy-workers 1` vs `2` (= CPU count)\n",
        "`--proxy-workers auto` (the default) gives a GPU node one worker per usable CPU, up to "
        f"{MAX_AUTO_WORKERS}, and "
        "keeps 1 beside a CPU engine (which needs the cores); these cells are why.\n",
        "\"1 worker\" and \"2 workers\" are two llm-entry instances (`--proxy-workers 1` and `2`; LiteLLM "
        "runs uvicorn with `workers=N`, which spawns N fresh interpreters beside a supervising one), both "
        "alive, same kind of engine, loaded in turn. Latencies in ms, CPU in cores (of 2) busy in the "
        "proxy's process group.\n",
        table(["proxy", "c", "req/s", f"req/s / {names[0]}", "p50", "p99", "CPU cores"], rows),
        "Memory of the proxy's whole process group after the load (RSS counts shared pages in every "
        "process, PSS splits them among the processes sharing them):\n",
        table(["proxy", "processes", "RSS MB", "PSS MB"], memory),
    ]
    top, low = max(base), min(base)
    for name in names[1:]:
        gain = Summary.of(per_round(cells[name][top].rps, base[top].rps, ratio))
        if gain.runs and name in o.proxy_memory and names[0] in o.proxy_memory:
            mem, mem1 = o.proxy_memory[name].pss_mb, o.proxy_memory[names[0]].pss_mb
            text.append(f"- {name}: {gain.median:.2f}× the throughput of {names[0]} at c={top}; at c={low} "
                        f"median latency {median(cells[name][low].p50_ms):.1f} ms against "
                        f"{median(base[low].p50_ms):.1f} ms; {mem:.0f} MB against {mem1:.0f} MB "
                        f"(PSS, {ratio(mem, mem1):.1f}×).")
    return "\n".join(text) + "\n"


def route_section(o: OverheadResults) -> str:
    cells = o.cells["route"]
    names = list(cells)
    rows = [[name, str(c), s(cell.rps, 0), s(per_round(cell.rps, first.rps, ratio), 2),
             s(cell.p50_ms, 2), s(per_round(cell.p50_ms, first.p50_ms, lambda x, y: x - y), 2),
             s(cpu_ms_per_request(cell, "proxy"), 2)]
            for name, c, cell, first in against_first(cells)]
    libs = ", ".join(f"{name} {'loaded' if loaded else 'NOT loaded'}" for name, loaded in o.proxy_libraries.items())
    return "\n".join([
        "### The model relay against LiteLLM's own chat route\n",
        "The proxy alone, in front of the same engine double, started as llm-entry starts it (the model "
        "relay, `entrypoint/inside/proxy_relay.py`, in front of LiteLLM's app) and as llm-entry started it before "
        "the relay (LiteLLM's own launcher: its chat route, with llm-entry's config and key check). "
        "Latencies in ms; ratios and differences against the first side, per round; CPU in ms per "
        "request of the proxy's process group.\n",
        table(["proxy", "c", "req/s", f"req/s / {names[0]}", "p50", f"p50 − {names[0]}", "CPU ms/request"], rows),
        f"Libraries mapped into llm-entry's proxy process (/proc/PID/maps): {libs or 'unknown'}. LiteLLM "
        "1.103 asks uvicorn for `loop=\"uvloop\"` itself (proxy_cli `_get_loop_type`), and uvicorn picks "
        "httptools when it is installed: both fast paths are on, for the relay too; the relay's client to "
        "the engine is aiohttp (a LiteLLM dependency).\n",
        reuse_text(o),
    ])


def reuse_text(o: OverheadResults) -> str:
    if not o.engine_connections:
        return ""
    counts = "; ".join(f"{r.clients} client(s): {r.requests} requests, {r.opened} connection(s) opened "
                       f"during the load ({r.open_before} already open)" for r in o.engine_connections)
    reused = all(r.opened <= r.clients for r in o.engine_connections)
    verdict = ("The proxy keeps its connections to the engine open and reuses them, so there is no connection "
               "set-up per request to tune away." if reused else
               "More connections were opened than there were clients: the proxy does not fully reuse its "
               "connections to the engine.")
    return ("Connections from the proxy to the engine (the socket table sampled every 5 ms while clients "
            f"load the proxy): {counts}. {verdict}\n")


WRAPPERS = ("litellm/proxy/middleware/", "litellm/proxy/_lazy_features.py", "litellm/proxy/proxy_cli.py")


def profile_section(o: OverheadResults) -> str:
    p = o.profile
    if p is None:
        return ""
    if not p.available:
        return f"### Profile of the proxy under load\n\nNo profile: {p.note}\n"
    load = o.profile_load
    # LiteLLM's own functions, less the middleware every request passes through.
    handlers = [(name, pct) for name, pct in p.inclusive_top
                if ("(litellm/" in name or "(entrypoint/" in name or "llm_entry" in name)
                and not any(w in name for w in WRAPPERS)][:15]
    text = [
        "### Profile of the proxy under load\n",
        f"py-spy, 100 samples/s for {p.seconds:g} s (`record --nonblocking --gil`), on the proxy worker "
        f"(pid {p.pid}) while {max(o.cells['load']['direct']) if 'load' in o.cells else 32} clients load it "
        f"({median(load.rps):.0f} req/s, p50 {median(load.p50_ms):.0f} ms); {p.samples} samples of the "
        "thread holding the GIL, i.e. where the proxy's Python CPU time goes. The proxy is one process "
        "with one GIL: whatever it spends per request caps its requests/s at one core.\n",
        "By thread: " + ", ".join(f"{name} {pct:.0f}%" for name, pct in p.threads) + ".\n",
        "By package (self time of the innermost frame):\n",
        table(["package", "% of samples"], [[name, f"{pct:.1f}"] for name, pct in p.packages]),
        "Innermost frames (self time):\n",
        table(["frame", "%"], [[f"`{name}`", f"{pct:.1f}"] for name, pct in p.self_top]),
        "LiteLLM functions on the stack (inclusive; the middleware chain every request passes is left out):\n",
        table(["function", "%"], [[f"`{name}`", f"{pct:.1f}"] for name, pct in handlers]),
    ]
    if p.imports >= 1.0:
        callers = ", ".join(f"`{name}` ({pct:.1f}%)" for name, pct in p.import_callers)
        text.append(f"{p.imports:.1f}% of the samples are inside Python's import machinery while serving, "
                    f"called from {callers}: an import that fails is retried, and re-compiled, on every "
                    "request. llm-entry settles the ones it knows once per worker "
                    "(`entrypoint/inside/proxy_imports.py`); one showing here is new: add it there.\n")
    else:
        text.append(f"Python's import machinery: {p.imports:.1f}% of the samples. LiteLLM 1.103 retries "
                    "a failing import of its OpenTelemetry V2 logger on every request (it needs "
                    "`opentelemetry._events`, gone from opentelemetry-api 1.44, which vLLM pulls in); "
                    "llm-entry settles it once per worker (`entrypoint/inside/proxy_imports.py`).\n")
    return "\n".join(text)
