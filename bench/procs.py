"""Processes as /proc shows them, and stopping what the benchmarks started.

Everything the benchmarks start leads its own session (so its process
group), and is stopped by that group: SIGTERM, a deadline, SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Timeout(Exception):
    """A wait ran past its deadline."""


def wait_for(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.05):
    """Poll until condition() is truthy; raise Timeout after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Alive and not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and memory of some processes at one moment."""

    cpu_s: float
    rss_mb: float
    pss_mb: float
    count: int

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.cpu_s + other.cpu_s, self.rss_mb + other.rss_mb,
                     self.pss_mb + other.pss_mb, self.count + other.count)


NO_USAGE = Usage(0.0, 0.0, 0.0, 0)


def usage_of(pid: int) -> Usage:
    """One process (not its children). PSS splits shared pages among their users."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return NO_USAGE
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss = pss = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return Usage(cpu, rss, pss, 1)


def usage_of_all(pids) -> Usage:
    total = NO_USAGE
    for pid in pids:
        total = total + usage_of(pid)
    return total


def launch(argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start a program in a session (process group) of its own, output to a file."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(process: subprocess.Popen, grace: float = 10.0, extra_pgids=()) -> int | None:
    """SIGTERM the process's group, wait to a deadline, SIGKILL what is left.

    `extra_pgids` are groups it started (supervisord's programs lead their own);
    they get SIGKILL once the leader is gone, in case it left them behind.
    """
    pgid = process.pid  # it leads its own session
    if process.poll() is None:
        signal_group(pgid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    signal_group(pgid, signal.SIGKILL)
    for other in extra_pgids:
        signal_group(other, signal.SIGKILL)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    return process.returncode
