"""The main loop: watch every program, decide, and keep the probe files true.

Every tick it reaps children, takes recorded signals, asks supervisord for
the programs' states (an exit always wins over a stale "ready"), restarts
what may be restarted, folds the checks into one verdict and shows it in the
probe files, which also refreshes the heartbeat. It returns an Outcome;
shutting down is the caller's next step, also after a bug in the loop.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .checks import Checker
from .config import Config
from .console import Console
from .errors import (EXIT_ENGINE_FAILED, EXIT_HUNG, EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_PROXY_FAILED,
                     EXIT_SUPERVISOR_FAILED)
from .exits import HISTORY_LINES, tell_exit
from .health import Verdict, Vitals, assess, combine
from .logs import LogForwarder
from .own_metrics import OwnMetrics
from .probe_files import ProbeFiles
from .processes import ProcessTable, Reaper, describe_wait_status
from .render import ENGINE, LIMITER, PROXY
from .restarts import Program, Restarts
from .signals import SignalQueue
from .supervision import ProgramState, Supervisor, SupervisorError

TICK = 0.2
PROGRESS_EVERY = 10.0
EXITED_STATES = frozenset({"EXITED", "FATAL", "BACKOFF"})


# What a restart costs beyond the program's own start.
RESTART_NOTES = {LIMITER: " (the keys' limit counters start again from zero)"}


def exit_code_for(name: str) -> int:
    """The engine's failure, or the proxy side's (the proxy and its limiter)."""
    return EXIT_ENGINE_FAILED if name == ENGINE else EXIT_PROXY_FAILED


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    summary: str                        # one line
    requested: bool = False             # a signal asked us to stop: drain gracefully
    was_ready: bool = False
    since: float | None = None          # monotonic time the shutdown's budget counts from
    details: tuple[str, ...] = ()       # lines to print below the summary
    kill_at_once: tuple[str, ...] = ()  # programs that looked hung: no SIGTERM deadline


def ready_line(config: Config, after: float) -> str:
    """The line that says the container serves, and to whom."""
    holders = "holders of the master key"
    if config.api_keys_file is not None:
        holders += f" or of a key in --api-keys-file {config.api_keys_file}"
    return (f"ready in {after:.1f} s: {config.local_url}/v1 serves model {config.served_model_name!r} "
            f"to {holders} (public: {config.host}:{config.port})")


class Monitor:
    def __init__(self, config: Config, supervisor: Supervisor, probes: ProbeFiles,
                 console: Console, forwarder: LogForwarder, signals: SignalQueue,
                 reaper: Reaper, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, processes: ProcessTable = ProcessTable(),
                 programs: tuple[str, ...] = (ENGINE, PROXY), metrics: OwnMetrics | None = None):
        self.config = config
        self.supervisor = supervisor
        self.probes = probes
        self.console = console
        self.forwarder = forwarder
        self.signals = signals
        self.reaper = reaper
        self.clock = clock
        self.sleep = sleep
        self.processes = processes
        self.started = clock()
        # render.supervised_programs(config): the engine, the proxy, and the limiter when there is one.
        self.programs = {name: Program(name, Vitals(name, self.started)) for name in programs}
        # What /metrics shows of llm-entry itself (entrypoint.own_metrics), kept beside the probe files.
        self.metrics = metrics or OwnMetrics(Path("unwritten"), programs, write=lambda path, text: None)
        self.checkers: dict[str, Checker] = {}
        self.ready_since: float | None = None
        self.was_ready = False
        self._lock = threading.Lock()
        self.restarts = Restarts(config, supervisor, processes, console, clock, self._lock)
        self._last_progress = self.started
        self._signals_seen_at = self.started
        self._rpc_answered = False
        self._rpc_failing_since: float | None = None

    # -- called from the checker threads ------------------------------------
    def report(self, name: str, generation: int, ok: bool, detail: str, at: float) -> None:
        with self._lock:
            program = self.programs[name]
            current = generation == program.generation
            if current:
                began = program.vitals.checking_since
                program.vitals.record(ok, detail, at)
        if current:
            self.metrics.checked(name, ok, at - began if began is not None else 0.0)

    def began(self, name: str, generation: int, at: float) -> None:
        with self._lock:
            program = self.programs[name]
            if generation == program.generation:
                program.vitals.begin(at)

    def attach(self, checkers: dict[str, Checker]) -> None:
        self.checkers = checkers

    # -- the loop ------------------------------------------------------------
    def run(self) -> Outcome:
        while True:
            try:
                outcome = self.tick()
            except Exception as error:  # noqa: BLE001 - a bug must still end in the shutdown routine
                outcome = self._crashed(error)
            if outcome is not None:
                return outcome
            self.sleep(TICK)

    def tick(self) -> Outcome | None:
        self.reaper.reap()
        now = self.clock()
        sig = self.signals.pop()
        if sig is not None:
            # It arrived after the previous look: the grace period runs from then.
            return Outcome(EXIT_OK, f"received {signal.Signals(sig).name}", requested=True,
                           was_ready=self.was_ready, since=self._signals_seen_at)
        self._signals_seen_at = now
        supervisor_status = self.reaper.statuses.get(self.supervisor.pid or -1)
        if supervisor_status is not None:
            return self._fail(EXIT_SUPERVISOR_FAILED,
                              f"supervisord exited ({describe_wait_status(supervisor_status)})")
        try:
            states = self.supervisor.states()
        except SupervisorError as error:
            return self._supervisor_silence(str(error))
        self._supervisor_answers()
        self.probes.beat()  # a restart below may wait for supervisord once more
        for program in self.programs.values():
            outcome = self._follow(program, states.get(program.name))
            if outcome is not None:
                return outcome
        return self._show(self._verdict())

    def _follow(self, program: Program, state: ProgramState | None) -> Outcome | None:
        if program.restart_pending_since is not None:
            return self._restart_failed(program, self.restarts.advance(program))
        if state is None:
            return None
        if state.alive:
            program.pgids.add(state.pid)
        elif state.state in EXITED_STATES:
            return self._exited(program, state)
        checker = self.checkers.get(program.name)
        if checker is not None:
            checker.follow(program.generation, state.alive)
        return None

    # -- supervisord's silence -------------------------------------------------
    def _supervisor_answers(self) -> None:
        if self._rpc_failing_since is not None and self._rpc_answered:
            self.console.say("supervisord answers again")
        self._rpc_answered, self._rpc_failing_since = True, None

    def _supervisor_silence(self, error: str) -> Outcome | None:
        """Nobody can say whether the programs still run: not ready, and the
        heartbeat stays fresh, since the monitor itself is fine."""
        now = self.clock()
        if self._rpc_failing_since is None:
            self._rpc_failing_since = now
            if self._rpc_answered:
                self.console.say(f"supervisord does not answer: {error}")
        silent = now - self._rpc_failing_since
        if silent > self.config.timing.hang_timeout:
            return self._fail(EXIT_SUPERVISOR_FAILED,
                              f"supervisord has not answered for {silent:.0f} s: {error}")
        if self._rpc_answered:
            reason = f"supervisord not answering ({silent:.0f} s): {error}"
        else:
            reason = f"supervisord starting ({silent:.0f} s)"
        return self._show(self._verdict(also_waiting_for=reason))

    # -- verdicts and the probe files ----------------------------------------------
    def _verdict(self, also_waiting_for: str = "") -> Verdict:
        now = self.clock()
        with self._lock:
            verdicts = [assess(p.vitals, now, self.config.timing) for p in self.programs.values()]
        if also_waiting_for:
            verdicts.append(Verdict(False, also_waiting_for))
        return combine(verdicts)

    def _show(self, verdict: Verdict) -> Outcome | None:
        if verdict.fatal:
            hung = (verdict.program,) if verdict.exit_code == EXIT_HUNG and verdict.program else ()
            return self._fail(verdict.exit_code, verdict.fatal, kill_at_once=hung)
        now = self.clock()
        self.probes.show(None if verdict.ready else verdict.waiting_for, None)
        self._show_in_metrics(verdict.ready, now)
        if verdict.ready and self.ready_since is None:
            self.ready_since = now
            if not self.was_ready:
                self.was_ready = True
                self.console.say(ready_line(self.config, now - self.started))
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

    def _show_in_metrics(self, ready: bool, now: float) -> None:
        """The same verdict in llm-entry's metrics: at once when readiness
        changed (as the probe files), else at most once a second."""
        self.metrics.state(ready, healthy=True)
        if ready and not self.was_ready:
            self.metrics.ready_after(now - self.started)
        if ready != (self.ready_since is not None):
            self.metrics.write()
        else:
            self.metrics.write_if_due()

    # -- exits and restarts ----------------------------------------------------
    def _exited(self, program: Program, state: ProgramState) -> Outcome | None:
        how = self.supervisor.exit_reason(program.name) or f"exit status {state.exit_status}"
        if state.spawn_error and state.state != "EXITED":
            how += f"; {state.spawn_error}"
        if how.startswith("terminated by SIGKILL"):
            how += " (perhaps out of memory: check the container's memory limit and dmesg)"
        self.forwarder.pump()
        history = self.forwarder.tails[program.name].last_lines(HISTORY_LINES)
        story = tell_exit(program.name, how, self.clock() - program.vitals.started_at,
                          program.vitals.last_ok is not None, history)
        if self.restarts.allowed(program):
            self.forwarder.tails[program.name].begin_run()
            self.console.say(story.summary + "; restarting it" + RESTART_NOTES.get(program.name, ""))
            self.metrics.restarted(program.name)
            return self._restart_failed(program, self.restarts.begin(program))
        code = exit_code_for(program.name)
        summary = story.summary
        if program.restarts:
            summary += f"; gave up after {len(program.restarts)} restarts in {self.config.restart_window:g} s"
        details = tuple(f"{program.name} | {line}" for line in story.last_lines)
        return self._fail(code, summary, details=details)

    def _restart_failed(self, program: Program, why: str) -> Outcome | None:
        if not why:
            return None
        return self._fail(exit_code_for(program.name), why)

    # -- endings -----------------------------------------------------------------
    def _fail(self, code: int, summary: str, details: tuple[str, ...] = (),
              kill_at_once: tuple[str, ...] = ()) -> Outcome:
        self.probes.show(summary, summary)
        self.metrics.state(False, healthy=False)
        self.metrics.write()
        return Outcome(code, summary, was_ready=self.was_ready, since=self.clock(),
                       details=details, kill_at_once=kill_at_once)

    def _crashed(self, error: Exception) -> Outcome:
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
        summary = (f"llm-entry's monitor failed ({type(error).__name__}: {error}{where}); "
                   "stopping everything: please report this bug")
        try:
            self.probes.show(summary, summary)
        except OSError:
            pass  # the heartbeat runs out and the probes fail on their own
        return Outcome(EXIT_INTERNAL_ERROR, summary, was_ready=self.was_ready, since=self.clock(),
                       details=tuple("".join(traceback.format_exception(error)).splitlines()[-8:]))
