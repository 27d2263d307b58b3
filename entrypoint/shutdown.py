"""The one shutdown routine, within one time budget.

Order: not-ready first (it is already shown by the time we get here), an
optional pause so endpoint controllers stop routing, then the proxy (its
in-flight requests and streams finish), then the engine (it has nothing left
in flight by then), then supervisord. Each step is SIGTERM to the process
group, polling to a deadline, SIGKILL of the group. A second signal skips
every remaining wait. The whole budget is --grace-period, below Kubernetes'
default 30 s.
"""

from __future__ import annotations

import signal
import time
from typing import Callable, Iterable

from .config import Config
from .console import Console
from .processes import Reaper, group_alive, pid_alive, signal_group, signal_leader
from .render import engine_shutdown_timeout
from .signals import SignalQueue
from .supervision import Supervisor, SupervisorError

POLL = 0.05
# An engine that never became ready has nothing to drain, and vLLM may ignore
# SIGTERM while loading: give it this long before SIGKILL.
STARTING_ENGINE_GRACE = 5.0
KILL_WAIT = 1.5
SUPERVISOR_WAIT = 1.5
# SIGKILL waits and supervisord's exit come after the programs' deadlines:
# keep room for them inside the grace period.
TAIL_RESERVE = 2 * KILL_WAIT + SUPERVISOR_WAIT
LEFTOVER_GRACE = 1.0


def proxy_drain_budget(config: Config) -> float:
    """Seconds the proxy may drain after a SIGTERM that found us ready."""
    timing = config.timing
    usable = max(timing.grace_period - TAIL_RESERVE, timing.grace_period / 2)
    return max(1.0, usable - timing.drain_delay - (engine_shutdown_timeout(config) + 1.0))


class Shutdown:
    def __init__(self, config: Config, supervisor: Supervisor, console: Console,
                 signals: SignalQueue, reaper: Reaper, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.supervisor = supervisor
        self.console = console
        self.signals = signals
        self.reaper = reaper
        self.clock = clock
        self.hurry = False

    def wait_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Poll until done() or the deadline; a new signal means hurry."""
        while True:
            self.reaper.reap()
            if self.signals.pop() is not None and not self.hurry:
                self.hurry = True
                self.console.say("second signal: stopping everything now")
            if done():
                return True
            if self.hurry or self.clock() >= deadline:
                return False
            time.sleep(POLL)

    def stop_groups(self, name: str, pgids: Iterable[int], deadline: float) -> None:
        """SIGTERM each group's leader, poll to the deadline, SIGKILL the groups.

        Only the leader gets SIGTERM: vLLM's API server drains and then stops
        its own EngineCore and workers, while a SIGTERM to the whole group
        lets a worker die under a stream still in flight. Members that outlive
        their leader by LEFTOVER_GRACE are killed: nobody will stop them now.
        """
        alive = [pgid for pgid in pgids if group_alive(pgid)]
        if not alive:
            return
        for pgid in alive:
            signal_leader(pgid, signal.SIGTERM)
        started = self.clock()
        leaderless_since: dict[int, float] = {}

        def settled() -> bool:
            now = self.clock()
            for pgid in alive:
                if group_alive(pgid) and not pid_alive(pgid):
                    if now - leaderless_since.setdefault(pgid, now) > LEFTOVER_GRACE:
                        signal_group(pgid, signal.SIGKILL)
            return not any(map(group_alive, alive))

        if self.wait_until(settled, deadline):
            self.console.say(f"{name} stopped in {self.clock() - started:.1f} s")
            return
        for pgid in alive:
            signal_group(pgid, signal.SIGKILL)
        self.console.say(f"{name} did not stop in time: killed its process group")
        self.wait_until(lambda: not any(map(group_alive, alive)), self.clock() + KILL_WAIT)

    def run(self, proxy_pgids: Iterable[int], engine_pgids: Iterable[int],
            drain: bool, was_ready: bool) -> None:
        timing = self.config.timing
        start = self.clock()
        deadline = start + max(timing.grace_period - TAIL_RESERVE, timing.grace_period / 2)
        if drain and was_ready and timing.drain_delay > 0:
            self.console.say(f"not ready; waiting {timing.drain_delay:g} s for traffic to move away")
            self.wait_until(lambda: False, start + timing.drain_delay)
        # Keep time for the engine's own drain after the proxy's.
        engine_reserve = engine_shutdown_timeout(self.config) + 1.0 if was_ready else STARTING_ENGINE_GRACE
        self.stop_groups("proxy", proxy_pgids, max(self.clock(), deadline - engine_reserve))
        engine_deadline = deadline if was_ready else min(deadline, self.clock() + STARTING_ENGINE_GRACE)
        self.stop_groups("engine", engine_pgids, engine_deadline)
        self.stop_supervisor()

    def stop_supervisor(self) -> None:
        pid = self.supervisor.pid
        if pid is None:
            return
        try:
            self.supervisor.shutdown()
        except SupervisorError:
            self.supervisor.signal_self(signal.SIGTERM)
        if not self.wait_until(lambda: pid in self.reaper.statuses, self.clock() + SUPERVISOR_WAIT):
            signal_group(pid, signal.SIGKILL)
            self.wait_until(lambda: pid in self.reaper.statuses, self.clock() + KILL_WAIT)
