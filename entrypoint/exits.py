"""How a program's exit is told: one line that names the most telling line of
its output, and its last lines to print below it.

vLLM's last line is often a wrapper ("RuntimeError: Engine core
initialization failed. See root cause above"): the cause is an earlier
exception line, printed by the EngineCore process. So the summary names the
last line that looks like an error, preferring an exception with its message
over a log-level word, and a wrapper that points elsewhere last of all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAIL_LINES = 20
MAX_LINE = 300
# "ValueError: ...", "torch.OutOfMemoryError: CUDA out of memory", a bare
# "AssertionError" at the end of a line, also behind vLLM's log prefix.
EXCEPTION = re.compile(r"(?<![\w.])[A-Za-z_][\w.]*(?:Error|Exception)\b(?::|\s*$)")
LOG_ERROR = re.compile(r"\b(?:ERROR|CRITICAL|FATAL|[Ee]rror|Killed|Segmentation fault)\b")
POINTS_ELSEWHERE = re.compile(
    r"see (?:the )?(?:root cause|error|traceback|logs?) above|failed to start\.?\s*$|Traceback \(most recent",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ExitStory:
    summary: str                 # one line
    last_lines: tuple[str, ...]  # printed below it


def telling_line(lines: list[str]) -> str:
    """The last exception line, else the last error-looking line, else the
    last line that points elsewhere, else the last line; '' for no output."""
    best, best_rank = "", -1
    for line in lines:
        rank = _rank(line)
        if rank >= best_rank:
            best, best_rank = line, rank
    if best_rank == 3:
        match = EXCEPTION.search(best)
        best = best[match.start():] if match else best
    best = best.strip()
    return best if len(best) <= MAX_LINE else best[:MAX_LINE - 3] + "..."


def _rank(line: str) -> int:
    if POINTS_ELSEWHERE.search(line):
        return 1
    if EXCEPTION.search(line):
        return 3
    if LOG_ERROR.search(line):
        return 2
    return 0


def tell_exit(name: str, how: str, lived: float, was_ready: bool, tail: list[str]) -> ExitStory:
    phase = "after it was ready" if was_ready else "while starting"
    summary = f"{name} exited ({how}) {lived:.0f} s after start, {phase}"
    if name == "engine":
        summary += "; vLLM exits even with status 0 when its engine core dies"
    lines = tail[-TAIL_LINES:]
    line = telling_line(lines)
    if line:
        label = "last output" if max(map(_rank, lines)) == 0 else "its error"
        summary += f"; {label}: {line}"
    return ExitStory(summary, tuple(lines))
