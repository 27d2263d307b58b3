"""The report's section, goals and chart panel on the cost against the number
of keys in --api-keys-file (bench/keys.py)."""

from __future__ import annotations

from . import chart
from .keys import KeysResults
from .markdown import per_round, s, table
from .stats import Summary, ratio

GROWTH_GOAL = 1.2     # the most keys over the fewest, per request and per log line (issue 20)
MEASURES = {"proxy_ms_per_request": "proxy CPU per request", "entry_ms_per_line": "llm-entry CPU per log line"}


def growth(k: KeysResults, measure: str) -> tuple[int, int, Summary]:
    """(fewest keys, most keys, the most's figure over the fewest's, per round)."""
    fewest, most = min(k.cells), max(k.cells)
    return fewest, most, Summary.of(per_round(getattr(k.cells[most], measure), getattr(k.cells[fewest], measure),
                                              ratio))


def _digits(summary: Summary) -> int:
    return 0 if summary.median >= 10 else 2


def keys_section(k: KeysResults) -> str:
    rows = [[f"{count:,}", s(cell.proxy_ms_per_request, 3), s(cell.entry_ms_per_line, 4),
             s(cell.entry_idle_percent, 2), f"{cell.ready_s:.1f}", f"{cell.proxy_rss_mb:.0f}",
             f"{cell.requests} / {cell.lines}", str(cell.errors)] for count, cell in sorted(k.cells.items())]
    growths = []
    for measure, name in MEASURES.items():
        fewest, most, summary = growth(k, measure)
        if summary.runs:
            growths.append(f"{name} with {most:,} keys over {fewest:,} keys: {summary.text(1, _digits(summary))}×")
    errors = [f"{count:,} keys: {cell.error_sample}" for count, cell in k.cells.items() if cell.error_sample]
    return "\n".join([
        "### Cost against the number of keys in --api-keys-file\n",
        "One llm-entry per key count, started together (one proxy worker, the engine double behind it), each "
        "with a keys file of one random key a line, each with a name; every round measures each key count in "
        f"turn, who goes first rotating ({k.rounds} round(s)). Proxy CPU per request: non-streaming chat "
        f"completions with the file's last key, {k.concurrency} clients, CPU of the proxy's process group over "
        "the requests. llm-entry CPU per log line: requests with a wrong key, each refused with one log line "
        "that llm-entry forwards and redacts; llm-entry's own process (not its children) over the lines it "
        "printed, after taking off its idle rate, measured just before for a few seconds (the idle column). "
        f"Goal: at most {GROWTH_GOAL:g}× from the fewest keys to the most, for both.\n",
        table(["keys", "proxy CPU ms/request", "llm-entry CPU ms/log line", "llm-entry idle CPU %",
               "ready s", "proxy RSS MB", "requests / lines", "errors"], rows),
        ("Per round: " + "; ".join(growths) + ".\n") if growths else "",
        ("Errors: " + "; ".join(errors) + "\n") if errors else "",
    ])


def keys_goals(k: KeysResults | None, goal) -> list:
    found = []
    for measure, name in MEASURES.items() if k is not None and len(k.cells) > 1 else ():
        fewest, most, summary = growth(k, measure)
        found.append(goal(f"{name}: {most:,} keys / {fewest:,} keys", f"≤ {GROWTH_GOAL:g}",
                          summary.text(1, _digits(summary)),
                          None if summary.runs == 0 else summary.median <= GROWTH_GOAL,
                          by=f"a factor of {summary.median / GROWTH_GOAL:.1f}" if summary.runs else ""))
    return found


def keys_panel(k: KeysResults) -> chart.Panel:
    def bar(series: str, values) -> chart.Bar:
        summary = Summary.of(values)
        return chart.Bar(series, summary.median, summary.low, summary.high)

    return chart.Panel("2. CPU against the number of keys in --api-keys-file", "ms", [
        (f"{count:,} keys", [bar("proxy, per request", cell.proxy_ms_per_request),
                             bar("llm-entry, per log line", cell.entry_ms_per_line)])
        for count, cell in sorted(k.cells.items())], log=True)
