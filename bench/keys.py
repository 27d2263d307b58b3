"""What llm-entry costs against the number of keys in --api-keys-file
(issue 20): the proxy's CPU per request, and llm-entry's own CPU per log line
it forwards (each line is redacted of every known key before it is printed).

One llm-entry per key count, all started together (one proxy worker, the
engine double behind it), each with a keys file of its own: one strong random
key a line, each with a name. Each round measures every key count in turn,
who goes first rotating:

- per request: chat completions with the file's last key (the last a scan
  in file order reaches), batch after batch until the settings' most or
  their time window; CPU of the proxy's whole process group over the
  requests sent.
- per log line: first llm-entry's process alone (its threads, not its
  children) left idle for a window, then requests with a wrong key, each of
  which the proxy refuses with one log line; batch after batch, each waited
  for until llm-entry has printed its lines, until the settings' most or
  their time window. CPU (its threads' own clocks) over the lines printed,
  after taking off the idle window's rate for as long as it took.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import batch, footprint, procs, runner
from .load import Errors
from .settings import Settings

CONCURRENCY = 4
REQUEST_BATCH = 100
LINE_BATCH = 250
CATCH_UP_DEADLINE = 300.0     # seconds for llm-entry to print what the proxy logged
REFUSAL_LINE = b"refused POST /v1/chat/completions"


@dataclass
class KeyCountCell(Errors):
    """One key count: one value per round."""

    proxy_ms_per_request: list[float] = field(default_factory=list)
    entry_ms_per_line: list[float] = field(default_factory=list)
    entry_idle_percent: list[float] = field(default_factory=list)
    ready_s: float = float("nan")
    proxy_rss_mb: float = float("nan")
    requests: int = 0
    lines: int = 0
    errors: int = 0               # answers other than 200 (the file's key) or 401 (a wrong key)
    error_sample: str = ""


@dataclass
class KeysResults:
    concurrency: int
    rounds: int
    cells: dict[int, KeyCountCell] = field(default_factory=dict)     # key count -> cell


def keys_file(path: Path, count: int) -> tuple[str, str]:
    """Write `count` keys, one a line with a name; the last line's key and name."""
    lines = [(f"sk-bench-{secrets.token_hex(24)}", f"bench-{number:06d}") for number in range(count)]
    path.write_text("".join(f"{key} name={name}\n" for key, name in lines))
    return lines[-1]


def threads_cpu_s(pid: int) -> float:
    """CPU seconds of a process's threads, to the nanosecond: a log line costs
    llm-entry tens of microseconds, and /proc/PID/stat counts in 10 ms ticks.
    llm-entry's threads live as long as it does, so none of its time is lost
    with a thread that ended. The ticks where schedstat is missing."""
    try:
        return sum(int((task / "schedstat").read_text().split()[0])
                   for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        return procs.usage_of(pid).cpu_s


class Printed:
    """The lines llm-entry has printed so far (its stdout, a file here), read as they come."""

    def __init__(self, path: Path, markers: tuple[bytes, ...]):
        self.path = path
        self.lines = 0
        self.marked = dict.fromkeys(markers, 0)
        self._offset = 0
        self._partial = b""

    def update(self) -> Printed:
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self.lines += len(lines)
        for marker in self.marked:
            self.marked[marker] += sum(marker in line for line in lines)
        return self


class KeyCount:
    """One llm-entry with `count` keys in its keys file, and what it printed."""

    def __init__(self, runs: runner.Runs, count: int):
        self.count = count
        folder = runs.folder("keys")
        path = folder / "keys"
        self.key, name = keys_file(path, count)
        self.wrong_key = f"sk-bench-{secrets.token_hex(24)}"
        self.entry = runner.Entry(runs, ["--proxy-workers", "1", "--api-keys-file", str(path)])
        self.access_line = f"key={name} ".encode()
        self.printed = Printed(self.entry.log, (self.access_line, REFUSAL_LINE))
        self.expected = {self.access_line: 0, REFUSAL_LINE: 0}   # lines the proxy has been made to log

    def proxy_pids(self) -> list[int]:
        return procs.group_members(self.entry.pgid("proxy"))

    def send(self, wrong: bool, count: int, cell: KeyCountCell) -> None:
        key, wanted, line = (self.wrong_key, 401, REFUSAL_LINE) if wrong else (self.key, 200, self.access_line)
        statuses = batch.send(self.entry.port, key, runner.chat_body(), CONCURRENCY, count)
        self.expected[line] += statuses.get(wanted, 0)
        for status, times in statuses.items():
            if status != wanted:
                cell.errors += times
                whose = "a wrong key" if wrong else "a key of the file"
                cell.error_sample = cell.error_sample or f"{whose} got {status}"

    def caught_up(self) -> None:
        """Wait until llm-entry has printed every line the proxy was made to log."""
        def done() -> bool:
            if not self.entry.running():
                raise RuntimeError(f"llm-entry with {self.count} keys exited:\n{self.entry.output()[-2000:]}")
            marked = self.printed.update().marked
            return all(marked[line] >= wanted for line, wanted in self.expected.items())
        procs.wait_for(done, CATCH_UP_DEADLINE, f"llm-entry with {self.count} keys to print the proxy's lines")

    def warm_up(self) -> None:
        cell = KeyCountCell()
        self.send(False, 2 * CONCURRENCY, cell)
        self.send(True, 2 * CONCURRENCY, cell)
        if cell.errors:
            raise RuntimeError(f"with {self.count} keys: {cell.error_sample}")
        self.caught_up()

    def per_request(self, settings: Settings, cell: KeyCountCell) -> float:
        """The proxy group's CPU ms per request with the file's key."""
        meter = footprint.Meter({"proxy": self.proxy_pids}).start()
        began, sent = time.monotonic(), 0
        while sent < settings.key_requests and time.monotonic() - began < settings.key_window:
            size = min(REQUEST_BATCH, settings.key_requests - sent)
            self.send(False, size, cell)
            sent += size
        used = meter.stop()["proxy"]
        cell.requests += sent
        self.caught_up()
        return 1000 * used.cpu_s / sent

    def per_line(self, settings: Settings, cell: KeyCountCell) -> tuple[float, float]:
        """llm-entry's CPU ms per printed line, net of its idle rate; and that idle rate (% of a core)."""
        began, cpu = time.monotonic(), threads_cpu_s(self.entry.pid)
        time.sleep(settings.key_idle_window)
        idle_rate = (threads_cpu_s(self.entry.pid) - cpu) / (time.monotonic() - began)
        before = self.printed.update().lines
        began, cpu, sent = time.monotonic(), threads_cpu_s(self.entry.pid), 0
        while sent < settings.key_lines and time.monotonic() - began < settings.key_window:
            size = min(LINE_BATCH, settings.key_lines - sent)
            self.send(True, size, cell)
            sent += size
            self.caught_up()
        busy, seconds = threads_cpu_s(self.entry.pid) - cpu, time.monotonic() - began
        lines = self.printed.update().lines - before
        cell.lines += lines
        return 1000 * (busy - idle_rate * seconds) / max(lines, 1), 100 * idle_rate

    def one_round(self, settings: Settings, cell: KeyCountCell) -> str:
        cell.proxy_ms_per_request.append(self.per_request(settings, cell))
        per_line, idle_percent = self.per_line(settings, cell)
        cell.entry_ms_per_line.append(per_line)
        cell.entry_idle_percent.append(idle_percent)
        cell.proxy_rss_mb = procs.usage_of_all(self.proxy_pids()).rss_mb
        return (f"proxy {cell.proxy_ms_per_request[-1]:.2f} ms/request, llm-entry {per_line * 1000:.1f} µs/line "
                f"(idle {idle_percent:.2f}% of a core)")


def measure(runs: runner.Runs, settings: Settings, say) -> KeysResults:
    sides = [KeyCount(runs, count) for count in settings.key_counts]
    results = KeysResults(CONCURRENCY, settings.key_rounds,
                          {side.count: KeyCountCell() for side in sides})
    try:
        for side in sides:
            side.entry.start()
        for side in sides:
            results.cells[side.count].ready_s = side.entry.wait_ready()
            side.warm_up()
        say("  keys: ready in " + ", ".join(f"{results.cells[side.count].ready_s:.1f} s with {side.count:,} keys"
                                            for side in sides))
        for round_number in range(settings.key_rounds):
            turn = round_number % len(sides)
            for side in sides[turn:] + sides[:turn]:
                said = side.one_round(settings, results.cells[side.count])
                say(f"  keys round {round_number + 1}, {side.count:,} keys: {said}")
    finally:
        for side in sides:
            if side.entry.process is not None:
                side.entry.stop()
    return results
