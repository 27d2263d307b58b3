"""Processes a test session started and did not stop.

Every process the tests start inherits the session's mark in its environment
(conftest sets it before the first test), and so does everything those start
in turn: supervisord, the engine, LiteLLM's workers, a redis-server. A process
re-parented to init after its parent died still carries the mark, so reading
/proc for it finds what a walk of the process tree would miss."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from bench.procs import cmdline, environment_of

SESSION_MARK = "LLM_ENTRY_TEST_SESSION"


def marked(mark: str) -> list[int]:
    """Live processes other than this one whose environment carries `mark`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if environment_of(int(entry.name)).get(SESSION_MARK) == mark:
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue   # gone, a zombie, or another user's
    return found


def left_running(mark: str, grace: float) -> list[int]:
    """The marked processes still there after `grace` seconds of polling:
    one that is on its way out (a killed group being reaped) gets the time."""
    deadline = time.monotonic() + grace
    while (found := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def describe(pid: int) -> str:
    return f"pid {pid}: " + " ".join(part.decode(errors="replace") for part in cmdline(pid))[:200]


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
