"""What happens when a program exits: a restart in place when its rules
allow one, else a failure that ends the run, told by the program's own last
lines.

A restart SIGKILLs the old process group (vLLM's workers outlive their API
server and hold GPU memory and ports) and asks supervisord for a new start
only once that group is gone; then the old group id is forgotten, so a PID
the kernel hands out again is never signalled.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from .board import Program, ProgramBoard
from .config import Config
from .console import Console
from .host import Host
from .inside.names import ENGINE, LIMITER
from .last_words import HISTORY_LINES, tell_exit
from .logs import LogForwarder
from .outcome import Failure, exit_code_for
from .supervision import EXITED, ProgramState, SupervisorError

# A group that outlives its SIGKILL this long (stuck in the GPU driver) will
# not go away: give up rather than start a second engine beside it.
RESTART_KILL_WAIT = 10.0
# Seconds the monitor prints an exited program's log before judging the exit:
# well under the heartbeat's 1.5 s, so a log backlog never makes it stale.
EXIT_LOG_FLUSH = 0.5

# What a restart costs beyond the program's own start.
RESTART_NOTES = {LIMITER: " (the keys' limit counters start again from zero)"}


def how_it_ended(reason: str, state: ProgramState) -> str:
    """supervisord's words for an exit, with what they may mean."""
    how = reason or f"exit status {state.exit_status}"
    if state.spawn_error and state.state != EXITED:
        how += f"; {state.spawn_error}"
    if how.startswith("terminated by SIGKILL"):
        how += " (perhaps out of memory: check the container's memory limit and dmesg)"
    return how


class Restarts:
    def __init__(self, config: Config, host: Host, console: Console, board: ProgramBoard):
        self.config = config
        self.host = host
        self.console = console
        self.board = board   # checker threads read a program's generation under its lock

    def allowed(self, program: Program) -> bool:
        if program.name == ENGINE and self.config.engine_restart == "never":
            return False
        now = self.host.clock()
        while program.restarts and now - program.restarts[0] > self.config.restart_window:
            program.restarts.popleft()
        return len(program.restarts) < self.config.max_restarts

    def begin(self, program: Program) -> Failure | None:
        """Kill what is left of the old start; a new one follows from advance()."""
        for pgid in program.pgids:
            self.host.processes.signal_group(pgid, signal.SIGKILL)
        now = self.host.clock()
        program.restarts.append(now)
        program.restart_pending_since = now
        self.board.next_generation(program, now)
        return self.advance(program)

    def advance(self, program: Program) -> Failure | None:
        """Start the program once its old group is gone. Returns why it
        cannot be restarted, or None while all is well."""
        processes = self.host.processes
        program.pgids = {pgid for pgid in program.pgids if processes.group_alive(pgid)}
        if program.pgids:
            waited = self.host.clock() - (program.restart_pending_since or 0.0)
            if waited <= RESTART_KILL_WAIT:
                return None
            groups = ", ".join(map(str, sorted(program.pgids)))
            return Failure(exit_code_for(program.name),
                           f"{program.name}'s old processes (process group {groups}) are still there "
                           f"{waited:.0f} s after SIGKILL: cannot restart it beside them")
        program.restart_pending_since = None
        try:
            self.host.supervisor.start_program(program.name)
        except SupervisorError as error:
            self.console.say(f"could not restart {program.name}: {error}")
        return None


@dataclass
class RestartPolicy:
    """A program has exited: decide whether to restart it, or tell the failure
    that ends the run."""

    config: Config
    host: Host
    board: ProgramBoard
    forwarder: LogForwarder
    console: Console
    restarts: Restarts = field(init=False)

    def __post_init__(self) -> None:
        self.restarts = Restarts(self.config, self.host, self.console, self.board)

    def decide(self, program: Program, state: ProgramState) -> Failure | None:
        how = how_it_ended(self.host.supervisor.exit_reason(program.name), state)
        # What the program wrote last tells why it stopped; under a log backlog the
        # monitor (and the heartbeat) waits for it at most EXIT_LOG_FLUSH.
        self.forwarder.pump(within=EXIT_LOG_FLUSH)
        tail = self.forwarder.tails[program.name]
        story = tell_exit(program.name, how, self.host.clock() - program.vitals.started_at,
                          program.vitals.last_ok is not None, tail.last_lines(HISTORY_LINES))
        if self.restarts.allowed(program):
            tail.begin_run()
            self.console.say(story.summary + "; restarting it" + RESTART_NOTES.get(program.name, ""))
            self.board.metrics.restarted(program.name)
            return self.restarts.begin(program)
        summary = story.summary
        if program.restarts:
            summary += f"; gave up after {len(program.restarts)} restarts in {self.config.restart_window:g} s"
        details = tuple(f"{program.name} | {line}" for line in story.last_lines)
        return Failure(exit_code_for(program.name), summary, details=details)
