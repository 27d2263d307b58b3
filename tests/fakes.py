"""Fakes and builders for the unit tests.

One fake clock drives time, process groups, supervisord and signals, so a
monitor or shutdown test can play a worst case (nothing dies, supervisord
never answers) in microseconds. Beside them: a console whose output the test
reads, and a real Config built by build_config on a pretend node.
"""

from __future__ import annotations

import io
import json
import math
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from entrypoint.config import Config, Options, Timing, build_config
from entrypoint.console import Console
from entrypoint.gpus import NodeGpus
from entrypoint.node_group import NodeGroup
from entrypoint.supervision import ProgramState, SupervisorError

WALL_OFFSET = 1_700_000_000.0   # wall time = fake monotonic time + this
MASTER_KEY = "sk-7Hq2mVx9LpR4sKd8Wn3Tz6Yb"
GIB = 1 << 30


def timing(**changes) -> Timing:
    values = dict(startup_timeout=100.0, check_interval=2.0, check_timeout=3.0, unready_after=2,
                  hang_timeout=30.0, heartbeat_ttl=15.0, grace_period=25.0, drain_delay=0.0)
    values.update(changes)
    return Timing(**values)


@dataclass(frozen=True)
class FakeConfig:
    """The fields of Config that the monitor and the shutdown read."""

    timing: Timing = field(default_factory=timing)
    engine_restart: str = "never"
    max_restarts: int = 3
    restart_window: float = 300.0
    local_url: str = "http://127.0.0.1:8080"
    host: str = "0.0.0.0"
    port: int = 8080
    served_model_name: str = "tiny"
    api_keys_file: Path | None = None
    group: NodeGroup = NodeGroup()


class FakeClock:
    """Time that moves only when a test (`advance`) or the code under test (`sleep`) moves it."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + WALL_OFFSET

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Group:
    """A process group: it dies at `dies_at`, sooner after a signal it obeys."""

    term_takes: float | None = 0.1   # None: ignores SIGTERM (vLLM while loading)
    kill_takes: float | None = 0.01  # None: outlives SIGKILL (stuck in a driver)
    dies_at: float = math.inf
    leader_dies_at: float = math.inf


class FakeProcesses:
    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.groups: dict[int, Group] = {}
        self.adopted: set[int] = set()
        self.sent: list[tuple[float, int, str]] = []   # (time, pgid, "TERM leader" / "KILL group")

    def add(self, pgid: int, **behaviour) -> Group:
        self.groups[pgid] = Group(**behaviour)
        return self.groups[pgid]

    def group_alive(self, pgid: int) -> bool:
        group = self.groups.get(pgid)
        return group is not None and self.clock() < group.dies_at

    def leader_alive(self, pid: int) -> bool:
        group = self.groups.get(pid)
        return group is not None and self.clock() < min(group.dies_at, group.leader_dies_at)

    def signal_leader(self, pid: int, sig: int) -> None:
        self.sent.append((self.clock(), pid, f"{signal.Signals(sig).name} leader"))
        group = self.groups.get(pid)
        if group is not None and sig == signal.SIGTERM and group.term_takes is not None:
            group.dies_at = min(group.dies_at, self.clock() + group.term_takes)

    def signal_group(self, pgid: int, sig: int) -> None:
        self.sent.append((self.clock(), pgid, f"{signal.Signals(sig).name} group"))
        group = self.groups.get(pgid)
        if group is not None and sig == signal.SIGKILL and group.kill_takes is not None:
            group.dies_at = min(group.dies_at, self.clock() + group.kill_takes)

    def adopted_groups(self) -> set[int]:
        return {pgid for pgid in self.adopted if self.group_alive(pgid)}

    def killed(self, pgid: int) -> list[float]:
        return [at for at, target, what in self.sent if target == pgid and what == "SIGKILL group"]


class FakeReaper:
    """Reaps supervisord (pid 100) once its fake process group is gone."""

    def __init__(self, processes: FakeProcesses, supervisor_pid: int = 100):
        self.processes = processes
        self.supervisor_pid = supervisor_pid
        self.statuses: dict[int, int] = {}

    def reap(self) -> None:
        if self.supervisor_pid in self.processes.groups and not self.processes.group_alive(self.supervisor_pid):
            self.statuses[self.supervisor_pid] = 0


class FakeSupervisor:
    """supervisord as pid 100; `silent` makes every call cost its timeout and fail."""

    def __init__(self, clock: FakeClock, processes: FakeProcesses, timeout: float = 1.0):
        self.clock = clock
        self.processes = processes
        self.pid = 100
        self.timeout = timeout
        self.calls: list[tuple[str, float]] = []   # (method, the timeout it ran under)
        self.silent = False
        self.fault: Exception | None = None
        self.programs: dict[str, ProgramState] = {}
        self.started: list[tuple[float, str]] = []
        self.next_pid: dict[str, int] = {}          # what a start_program gives each program
        self.exit_reasons: dict[str, str] = {}
        self.reap_delay = 0.0
        processes.add(self.pid, term_takes=0.3)

    def run(self, name: str, pid: int) -> None:
        self.programs[name] = ProgramState(name, "RUNNING", pid, 0, "")

    def exit(self, name: str, status: int = 0, reason: str = "") -> None:
        self.programs[name] = ProgramState(name, "EXITED", 0, status, "")
        self.exit_reasons[name] = reason or f"exit status {status}"

    def set_timeout(self, seconds: float) -> None:
        self.timeout = seconds

    def _call(self, method: str) -> None:
        self.calls.append((method, self.timeout))
        if self.fault is not None:
            raise self.fault
        if self.silent or not self.processes.group_alive(self.pid):
            self.clock.sleep(self.timeout)
            raise SupervisorError(f"supervisord {method}: timed out")

    def states(self) -> dict[str, ProgramState]:
        self._call("getAllProcessInfo")
        return {name: self._as_reaped(state) for name, state in self.programs.items()}

    def _as_reaped(self, state: ProgramState) -> ProgramState:
        """A running program whose group died shows as stopped once
        supervisord has reaped it, `reap_delay` later."""
        group = self.processes.groups.get(state.pid)
        if state.alive and group is not None and self.clock() >= group.dies_at + self.reap_delay:
            return ProgramState(state.name, "STOPPED", 0, 0, "")
        return state

    def start_program(self, name: str) -> None:
        self._call("startProcess")
        self.started.append((self.clock(), name))
        if name in self.next_pid:
            self.processes.add(self.next_pid[name])
            self.run(name, self.next_pid[name])

    def shutdown(self) -> None:
        self._call("shutdown")
        self.processes.signal_leader(self.pid, signal.SIGTERM)

    def signal_self(self, sig: int) -> None:
        self.processes.signal_leader(self.pid, sig)

    def exit_reason(self, name: str) -> str:
        return self.exit_reasons.get(name, "")


class FakeSignals:
    """Signals that arrive at given fake times."""

    def __init__(self, clock: FakeClock, at: tuple[float, ...] = ()):
        self.clock = clock
        self.pending = sorted(at)

    def pop(self) -> int | None:
        if self.pending and self.pending[0] <= self.clock():
            self.pending.pop(0)
            return signal.SIGTERM
        return None


class FakeProbes:
    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.beats: list[float] = []
        self.shown: list[tuple[str | None, str | None]] = []
        self.broken = False   # the probe dir became unwritable (full disk, removed volume)

    def show(self, not_ready: str | None, not_healthy: str | None) -> None:
        self.shown.append((not_ready, not_healthy))
        self.beat()

    def beat(self) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        self.beats.append(self.clock())


class Screen(NamedTuple):
    """A Console whose output is kept for the test to read."""

    console: Console
    out: io.StringIO
    err: io.StringIO

    def text(self) -> str:
        return self.out.getvalue() + self.err.getvalue()


def quiet_console() -> Screen:
    out, err = io.StringIO(), io.StringIO()
    return Screen(Console(out=out, err=err), out, err)


class FakeTail:
    def __init__(self, lines: list[str] | None = None):
        self.lines = lines or []
        self.run_from = 0

    def begin_run(self) -> None:
        self.run_from = len(self.lines)

    def last_lines(self, count: int = 5) -> list[str]:
        return self.lines[self.run_from:][-count:]


class FakeForwarder:
    def __init__(self):
        self.tails = {"engine": FakeTail(), "proxy": FakeTail()}

    def pump(self, final: bool = False, within: float | None = None) -> None:
        pass


@dataclass(frozen=True)
class FakeStatus:
    """What os.stat gives for a file, as far as a keys file's watcher looks."""

    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int


# -- a real Config -------------------------------------------------------------------

def model_folder(parent: Path, name: str = "Llama-3-8B-Instruct", heads: int = 32, kv_heads: int = 8) -> Path:
    """A local model folder: a config.json with the head counts, no weights."""
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": heads, "num_key_value_heads": kv_heads}))
    return folder


def make_config(model: Path | str, env: Mapping[str, str] | None = None, *, node_gpus: int | NodeGpus = 8,
                memory: int | Callable[[], int] = 64 * GIB, cpus: int = 2, **options) -> Config:
    """What build_config makes of `options` (Options' fields; the master key
    MASTER_KEY unless given) on a node with `node_gpus` GPUs (a count, or what
    the node's query reports), `memory` bytes (or the function asked for
    them) and `cpus` usable CPUs."""
    options.setdefault("master_key", MASTER_KEY)
    gpus = node_gpus if isinstance(node_gpus, NodeGpus) else NodeGpus(node_gpus, "fake")
    total_memory = memory if callable(memory) else lambda: memory
    return build_config(Options(model=str(model), **options), env or {}, query_node_gpus=lambda: gpus,
                        total_memory=total_memory, usable_cpus=lambda: cpus)


class ReloadRequests:
    """Stands in for SignalQueue.take_reload: True once per requested reload."""

    def __init__(self) -> None:
        self.pending = False

    def __call__(self) -> bool:
        pending, self.pending = self.pending, False
        return pending


def unwritten_metrics(names: tuple[str, ...]):
    """llm-entry's own metrics (an OwnMetrics) written nowhere: the board of a
    monitor or shutdown test, which reads none of them."""
    from entrypoint.own_metrics import OwnMetrics
    return OwnMetrics(Path("unwritten"), names, write=lambda path, text: None)
