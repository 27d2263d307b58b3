"""The one shutdown routine, within one time budget.

Order: not-ready first (it is already shown by the time we get here); learn
from supervisord which process groups run now (a signal may come before the
monitor ever saw them); SIGKILL at once a program that looked hung; an
optional pause so endpoint controllers stop routing; then the proxy (its
in-flight requests and streams finish), then the private redis-server when
there is one (the proxy counts in it until it has drained; it stops in
milliseconds), then the engine (it has nothing left in flight by then), then
supervisord, then any process group we adopted.
Each step is SIGTERM, polling to a deadline, SIGKILL of the group, and a
wait until the group is gone. A second signal skips the graceful waits, never
the SIGKILL and the wait after it. The heartbeat stays fresh throughout.

The timeline (entrypoint.shutdown_plan) counts from the signal and holds in
the worst case (nothing stops before its SIGKILL, supervisord never answers):
every wait and every XML-RPC call is bounded, and the log forwarder's last
flush after this routine is reserved too, so that the whole fits
--grace-period. The flushes of a stopped program's log during the routine end
by its end; the last flush ends by last_logs_by(), and what it could not
print by then is counted in one line instead (entrypoint.logs).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable

from .board import ProgramBoard
from .config import Config
from .console import Console
from .host import Host
from .inside.names import ENGINE, LIMITER, PROXY
from .outcome import Outcome
from .probe_files import ProbeFiles, on_the_way_out
from .shutdown_plan import LOG_FLUSH, SLACK, shutdown_plan
from .supervision import SupervisorError

POLL = 0.05
LEFTOVER_GRACE = 1.0


class Shutdown:
    def __init__(self, config: Config, host: Host, board: ProgramBoard, probes: ProbeFiles, console: Console,
                 flush_logs: Callable[[str], None] = lambda name: None):
        self.config = config
        self.board = board              # the process groups the monitor saw
        self.supervisor = host.supervisor
        self.signals = host.signals
        self.reaper = host.reaper
        self.processes = host.processes
        self.clock = host.clock
        self.probes = probes
        self.console = console
        self.flush_logs = flush_logs   # print all a stopped program wrote (LogForwarder.finish)
        self.supervisor_answers = True
        self.hurry = False
        self.plan = shutdown_plan(config.timing)
        self.end = self.clock() + self.plan.end

    def last_logs_by(self) -> float:
        """When the log forwarder's last flush must be over. The plan leaves
        LOG_FLUSH + SLACK (scaled) of the grace period after its end; the flush
        gives up one more SLACK of its part, for what follows it (counting the
        lines it could not show, removing the run folder, exiting), so that a
        round or a poll running over its deadline still ends in time."""
        left = self.config.timing.grace_period - self.plan.end
        slack = left * SLACK / (LOG_FLUSH + SLACK)
        return self.end + left - 2 * slack

    def wait_until(self, done: Callable[[], bool], deadline: float, graceful: bool = True) -> bool:
        """Poll until done() or the deadline, keeping the heartbeat fresh. A
        new signal means hurry: it ends graceful waits, never the wait for a
        SIGKILLed group to be gone."""
        deadline = min(deadline, self.end)
        while True:
            self.reaper.reap()
            on_the_way_out(self.probes.beat)
            if self.signals.pop() is not None and not self.hurry:
                self.hurry = True
                self.console.say("second signal: stopping everything now")
            if done():
                return True
            now = self.clock()
            if (graceful and self.hurry) or now >= deadline:
                return False
            self.clock.sleep(min(POLL, deadline - now))

    def kill_groups(self, pgids: Iterable[int]) -> bool:
        """SIGKILL the groups and wait until they are gone."""
        pgids = list(pgids)
        for pgid in pgids:
            self.processes.signal_group(pgid, signal.SIGKILL)
        return self.wait_until(lambda: not any(map(self.processes.group_alive, pgids)),
                               self.clock() + self.plan.kill_wait, graceful=False)

    def stop_groups(self, name: str, pgids: Iterable[int], deadline: float) -> None:
        """SIGTERM each group's leader, poll to the deadline, SIGKILL the groups.

        Only the leader gets SIGTERM: vLLM's API server drains and then stops
        its own EngineCore and workers, while a SIGTERM to the whole group
        lets a worker die under a stream still in flight. Members that outlive
        their leader by LEFTOVER_GRACE are killed: nobody will stop them now.
        """
        alive = [pgid for pgid in pgids if self.processes.group_alive(pgid)]
        if not alive:
            return
        for pgid in alive:
            self.processes.signal_leader(pgid, signal.SIGTERM)
        started = self.clock()
        leaderless_since: dict[int, float] = {}

        def settled() -> bool:
            now = self.clock()
            for pgid in alive:
                if self.processes.group_alive(pgid) and not self.processes.leader_alive(pgid):
                    if now - leaderless_since.setdefault(pgid, now) > LEFTOVER_GRACE:
                        self.processes.signal_group(pgid, signal.SIGKILL)
            return not any(map(self.processes.group_alive, alive))

        if self.wait_until(settled, deadline):
            took = self.clock() - started
            self.print_last_output(name, deadline + self.plan.kill_wait)
            self.console.say(f"{name} stopped in {took:.1f} s")
            return
        gone = self.kill_groups(alive)
        self.print_last_output(name, deadline + self.plan.kill_wait)
        self.console.say(f"{name} did not stop in time: killed its process group"
                         + ("" if gone else f", still not gone after {self.plan.kill_wait:g} s"))

    def print_last_output(self, name: str, limit: float) -> None:
        """The program's last lines before the line that says it stopped.

        supervisord writes a program's last output to its log when it reaps
        the program, which can come a moment after the group is gone: wait for
        supervisord to say so, within LOG_SETTLE and the stage's own time (its
        deadline and its SIGKILL wait), and never when it has stopped answering.
        """
        def reaped() -> bool:
            if not self.supervisor_answers:
                return True
            try:
                state = self.supervisor.states().get(name)
            except SupervisorError:
                self.supervisor_answers = False
                return True
            return state is None or not state.alive
        self.wait_until(reaped, min(limit, self.clock() + self.plan.log_settle))
        self.flush_logs(name)

    def run(self, outcome: Outcome) -> None:
        since = self.clock() if outcome.since is None else min(outcome.since, self.clock())
        plan, was_ready = self.plan, outcome.was_ready
        self.end = since + plan.end
        self.supervisor.set_timeout(plan.rpc)
        groups = {name: set(self.board[name].pgids) if name in self.board.programs else set()
                  for name in (PROXY, ENGINE, LIMITER)}
        self.learn_groups(groups)
        for name in outcome.kill_at_once:
            # A worker's engine is killed at once only when its leader is gone.
            why = "has lost its leader" if self.config.group.is_worker else "looks hung"
            self.console.say(f"{name} {why}: killing its process group at once")
            self.kill_groups(groups[name])
        proxy_by = plan.proxy_deadline(was_ready)
        delay = self.config.timing.drain_delay
        if outcome.requested and was_ready and delay > 0:
            self.console.say(f"not ready; waiting {delay:g} s for traffic to move away")
            self.wait_until(lambda: False, since + min(delay, proxy_by))
        self.stop_groups(PROXY, groups[PROXY], since + proxy_by)
        # Within the engine's stage, which ends where it always did.
        self.stop_groups(LIMITER, groups[LIMITER], min(self.clock() + plan.limiter_grace, since + plan.engine_by))
        engine_by = since + plan.engine_by
        if not was_ready:
            engine_by = min(engine_by, self.clock() + plan.starting_engine_grace)
        self.stop_groups(ENGINE, groups[ENGINE], engine_by)
        self.stop_supervisor()

    def learn_groups(self, groups: dict[str, set[int]]) -> None:
        """Add the groups supervisord runs now to those the monitor saw."""
        if self.supervisor.pid is None or self.supervisor.pid in self.reaper.statuses:
            return
        try:
            states = self.supervisor.states()
        except SupervisorError as error:
            self.supervisor_answers = False
            self.console.say(f"supervisord did not say what runs ({error}): stopping what is known")
            return
        for name, state in states.items():
            if state.alive and name in groups:
                groups[name].add(state.pid)

    def stop_supervisor(self) -> None:
        """Ask supervisord to exit, SIGKILL it at its deadline, then SIGKILL
        whatever process group we adopted from it (as PID 1 or subreaper)."""
        pid = self.supervisor.pid
        if pid is None:
            return
        plan = self.plan
        exited = lambda: pid in self.reaper.statuses  # noqa: E731
        if not exited() and not self.hurry and self.end - self.clock() >= plan.rpc + plan.kill_wait:
            try:
                self.supervisor.shutdown()
            except SupervisorError:
                self.supervisor.signal_self(signal.SIGTERM)
            self.wait_until(exited, min(self.clock() + plan.supervisor_wait, self.end - plan.kill_wait))
        kill_by = self.clock() + plan.kill_wait
        if not exited():
            self.processes.signal_group(pid, signal.SIGKILL)
            self.wait_until(exited, kill_by, graceful=False)
        self.reaper.reap()  # what supervisord could not reap is ours now
        leftovers = self.processes.adopted_groups()
        if leftovers:
            self.console.say(f"killing {len(leftovers)} process group(s) left behind: {sorted(leftovers)}")
            for pgid in leftovers:
                self.processes.signal_group(pgid, signal.SIGKILL)
            gone = lambda: not any(map(self.processes.group_alive, leftovers))  # noqa: E731
            self.wait_until(gone, kill_by, graceful=False)
