"""What the monitor knows about each program, and how one is restarted.

A restart SIGKILLs the old process group (vLLM's workers outlive their API
server and hold GPU memory and ports) and asks supervisord for a new start
only once that group is gone; then the old group id is forgotten, so a PID
the kernel hands out again is never signalled.
"""

from __future__ import annotations

import signal
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .config import Config
from .console import Console
from .health import Vitals
from .processes import ProcessTable
from .render import ENGINE
from .supervision import Supervisor, SupervisorError

# A group that outlives its SIGKILL this long (stuck in the GPU driver) will
# not go away: give up rather than start a second engine beside it.
RESTART_KILL_WAIT = 10.0


@dataclass
class Program:
    """One program across its restarts."""

    name: str
    vitals: Vitals
    generation: int = 0
    pgids: set[int] = field(default_factory=set)     # groups it leads or led, not yet seen gone
    restarts: deque = field(default_factory=deque)   # monotonic times of restarts
    restart_pending_since: float | None = None       # old group killed, new start not asked yet


class Restarts:
    def __init__(self, config: Config, supervisor: Supervisor, processes: ProcessTable,
                 console: Console, clock: Callable[[], float], lock: threading.Lock):
        self.config = config
        self.supervisor = supervisor
        self.processes = processes
        self.console = console
        self.clock = clock
        self._lock = lock  # the monitor's: checker threads read generation under it

    def allowed(self, program: Program) -> bool:
        if program.name == ENGINE and self.config.engine_restart == "never":
            return False
        now = self.clock()
        while program.restarts and now - program.restarts[0] > self.config.restart_window:
            program.restarts.popleft()
        return len(program.restarts) < self.config.max_restarts

    def begin(self, program: Program) -> str:
        """Kill what is left of the old start; a new one follows from advance()."""
        for pgid in program.pgids:
            self.processes.signal_group(pgid, signal.SIGKILL)
        now = self.clock()
        program.restarts.append(now)
        program.restart_pending_since = now
        with self._lock:
            program.generation += 1
            program.vitals = Vitals(program.name, now)
        return self.advance(program)

    def advance(self, program: Program) -> str:
        """Start the program once its old group is gone. Returns why it
        cannot be restarted, or '' while all is well."""
        program.pgids = {pgid for pgid in program.pgids if self.processes.group_alive(pgid)}
        if program.pgids:
            waited = self.clock() - (program.restart_pending_since or 0.0)
            if waited <= RESTART_KILL_WAIT:
                return ""
            groups = ", ".join(map(str, sorted(program.pgids)))
            return (f"{program.name}'s old processes (process group {groups}) are still there "
                    f"{waited:.0f} s after SIGKILL: cannot restart it beside them")
        program.restart_pending_since = None
        try:
            self.supervisor.start_program(program.name)
        except SupervisorError as error:
            self.console.say(f"could not restart {program.name}: {error}")
        return ""
