"""What llm-entry itself costs: CPU and memory of llm-entry and supervisord
(engine and proxy excluded), idle and while serving; and how long a probe
script takes to run, against `python3 -c pass`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import procs, runner


@dataclass
class Window:
    """CPU used and memory held by some processes over one stretch of time."""

    seconds: float = 0.0
    cpu_s: float = 0.0
    rss_mb: float = 0.0      # the largest sample
    pss_mb: float = 0.0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.seconds if self.seconds else float("nan")

    def add(self, other: Window) -> None:
        self.seconds += other.seconds
        self.cpu_s += other.cpu_s
        self.rss_mb = max(self.rss_mb, other.rss_mb)
        self.pss_mb = max(self.pss_mb, other.pss_mb)


class Meter:
    """Measures named groups of processes between start() and stop()."""

    def __init__(self, groups: dict[str, callable]):
        self.groups = groups          # name -> function returning the pids, asked at each sample
        self._start: dict[str, procs.Usage] = {}
        self._t0 = 0.0

    def start(self) -> Meter:
        self._t0 = time.monotonic()
        self._start = {name: procs.usage_of_all(pids()) for name, pids in self.groups.items()}
        return self

    def stop(self) -> dict[str, Window]:
        seconds = time.monotonic() - self._t0
        windows = {}
        for name, pids in self.groups.items():
            now = procs.usage_of_all(pids())
            windows[name] = Window(seconds, max(0.0, now.cpu_s - self._start[name].cpu_s), now.rss_mb, now.pss_mb)
        return windows


def entry_groups(entry: runner.Entry) -> dict[str, callable]:
    """llm-entry, supervisord, and (for context) the proxy's and the engine's process groups."""
    return {
        "llm-entry": lambda: [entry.pid],
        "supervisord": lambda: [entry.pgid("supervisord")],
        "proxy": lambda: procs.group_members(entry.pgid("proxy")),
        "engine": lambda: procs.group_members(entry.pgid("engine")),
    }


def idle(entry: runner.Entry, window: float) -> dict[str, Window]:
    """Usage over `window` seconds with no traffic (the health checks still run)."""
    meter = Meter(entry_groups(entry)).start()
    time.sleep(window)
    return meter.stop()


@dataclass
class ProbeTimes:
    runs: int
    times_ms: dict[str, list[float]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)


def _time_once(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
    return (time.perf_counter() - started) * 1000


def _shown(argv: list[str], folder: Path) -> str:
    """The command line as the report shows it: relative to the repo, the
    interpreter and the temporary folder by role, so the report names no
    path of the machine it ran on."""
    words = []
    for word in argv:
        if word == sys.executable:
            word = "python3"
        elif word == str(folder):
            word = "PROBE_DIR"
        elif word.startswith(str(runner.REPO) + "/"):
            word = word[len(str(runner.REPO)) + 1:]
        words.append(word)
    return " ".join(words)


def probe_times(probe_runs: int, python_runs: int) -> ProbeTimes:
    """probes/readiness and probes/liveness on a ready probe folder, and
    `python3 -c pass`, interleaved so that the machine's mood hits all three."""
    folder = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    (folder / "heartbeat").write_text(f"{int(time.time()) + 3600}\n")
    probes = runner.REPO / "probes"
    commands = {
        "probes/readiness": [str(probes / "readiness"), str(folder)],
        "probes/liveness": [str(probes / "liveness"), str(folder)],
        "python3 -c pass": [sys.executable, "-c", "pass"],
    }
    result = ProbeTimes(runs=probe_runs, times_ms={name: [] for name in commands},
                        commands={name: _shown(argv, folder) for name, argv in commands.items()})
    try:
        ready = subprocess.run(commands["probes/readiness"], capture_output=True, timeout=10)
        if ready.returncode != 0:
            raise RuntimeError(f"probes/readiness fails on a ready folder: {ready.stderr.decode()}")
        for index in range(probe_runs):
            for name, argv in commands.items():
                if name.startswith("python3") and index >= python_runs:
                    continue
                result.times_ms[name].append(_time_once(argv))
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    return result
