"""A short py-spy profile of the proxy under load, summarised.

py-spy is optional (`pip install py-spy`); without it the report says so.
It samples the proxy worker 100 times a second without pausing it
(--nonblocking), only the thread that holds the GIL (--gil: where Python's
CPU time goes), and writes collapsed stacks; we fold them into threads,
packages, frames and functions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import procs

REPO_ROOT = str(Path(__file__).resolve().parent.parent)

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
THREAD = re.compile(r"^thread \(\d+\): (?P<name>.*)$")
# Frames every sample of a thread passes through: they say nothing about the cost.
SCAFFOLDING = ("/click/", "/uvicorn/main.py", "/uvicorn/server.py", "/uvicorn/_compat.py",
               "/asyncio/runners.py", "/asyncio/base_events.py", "/asyncio/events.py", "/threading.py",
               "/concurrent/futures/thread.py", "(<string>")


@dataclass
class Profile:
    available: bool
    pid: int = 0
    seconds: float = 0.0
    samples: int = 0
    threads: list[tuple[str, float]] = field(default_factory=list)         # thread, % of samples
    packages: list[tuple[str, float]] = field(default_factory=list)        # package, % (self time)
    self_top: list[tuple[str, float]] = field(default_factory=list)        # frame, % (self time)
    inclusive_top: list[tuple[str, float]] = field(default_factory=list)   # function, % (on the stack)
    imports: float = 0.0                                                   # % inside the import machinery
    import_callers: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def package_of(path: str) -> str:
    """'litellm.proxy', 'starlette', 'asyncio' ... from a frame's full file name."""
    if path.startswith("<frozen importlib"):
        return "importlib"
    if "/site-packages/" in path:
        parts = path.split("/site-packages/", 1)[1].split("/")
        if parts[0] == "litellm" and len(parts) > 2:
            return "litellm." + parts[1]
        return parts[0].removesuffix(".py")
    if "/lib/python3" in path:
        parts = path.split("/lib/python3", 1)[1].split("/")[1:]
        return (parts[0].removesuffix(".py") if parts else "?") + " (stdlib)"
    if "/entrypoint/" in path or "llm_entry" in path:
        return "llm-entry (relay, key check)"
    return path.rsplit("/", 1)[-1] or "?"


def short_frame(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("/site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.10/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        # llm-entry's own modules (an editable install): named from the repo root.
        if path.startswith(REPO_ROOT + "/"):
            path = path[len(REPO_ROOT) + 1:]
    return f"{match['func']} ({path}:{match['line']})" if match["line"] else f"{match['func']} ({path})"


def _percent(counter: Counter, total: int, keep: int) -> list[tuple[str, float]]:
    return [(name, 100.0 * n / total) for name, n in counter.most_common(keep)] if total else []


def summarise(collapsed: str, top: int = 12) -> Profile:
    """Fold py-spy's collapsed stacks ("thread;frame;frame count" lines)."""
    threads, packages, leaves, inclusive, callers = Counter(), Counter(), Counter(), Counter(), Counter()
    total = in_imports = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        thread = THREAD.match(parts[0])
        frames = [f for f in parts[1:] if FRAME.match(f)] if thread else [f for f in parts if FRAME.match(f)]
        if not frames:
            continue
        total += n
        name = thread["name"] if thread else "?"
        pool = "thread pool (" + name.rstrip("0123456789_") + ")"
        threads["event loop (MainThread)" if name == "MainThread" else pool] += n
        leaf = FRAME.match(frames[-1])
        leaves[short_frame(frames[-1])] += n
        packages[package_of(leaf["file"])] += n
        for function in {short_frame(f).rsplit(":", 1)[0] + ")" for f in frames
                         if not any(mark in f for mark in SCAFFOLDING)}:
            inclusive[function] += n
        first_import = next((i for i, f in enumerate(frames) if "<frozen importlib" in f), None)
        if first_import is not None:
            in_imports += n
            callers[short_frame(frames[max(first_import - 1, 0)])] += n
    return Profile(
        True, samples=total, threads=_percent(threads, total, 6), packages=_percent(packages, total, top),
        self_top=_percent(leaves, total, top), inclusive_top=_percent(inclusive, total, 200),
        imports=100.0 * in_imports / total if total else 0.0, import_callers=_percent(callers, total, 3),
    )


class Recording:
    """py-spy recording the proxy while the caller puts it under load."""

    def __init__(self, pid: int, seconds: float, out: Path):
        self.pid = pid
        self.seconds = seconds
        self.out = out
        self.binary = py_spy()
        self.process: subprocess.Popen | None = None
        self.log = out.with_suffix(".log")

    def start(self) -> Recording:
        if self.binary is not None:
            # --gil: only the thread holding the GIL, i.e. where the CPU time of
            # Python code goes; -F: one entry per function, not per line.
            argv = [self.binary, "record", "--pid", str(self.pid), "--duration", str(max(1, round(self.seconds))),
                    "--rate", "100", "--nonblocking", "--gil", "--threads", "--full-filenames", "-F",
                    "--format", "raw", "--output", str(self.out)]
            self.process = procs.launch(argv, {"PATH": "/usr/bin:/bin"}, self.log)
        return self

    def finish(self) -> Profile:
        if self.binary is None:
            return Profile(False, note="py-spy is not installed (pip install py-spy to get a profile)")
        try:
            self.process.wait(self.seconds + 30)
        except subprocess.TimeoutExpired:
            procs.stop_group(self.process)
        if not self.out.exists():
            note = self.log.read_text(errors="replace")[-500:] if self.log.exists() else ""
            return Profile(False, pid=self.pid, note=f"py-spy wrote no profile: {note.strip()}")
        found = summarise(self.out.read_text(errors="replace"))
        found.pid, found.seconds = self.pid, self.seconds
        return found


def record_during(pid: int, seconds: float, out: Path, load) -> tuple[Profile, object]:
    """Profile `pid` while `load()` runs; return both results."""
    recording = Recording(pid, seconds, out).start()
    result = load()
    return recording.finish(), result
