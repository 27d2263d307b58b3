"""Process groups and child reaping, as a container's PID 1 must do them.

The engine and the proxy each lead a process group (supervisord puts them
there); vLLM's EngineCore and workers stay in the engine's group even after
the API server dies, so groups, not PIDs, are what gets signalled.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_CHILD_SUBREAPER = 36


def group_alive(pgid: int) -> bool:
    """Some member of the group still runs. Zombies do not count: a parent
    that cannot reap them (a stopped supervisord) must not hold up a shutdown."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid_alive(pgid) or _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
    """Scan /proc (only once the leader is gone: it costs a few ms)."""
    if not proc_is_ours():
        return True  # cannot tell: assume the worst
    for _pid, fields in _proc_stats():
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _proc_stats():
    """(pid, the fields after the command name) of every process /proc shows."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as file:
                    yield int(entry.name), file.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_leader(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def proc_is_ours() -> bool:
    """Whether /proc shows our PID namespace's numbers (not so under a bare
    `unshare --pid` without a new /proc mount)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    if proc_is_ours():
        try:
            with open(f"/proc/{pid}/stat") as file:
                return file.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def become_subreaper() -> bool:
    """Adopt orphaned descendants (as PID 1 does) so none outlives us unreaped."""
    if os.getpid() == 1:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def describe_wait_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return describe_signal(os.WTERMSIG(status))
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def describe_signal(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    text = f"killed by {name}"
    if number == signal.SIGKILL:
        text += " (perhaps out of memory: check the container's memory limit and dmesg)"
    return text


def adopted_groups() -> set[int]:
    """Process groups of our children other than our own: as PID 1 or a
    subreaper we adopt what an exited supervisord or engine left behind."""
    if not proc_is_ours():
        return set()  # its numbers are another namespace's: nothing here is safe to signal
    me, own_group = os.getpid(), os.getpgrp()
    return {int(fields[2]) for pid, fields in _proc_stats()
            if int(fields[1]) == me and int(fields[2]) != own_group and fields[0] != "Z"}


class ProcessTable:
    """The process operations the monitor and the shutdown act through; unit
    tests pass a fake with the same methods."""

    group_alive = staticmethod(group_alive)
    leader_alive = staticmethod(pid_alive)
    signal_group = staticmethod(signal_group)
    signal_leader = staticmethod(signal_leader)
    adopted_groups = staticmethod(adopted_groups)


class Reaper:
    """Collects the exit status of every child, known or adopted."""

    def __init__(self):
        self.statuses: dict[int, int] = {}

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.statuses[pid] = status
