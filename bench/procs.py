"""Processes as /proc shows them (llm-entry's own among them), free loopback
ports, and stopping what the benchmarks started. The tests' harness uses
the same functions.

Everything the benchmarks start leads its own session (so its process
group), and is stopped by that group: SIGTERM, a deadline, SIGKILL.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTENER_PORTS_FROM = 20000
_pick = random.SystemRandom()


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports, free now, below the kernel's ephemeral range.

    bind(0) hands out ports from the ephemeral range, which the kernel also uses
    for every outgoing connection (the proxy's to the engine, a test's client):
    such a port can be taken again before the server binds it, and two picks in
    a row can return the same port. Below that range only listeners take ports,
    and holding every pick open until the last one makes them distinct.
    """
    upper = ephemeral_range_start()
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", _pick.randrange(LISTENER_PORTS_FROM, upper) if upper else 0))
            except OSError:   # taken, or lingering from an earlier server: pick again
                sock.close()
                continue
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def ephemeral_range_start() -> int | None:
    """Where outgoing connections' ports begin, or None when there is no room below it."""
    try:
        start = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        start = 32768   # Linux's default
    return start if start > LISTENER_PORTS_FROM + 1000 else None


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


def boot_clock() -> float:
    """Seconds since boot, the clock /proc/PID/stat's start times use."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float | None:
    """When the process started, on boot_clock() (1/CLK_TCK resolution: 10 ms)."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19]) / CLOCK_TICKS


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
    """A process's argv; [b""] once it is gone (as a zombie's reads)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return [b""]


def environment_of(pid: int) -> dict[str, str]:
    """The environment a process started with; OSError when it cannot be read
    (gone, or another user's): an empty one would prove nothing."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


# What tells llm-entry's processes apart on their command lines.
PROGRAM_MARKERS = {
    "supervisord": (b"supervisor.supervisord",),
    "engine": (b"engine_double", b"vllm.entrypoints", b"entrypoint.inside.engine_cli"),
    "proxy": (b"entrypoint.inside.proxy_server",),
}


def runs_program(pid: int, name: str) -> bool:
    """Whether `pid` is llm-entry's `name` ("supervisord", "engine", "proxy") by its command line."""
    return any(marker in part for part in cmdline(pid) for marker in PROGRAM_MARKERS[name])


def supervisord_under(llm_entry: int) -> int | None:
    return next((pid for pid in children_of(llm_entry) if runs_program(pid, "supervisord")), None)


def program_under(llm_entry: int, name: str) -> int | None:
    """The engine or the proxy: the process under llm-entry that leads its own process group."""
    return next((pid for pid in descendants(llm_entry) if pgid_of(pid) == pid and runs_program(pid, name)), None)


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and memory of some processes at one moment."""

    cpu_s: float
    rss_mb: float
    pss_mb: float
    count: int

    def __add__(self, other: Usage) -> Usage:
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


def exited(process: subprocess.Popen) -> bool:
    """Whether our child has exited, without reaping it: an unreaped child (a
    zombie) keeps its PID, so its process group ID cannot go to another
    process and signalling the group stays safe until stop_group reaps it."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> int | None:
    """SIGTERM the group our child leads, wait to a deadline, SIGKILL the
    group, reap. Once reaped, a child is never signalled again."""
    if process.returncode is not None:
        return process.returncode
    if not exited(process):
        signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not exited(process) and time.monotonic() < deadline:
            time.sleep(0.05)
    signal_group(process.pid, signal.SIGKILL)   # what is left of the group, e.g. orphans
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    return process.returncode


Identity = tuple[int, float]   # (pid, start time): a PID alone may have been reused


def identities(pids) -> set[Identity]:
    found = set()
    for pid in pids:
        started = started_at(pid)
        if started is not None:
            found.add((pid, started))
    return found


def kill_identities(known: set[Identity]) -> None:
    """SIGKILL every process still alive with the PID and start time we saw."""
    for pid, started in known:
        if alive(pid) and started_at(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
