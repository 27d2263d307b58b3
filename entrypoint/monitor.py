"""The main loop: watch both programs, decide, and keep the probe files true.

Every tick it reaps children, takes recorded signals, asks supervisord for
the programs' states (an exit always wins over a stale "ready"), restarts
what may be restarted, folds the checks into one verdict and shows it in the
probe files. It returns an Outcome; shutting down is the caller's next step.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .checks import Checker
from .config import Config
from .console import Console
from .errors import EXIT_ENGINE_FAILED, EXIT_OK, EXIT_PROXY_FAILED, EXIT_SUPERVISOR_FAILED
from .health import Verdict, Vitals, assess, combine
from .logs import LogForwarder
from .probe_files import ProbeFiles
from .processes import Reaper, describe_wait_status, group_alive, signal_group
from .render import ENGINE, PROXY
from .signals import SignalQueue
from .supervision import ProgramState, Supervisor, SupervisorError

TICK = 0.2
PROGRESS_EVERY = 10.0
EXITED_STATES = frozenset({"EXITED", "FATAL", "BACKOFF"})


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    summary: str
    requested: bool = False     # a signal asked us to stop: drain gracefully
    was_ready: bool = False


@dataclass
class Program:
    """What the monitor knows about one program across its restarts."""

    name: str
    vitals: Vitals
    generation: int = 0
    pgids: set[int] = field(default_factory=set)     # every group it ever led
    restarts: deque = field(default_factory=deque)   # monotonic times of restarts


class Monitor:
    def __init__(self, config: Config, supervisor: Supervisor, probes: ProbeFiles,
                 console: Console, forwarder: LogForwarder, signals: SignalQueue,
                 reaper: Reaper, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.supervisor = supervisor
        self.probes = probes
        self.console = console
        self.forwarder = forwarder
        self.signals = signals
        self.reaper = reaper
        self.clock = clock
        self.started = clock()
        self.programs = {name: Program(name, Vitals(name, self.started)) for name in (ENGINE, PROXY)}
        self.checkers: dict[str, Checker] = {}
        self.ready_since: float | None = None
        self.was_ready = False
        self._lock = threading.Lock()
        self._last_progress = self.started
        self._rpc_failing_since: float | None = None

    # -- called from the checker threads ------------------------------------
    def report(self, name: str, generation: int, ok: bool, detail: str, at: float) -> None:
        with self._lock:
            program = self.programs[name]
            if generation == program.generation:
                program.vitals.record(ok, detail, at)

    def attach(self, checkers: dict[str, Checker]) -> None:
        self.checkers = checkers

    # -- the loop ------------------------------------------------------------
    def run(self) -> Outcome:
        while True:
            outcome = self.tick()
            if outcome is not None:
                return outcome
            time.sleep(TICK)

    def tick(self) -> Outcome | None:
        self.reaper.reap()
        sig = self.signals.pop()
        if sig is not None:
            return Outcome(EXIT_OK, f"received {signal.Signals(sig).name}", requested=True,
                           was_ready=self.was_ready)
        supervisor_status = self.reaper.statuses.get(self.supervisor.pid or -1)
        if supervisor_status is not None:
            return self._fail(EXIT_SUPERVISOR_FAILED,
                              f"supervisord exited ({describe_wait_status(supervisor_status)})")
        states = self._states()
        if states is None:
            return self._supervisor_silence()
        for program in self.programs.values():
            state = states.get(program.name)
            if state is None:
                continue
            if state.alive:
                program.pgids.add(state.pid)
            elif state.state in EXITED_STATES:
                outcome = self._exited(program, state)
                if outcome is not None:
                    return outcome
                continue
            checker = self.checkers.get(program.name)
            if checker is not None:
                checker.follow(program.generation, state.alive)
        return self._show(self._verdict())

    def _states(self) -> dict[str, ProgramState] | None:
        try:
            states = self.supervisor.states()
        except SupervisorError:
            return None
        self._rpc_failing_since = None
        return states

    def _supervisor_silence(self) -> Outcome | None:
        now = self.clock()
        if self._rpc_failing_since is None:
            self._rpc_failing_since = now
        elif now - self._rpc_failing_since > self.config.timing.hang_timeout:
            return self._fail(EXIT_SUPERVISOR_FAILED,
                              f"supervisord has not answered for {now - self._rpc_failing_since:.0f} s")
        return None

    def _verdict(self) -> Verdict:
        now = self.clock()
        with self._lock:
            verdicts = [assess(p.vitals, now, self.config.timing) for p in self.programs.values()]
        return combine(verdicts)

    def _show(self, verdict: Verdict) -> Outcome | None:
        if verdict.fatal:
            return self._fail(verdict.exit_code, verdict.fatal)
        now = self.clock()
        self.probes.show(None if verdict.ready else verdict.waiting_for, None)
        if verdict.ready and self.ready_since is None:
            self.ready_since = now
            if not self.was_ready:
                self.was_ready = True
                self.console.say(
                    f"ready in {now - self.started:.1f} s: {self.config.local_url}/v1 serves model "
                    f"{self.config.served_model_name!r} to holders of the master key"
                )
            else:
                self.console.say("ready again")
        elif not verdict.ready:
            if self.ready_since is not None:
                self.console.say(f"not ready: {verdict.waiting_for}")
                self.ready_since = None
                self._last_progress = now
            elif now - self._last_progress >= PROGRESS_EVERY:
                self.console.say(f"waiting {now - self.started:.0f} s: {verdict.waiting_for}")
                self._last_progress = now
        return None

    # -- exits and restarts ----------------------------------------------------
    def _exited(self, program: Program, state: ProgramState) -> Outcome | None:
        how = self.supervisor.exit_reason(program.name) or f"exit status {state.exit_status}"
        if state.spawn_error and state.state != "EXITED":
            how += f"; {state.spawn_error}"
        if how.startswith("terminated by SIGKILL"):
            how += " (perhaps out of memory: check the container's memory limit and dmesg)"
        self.forwarder.pump()
        tail = self.forwarder.tails[program.name].last_lines(3)
        lived = self.clock() - program.vitals.started_at
        phase = "after it was ready" if program.vitals.last_ok is not None else "while starting"
        summary = f"{program.name} exited ({how}) {lived:.0f} s after start, {phase}"
        if program.name == ENGINE:
            summary += "; vLLM exits even with status 0 when its engine core dies"
        if tail:
            summary += "; last output: " + " | ".join(tail)
        if self._may_restart(program):
            self.console.say(summary + "; restarting it")
            self._restart(program)
            return None
        code = EXIT_ENGINE_FAILED if program.name == ENGINE else EXIT_PROXY_FAILED
        if program.restarts:
            summary += f"; gave up after {len(program.restarts)} restarts in {self.config.restart_window:g} s"
        return self._fail(code, summary)

    def _may_restart(self, program: Program) -> bool:
        if program.name == ENGINE and self.config.engine_restart == "never":
            return False
        now = self.clock()
        while program.restarts and now - program.restarts[0] > self.config.restart_window:
            program.restarts.popleft()
        return len(program.restarts) < self.config.max_restarts

    def _restart(self, program: Program) -> None:
        # Leftovers of the old start (vLLM workers) would hold memory and ports.
        for pgid in program.pgids:
            if group_alive(pgid):
                signal_group(pgid, signal.SIGKILL)
        now = self.clock()
        program.restarts.append(now)
        with self._lock:
            program.generation += 1
            program.vitals = Vitals(program.name, now)
        try:
            self.supervisor.start_program(program.name)
        except SupervisorError as error:
            self.console.say(f"could not restart {program.name}: {error}")

    def _fail(self, code: int, summary: str) -> Outcome:
        self.probes.show(summary, summary)
        return Outcome(code, summary, was_ready=self.was_ready)
