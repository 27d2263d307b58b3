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

The budget counts from the signal and holds in the worst case (nothing stops
before its SIGKILL, supervisord never answers): every wait and every
XML-RPC call is bounded, and the log forwarder's last flush after this
routine is reserved too, so that the whole fits --grace-period.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .config import Config
from .console import Console
from .probe_files import ProbeFiles, on_the_way_out
from .processes import ProcessTable, Reaper
from .render import ENGINE, LIMITER, PROXY, engine_shutdown_timeout
from .signals import SignalQueue
from .supervision import Supervisor, SupervisorError

POLL = 0.05
LEFTOVER_GRACE = 1.0
# Full-size steps for a grace period of FULL_SIZE_GRACE s or more; a shorter
# one shrinks them in proportion.
FULL_SIZE_GRACE = 12.0
RPC_TIMEOUT = 0.5             # each XML-RPC call during shutdown
KILL_WAIT = 1.0               # after a SIGKILL, for the group to be gone
SUPERVISOR_WAIT = 1.0         # supervisord's own exit once its programs are gone
STARTING_ENGINE_GRACE = 5.0   # nothing to drain, and vLLM may ignore SIGTERM while loading
LIMITER_GRACE = 1.0           # redis-server without persistence stops in milliseconds
LOG_FLUSH = 2.0               # LogForwarder.stop() joins its thread for up to 2 s after us
SLACK = 0.5                   # polls overshooting their deadlines, console lines
LOG_SETTLE = 0.5              # after a group is gone, for supervisord to reap it and write out its last output


@dataclass(frozen=True)
class Budget:
    """Sizes of the fixed steps, and when each stage must be over, in
    seconds after the shutdown began (the signal)."""

    rpc: float
    kill_wait: float
    supervisor_wait: float
    starting_engine_grace: float
    limiter_grace: float
    log_settle: float   # for supervisord to write out a stopped program's last output
    proxy_by: float     # the proxy's SIGTERM deadline
    engine_by: float    # the engine's SIGTERM deadline
    end: float          # everything stopped; the log forwarder's last flush follows


def budget(config: Config, was_ready: bool) -> Budget:
    grace = config.timing.grace_period
    scale = min(1.0, grace / FULL_SIZE_GRACE)
    rpc, kill, supervisor = RPC_TIMEOUT * scale, KILL_WAIT * scale, SUPERVISOR_WAIT * scale
    end = grace - (LOG_FLUSH + SLACK) * scale
    # After the engine's deadline: its SIGKILL wait, then supervisord's
    # shutdown call, its exit, and its SIGKILL wait (shared with adopted groups).
    engine_by = end - (kill + rpc + supervisor + kill)
    engine_time = engine_shutdown_timeout(config) + 1.0 if was_ready else STARTING_ENGINE_GRACE * scale
    return Budget(rpc=rpc, kill_wait=kill, supervisor_wait=supervisor,
                  starting_engine_grace=STARTING_ENGINE_GRACE * scale, limiter_grace=LIMITER_GRACE * scale,
                  log_settle=LOG_SETTLE * scale,
                  proxy_by=engine_by - engine_time - kill, engine_by=engine_by, end=end)


def proxy_drain_budget(config: Config) -> float:
    """Seconds the proxy may drain after a SIGTERM that found us ready (its
    own GRACEFUL_SHUTDOWN_TIMEOUT): from after the first XML-RPC call and the
    drain delay to its deadline."""
    plan = budget(config, was_ready=True)
    return max(1.0, plan.proxy_by - plan.rpc - config.timing.drain_delay)


class Shutdown:
    def __init__(self, config: Config, supervisor: Supervisor, console: Console, signals: SignalQueue,
                 reaper: Reaper, probes: ProbeFiles, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, processes: ProcessTable = ProcessTable(),
                 flush_logs: Callable[[str], None] = lambda name: None):
        self.config = config
        self.supervisor = supervisor
        self.console = console
        self.signals = signals
        self.reaper = reaper
        self.probes = probes
        self.clock = clock
        self.sleep = sleep
        self.processes = processes
        self.flush_logs = flush_logs   # print all a stopped program wrote (LogForwarder.finish)
        self.supervisor_answers = True
        self.hurry = False
        self.plan = budget(config, was_ready=True)
        self.end = clock() + self.plan.end

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
            self.sleep(min(POLL, deadline - now))

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

    def run(self, proxy_pgids: Iterable[int], engine_pgids: Iterable[int], drain: bool, was_ready: bool,
            since: float | None = None, kill_at_once: Iterable[str] = (),
            limiter_pgids: Iterable[int] = ()) -> None:
        since = self.clock() if since is None else min(since, self.clock())
        self.plan = plan = budget(self.config, was_ready)
        self.end = since + plan.end
        self.supervisor.set_timeout(plan.rpc)
        groups = {PROXY: set(proxy_pgids), ENGINE: set(engine_pgids), LIMITER: set(limiter_pgids)}
        self.learn_groups(groups)
        for name in kill_at_once:
            self.console.say(f"{name} looks hung: killing its process group at once")
            self.kill_groups(groups[name])
        delay = self.config.timing.drain_delay
        if drain and was_ready and delay > 0:
            self.console.say(f"not ready; waiting {delay:g} s for traffic to move away")
            self.wait_until(lambda: False, since + min(delay, plan.proxy_by))
        self.stop_groups("proxy", groups[PROXY], since + plan.proxy_by)
        # Within the engine's stage, which ends where it always did.
        self.stop_groups(LIMITER, groups[LIMITER], min(self.clock() + plan.limiter_grace, since + plan.engine_by))
        engine_by = since + plan.engine_by
        if not was_ready:
            engine_by = min(engine_by, self.clock() + plan.starting_engine_grace)
        self.stop_groups("engine", groups[ENGINE], engine_by)
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
