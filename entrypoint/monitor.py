"""The main loop: watch every program and decide.

Every tick it reaps children, takes recorded signals, asks supervisord for
the programs' states (an exit always wins over a stale "ready"), hands an
exit to the restart rules, folds the checks into one verdict and shows it
(entrypoint.readiness). Once the container was ready, the private
redis-server (limiter) no longer makes it not-ready: the proxy serves while
it restarts. It returns an Outcome; shutting down is the caller's
next step, also after a bug in the loop.
"""

from __future__ import annotations

import signal
import traceback
from collections.abc import Mapping
from pathlib import Path

from .board import Program, ProgramBoard
from .checks import Checker
from .config import Config
from .errors import EXIT_HUNG, EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_SUPERVISOR_FAILED, EntryError
from .health import Verdict, combine
from .host import Host
from .inside.names import ENGINE, LIMITER
from .node_group import LEADER
from .outcome import Failure, Outcome
from .processes import describe_wait_status
from .readiness import Readiness
from .restarts import RestartPolicy
from .supervision import EXITED_STATES, ProgramState, SupervisorError

TICK = 0.2
SERVES_WITHOUT = frozenset({LIMITER})   # programs the container serves without, once it was ready


def crash_failure(error: Exception) -> Failure:
    """A bug in the loop, told so that it can be reported."""
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    summary = (f"llm-entry's monitor failed ({type(error).__name__}: {error}{where}); "
               "stopping everything: please report this bug")
    return Failure(EXIT_INTERNAL_ERROR, summary,
                   details=tuple("".join(traceback.format_exception(error)).splitlines()[-8:]))


class Monitor:
    def __init__(self, config: Config, board: ProgramBoard, host: Host, readiness: Readiness,
                 restart_policy: RestartPolicy, checkers: Mapping[str, Checker]):
        self.config = config
        self.board = board
        self.host = host
        self.readiness = readiness
        self.restart_policy = restart_policy
        self.checkers = checkers
        self._signals_seen_at = board.started
        self._rpc_answered = False
        self._rpc_failing_since: float | None = None

    def run(self) -> Outcome:
        while True:
            try:
                outcome = self.tick()
            except EntryError as error:   # the probe dir is gone for good: not a bug, say why
                return self._fail(Failure(error.exit_code, error.message))
            except Exception as error:  # noqa: BLE001 - a bug must still end in the shutdown routine
                failure = crash_failure(error)
                self.readiness.crashed(failure.summary)
                return self._outcome(failure)
            if outcome is not None:
                return outcome
            self.host.clock.sleep(TICK)

    def tick(self) -> Outcome | None:
        host = self.host
        host.reaper.reap()
        now = host.clock()
        sig = host.signals.pop()
        if sig is not None:
            # It arrived after the previous look: the grace period runs from then.
            return Outcome(EXIT_OK, f"received {signal.Signals(sig).name}", requested=True,
                           was_ready=self.readiness.was_ready, since=self._signals_seen_at)
        self._signals_seen_at = now
        supervisor_status = host.reaper.statuses.get(host.supervisor.pid or -1)
        if supervisor_status is not None:
            return self._fail(Failure(EXIT_SUPERVISOR_FAILED,
                                      f"supervisord exited ({describe_wait_status(supervisor_status)})"))
        try:
            states = host.supervisor.states()
        except SupervisorError as error:
            return self._supervisor_silence(str(error))
        self._supervisor_answers()
        self.readiness.probes.beat()  # a restart below may wait for supervisord once more
        for program in self.board:
            failure = self._follow(program, states.get(program.name))
            if failure is not None:
                return self._fail(failure)
        return self._show(self._verdict())

    def _follow(self, program: Program, state: ProgramState | None) -> Failure | None:
        if program.restart_pending_since is not None:
            return self.restart_policy.restarts.advance(program)
        if state is None:
            if program.name == LEADER:   # another node: always there to be checked
                self._follow_checks(program, alive=True)
            return None
        if state.alive:
            program.pgids.add(state.pid)
        elif state.state in EXITED_STATES:
            return self.restart_policy.decide(program, state)
        self._follow_checks(program, state.alive)
        return None

    def _follow_checks(self, program: Program, alive: bool) -> None:
        checker = self.checkers.get(program.name)
        if checker is not None:
            checker.follow(program.generation, alive)

    # -- supervisord's silence -------------------------------------------------
    def _supervisor_answers(self) -> None:
        if self._rpc_failing_since is not None and self._rpc_answered:
            self.readiness.console.say("supervisord answers again")
        self._rpc_answered, self._rpc_failing_since = True, None

    def _supervisor_silence(self, error: str) -> Outcome | None:
        """Nobody can say whether the programs still run: not ready, and the
        heartbeat stays fresh, since the monitor itself is fine."""
        now = self.host.clock()
        if self._rpc_failing_since is None:
            self._rpc_failing_since = now
            if self._rpc_answered:
                self.readiness.console.say(f"supervisord does not answer: {error}")
        silent = now - self._rpc_failing_since
        if silent > self.config.timing.hang_timeout:
            return self._fail(Failure(EXIT_SUPERVISOR_FAILED,
                                      f"supervisord has not answered for {silent:.0f} s: {error}"))
        if self._rpc_answered:
            reason = f"supervisord not answering ({silent:.0f} s): {error}"
        else:
            reason = f"supervisord starting ({silent:.0f} s)"
        return self._show(self._verdict(also_waiting_for=reason))

    # -- verdicts and endings ----------------------------------------------------
    def _verdict(self, also_waiting_for: str = "") -> Verdict:
        verdicts = self.board.verdicts(self.host.clock(), self.config.timing)
        if self.readiness.was_ready:
            # The private redis-server holds no request: while it restarts or
            # fails its checks the proxy counts limits in each worker's memory
            # and serves, so the container stays ready. It must pass its checks
            # for the first ready, and its fatal verdicts (hung) still count.
            verdicts = [verdict for name, verdict in zip(self.board.names, verdicts, strict=True)
                        if name not in SERVES_WITHOUT or verdict.fatal]
        if also_waiting_for:
            verdicts.append(Verdict(False, also_waiting_for))
        return combine(verdicts)

    def _show(self, verdict: Verdict) -> Outcome | None:
        if verdict.fatal:
            # A worker's engine without its leader has nothing to drain.
            program = ENGINE if verdict.program == LEADER else verdict.program
            hung: tuple[str, ...] = (program,) if verdict.exit_code == EXIT_HUNG and program else ()
            return self._fail(Failure(verdict.exit_code, verdict.fatal, kill_at_once=hung))
        self.readiness.show(verdict, self.host.clock())
        return None

    def _fail(self, failure: Failure) -> Outcome:
        self.readiness.failed(failure.summary)
        return self._outcome(failure)

    def _outcome(self, failure: Failure) -> Outcome:
        return Outcome(failure.exit_code, failure.summary, was_ready=self.readiness.was_ready,
                       since=self.host.clock(), details=failure.details, kill_at_once=failure.kill_at_once)
