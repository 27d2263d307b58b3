"""A program's last words: what it wrote before it exited, told as one line
that names the most telling line of its output, and its last lines to print
below it.

The line is chosen by what it says, never by a word that happens to be in it
(LiteLLM's uvicorn logger is named `uvicorn.error`, and logs "Uvicorn running"
through it). Each line is read as the programs write them: vLLM's
`(EngineCore pid=9) ERROR 05-02 10:00:01 [core.py:708] message`, uvicorn's
`ERROR:    message`, llm-entry's proxy log format `INFO uvicorn.error: message`,
LiteLLM's `10:00:01 - LiteLLM Proxy:ERROR: file.py:12 - message`, colour codes
or not. Best first:

1. an exception, at error level or none: the last line of a traceback, or a
   line like `ValueError: ...` (also inside vLLM's ERROR lines);
2. an exception that follows from another: one that points elsewhere (vLLM's
   "RuntimeError: Engine core initialization failed. See root cause above",
   whose cause another of its processes printed earlier), or a later link of
   a chain ("During handling of the above exception, ...");
3. a line at error level (ERROR, CRITICAL, FATAL), or a level-less line
   that says it failed (`Killed`, `Segmentation fault`, `error: ...`);
and among equals the last. Lines at INFO, WARNING or DEBUG level never count,
whatever words they hold. With none of these the last line is quoted as the
last output. The choice reads more lines than are printed: vLLM ends with
dozens of lines of nanobind's leak report after the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .inside.names import ENGINE
from .logs import ANSI

TAIL_LINES = 20        # printed below the summary
HISTORY_LINES = 200    # read to choose the telling line
MAX_LINE = 300

# vLLM's process tag, `(EngineCore_DP0 pid=9) `.
PROCESS_TAG = re.compile(r"^\([^()]*?\bpid=\d+\)\s+")
LEVEL = re.compile(r"(?<![A-Za-z])(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)(?![A-Za-z])")
LEVEL_SEARCH_WIDTH = 48   # a level word past this is part of the message, not its prefix
# What follows the level word up to the message: vLLM's date and [file:line],
# LiteLLM's `: file.py:12 -`, a logger name and its colon, uvicorn's padded colon.
LEVEL_TAIL = re.compile(
    r"^(?:(?:\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]"   # vLLM
    r"|:\s[\w.\-]+:\d+\s-"                                            # LiteLLM
    r"|\s[\w.\-]+:)\s?"                                                 # a logger name
    r"|:\s*)"                                                            # uvicorn, Python's default
)
# "ValueError: ...", "torch.OutOfMemoryError: CUDA out of memory", a bare
# "AssertionError" at the end of a line.
EXCEPTION = re.compile(r"(?<![\w.])[A-Za-z_][\w.]*(?:Error|Exception)\b(?::|\s*$)")
# A traceback's last line: `Name: message` or a bare `Name`, not indented.
TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(?::|$)")
TRACEBACK_START = "Traceback (most recent call last):"
CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
FAILED_WORDS = re.compile(r"^(?:error|fatal)\b|\b(?:Killed|Segmentation fault|core dumped)\b", re.IGNORECASE)
POINTS_ELSEWHERE = re.compile(
    r"see (?:the )?(?:root cause|error|stack trace|traceback|logs?)\b[^.]*?(?:above|root cause)"
    r"|failed to start\.?\s*$",
    re.IGNORECASE,
)
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL", "FATAL"})

EXCEPTION_RANK, CONSEQUENCE_RANK, ERROR_RANK, PLAIN_RANK = 3, 2, 1, 0


@dataclass(frozen=True)
class ExitStory:
    summary: str                 # one line
    last_lines: tuple[str, ...]  # printed below it


@dataclass(frozen=True)
class Line:
    level: str | None   # the log level the line was written at, None when it has none
    message: str        # the text after the prefixes, indentation kept


def read_line(raw: str) -> Line:
    """Split a program's line into its log level and its message."""
    text = PROCESS_TAG.sub("", ANSI.sub("", raw).rstrip())
    match = LEVEL.search(text, 0, LEVEL_SEARCH_WIDTH)
    if match is None:
        return Line(None, text)
    rest = text[match.end():]
    prefix = LEVEL_TAIL.match(rest)
    return Line(match.group(1), rest[prefix.end():] if prefix else rest.lstrip())


def rank_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(rank, what to quote) for each line, reading tracebacks as they go:
    one per process, since vLLM's processes write between each other's lines.
    In a chain ("During handling of the above exception, another exception
    occurred") the first exception is the cause, those after it follow from it."""
    ranked = []
    open_traceback: set[str] = set()   # process tags whose traceback is being printed
    chain_next: set[str] = set()       # ... whose next traceback continues a chain
    in_chain: set[str] = set()         # ... whose open traceback continues one
    for raw in lines:
        line = read_line(raw)
        tag = _process_tag(raw)
        message = line.message
        if message.startswith(CHAINED):
            chain_next.add(tag)
            ranked.append((PLAIN_RANK, raw))
            continue
        if message.startswith(TRACEBACK_START):
            open_traceback.add(tag)
            (in_chain.add if tag in chain_next else in_chain.discard)(tag)
            chain_next.discard(tag)
            ranked.append((PLAIN_RANK, raw))
            continue
        if tag in open_traceback and (not message or message[0].isspace()):
            ranked.append((PLAIN_RANK, raw))   # a frame, its code, its ^^^^ marks
            continue
        ends_traceback = tag in open_traceback and TRACEBACK_END.match(message) is not None
        open_traceback.discard(tag)
        rank, quoted = _rank(line, raw, ends_traceback)
        if rank == EXCEPTION_RANK and ends_traceback and tag in in_chain:
            rank = CONSEQUENCE_RANK
        ranked.append((rank, quoted))
    return ranked


def _process_tag(raw: str) -> str:
    match = PROCESS_TAG.match(ANSI.sub("", raw))
    return match.group(0).split(" pid=")[0] if match else ""


def _rank(line: Line, raw: str, ends_traceback: bool) -> tuple[int, str]:
    if line.level is not None and line.level not in ERROR_LEVELS:
        return PLAIN_RANK, raw   # INFO, WARNING, DEBUG: whatever words the message holds
    exception = EXCEPTION.search(line.message)
    if ends_traceback or exception is not None:
        quoted = line.message[exception.start():] if exception is not None else line.message
        return (CONSEQUENCE_RANK if POINTS_ELSEWHERE.search(quoted) else EXCEPTION_RANK), quoted
    if line.level is not None or FAILED_WORDS.search(line.message):
        return ERROR_RANK, raw
    return PLAIN_RANK, raw


def telling(lines: list[str]) -> tuple[int, str]:
    """(rank, line) of the most telling line; (PLAIN_RANK, '') for no output."""
    best_rank, best = PLAIN_RANK, ""
    for rank, quoted in rank_lines(lines):
        if rank >= best_rank:
            best_rank, best = rank, quoted
    best = ANSI.sub("", best).strip()
    return best_rank, (best if len(best) <= MAX_LINE else best[:MAX_LINE - 3] + "...")


LABELS = {EXCEPTION_RANK: "its error", CONSEQUENCE_RANK: "its error", ERROR_RANK: "its error",
          PLAIN_RANK: "last output"}


def tell_exit(name: str, how: str, lived: float, was_ready: bool, history: list[str]) -> ExitStory:
    """The summary of an exit, told from up to HISTORY_LINES of the program's
    output; the last TAIL_LINES of it go below."""
    phase = "after it was ready" if was_ready else "while starting"
    summary = f"{name} exited ({how}) {lived:.0f} s after start, {phase}"
    if name == ENGINE:
        summary += "; vLLM exits even with status 0 when its engine core dies"
    history = history[-HISTORY_LINES:]
    rank, line = telling(history)
    if line:
        summary += f"; {LABELS[rank]}: {line}"
    return ExitStory(summary, tuple(history[-TAIL_LINES:]))
