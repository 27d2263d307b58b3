"""A short py-spy profile of the proxy under load, summarised.

py-spy is optional (`pip install py-spy`); without it the report says so.
It samples the proxy worker 100 times a second without pausing it
(--nonblocking) and writes collapsed stacks; we fold them into the frames
and packages where the proxy spends its busy time (idle waits are not sampled).
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

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
PACKAGE_MARKERS = ("site-packages/", "lib/python3")


@dataclass
class Profile:
    available: bool
    pid: int = 0
    seconds: float = 0.0
    samples: int = 0
    self_top: list[tuple[str, float]] = field(default_factory=list)       # frame, % of samples
    inclusive_top: list[tuple[str, float]] = field(default_factory=list)
    packages: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def package_of(path: str) -> str:
    """'litellm.proxy', 'starlette', 'asyncio' ... from a frame's file."""
    for marker in PACKAGE_MARKERS:
        if marker in path:
            rest = path.split(marker, 1)[1]
            if marker == "lib/python3":
                rest = rest.split("/", 1)[1] if "/" in rest else rest
                if rest.startswith("site-packages/"):
                    rest = rest[len("site-packages/"):]
            parts = [p for p in rest.split("/") if p]
            if not parts:
                break
            if parts[0] == "litellm" and len(parts) > 2:
                return "litellm." + parts[1]
            return parts[0].removesuffix(".py")
    if "entrypoint/" in path or "llm_entry" in path:
        return "llm-entry (custom auth)"
    return path.rsplit("/", 1)[-1] or "?"


def short_frame(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/", "lib/python3.10/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path}:{match['line']})" if match["line"] else f"{match['func']} ({path})"


def summarise(collapsed: str, top: int = 12) -> tuple[int, list, list, list]:
    self_counts: Counter = Counter()
    inclusive: Counter = Counter()
    packages: Counter = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        # The first frame may be the thread ("process 123:..."): skip non-frames.
        frames = [f for f in frames if FRAME.match(f)]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        self_counts[short_frame(leaf)] += n
        match = FRAME.match(leaf)
        packages[package_of(match["file"]) if match else "?"] += n
        for name in {short_frame(f).rsplit(":", 1)[0] for f in frames}:
            inclusive[name] += n

    def percent(counter: Counter, keep: int) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / total) for name, n in counter.most_common(keep)] if total else []

    return total, percent(self_counts, top), percent(inclusive, top * 2), percent(packages, top)


class Recording:
    """py-spy recording the proxy while the caller puts it under load."""

    def __init__(self, pid: int, seconds: float, out: Path):
        self.pid = pid
        self.seconds = seconds
        self.out = out
        self.binary = py_spy()
        self.process: subprocess.Popen | None = None
        self.log = out.with_suffix(".log")

    def start(self) -> "Recording":
        if self.binary is not None:
            argv = [self.binary, "record", "--pid", str(self.pid), "--duration", str(max(1, round(self.seconds))),
                    "--rate", "100", "--nonblocking", "--format", "raw", "--output", str(self.out)]
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
        samples, self_top, inclusive_top, packages = summarise(self.out.read_text(errors="replace"))
        return Profile(True, pid=self.pid, seconds=self.seconds, samples=samples, self_top=self_top,
                       inclusive_top=inclusive_top, packages=packages)


def record_during(pid: int, seconds: float, out: Path, load) -> tuple[Profile, object]:
    """Profile `pid` while `load()` runs; return both results."""
    recording = Recording(pid, seconds, out).start()
    result = load()
    return recording.finish(), result
