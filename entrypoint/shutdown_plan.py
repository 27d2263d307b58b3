"""The shutdown's timeline, computed once from the timing: every consumer
reads its part from here (the proxy's own drain limit, the engine's
--shutdown-timeout, supervisord's stop waits, the shutdown routine's steps),
so the parts cannot disagree.

All times are seconds; the deadlines count from the signal that began the
shutdown. The plan holds in the worst case: nothing stops before its SIGKILL
and supervisord never answers (entrypoint.shutdown).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .config import Timing

# Full-size steps for a grace period of FULL_SIZE_GRACE s or more; a shorter
# one shrinks them in proportion.
FULL_SIZE_GRACE = 12.0
SHUTDOWN_RPC_TIMEOUT = 0.5    # each XML-RPC call during shutdown (supervision.RPC_TIMEOUT before it)
KILL_WAIT = 1.0               # after a SIGKILL, for the group to be gone
SUPERVISOR_WAIT = 1.0         # supervisord's own exit once its programs are gone
STARTING_ENGINE_GRACE = 5.0   # nothing to drain, and vLLM may ignore SIGTERM while loading
LIMITER_GRACE = 1.0           # redis-server without persistence stops in milliseconds
LOG_FLUSH = 2.0               # LogForwarder.stop() joins its thread for up to 2 s after us
SLACK = 0.5                   # polls overshooting their deadlines, console lines
LOG_SETTLE = 0.5              # after a group is gone, for supervisord to reap it and write out its last output


@dataclass(frozen=True)
class ShutdownPlan:
    """Sizes of the fixed steps, when each stage must be over, and the limits
    the programs themselves are given."""

    rpc: float
    kill_wait: float
    supervisor_wait: float
    starting_engine_grace: float
    limiter_grace: float
    log_settle: float          # for supervisord to write out a stopped program's last output
    proxy_by: float            # the proxy's SIGTERM deadline once the container was ready
    proxy_by_starting: float   # the same before it ever was (the engine gets less time)
    engine_by: float           # the engine's SIGTERM deadline
    end: float                 # everything stopped; the log forwarder's last flush follows
    engine_drain: int          # vLLM's --shutdown-timeout
    proxy_drain: float         # LiteLLM's GRACEFUL_SHUTDOWN_TIMEOUT
    supervisord_stop_wait: int  # supervisord's stopwaitsecs, when it stops a program itself

    def proxy_deadline(self, was_ready: bool) -> float:
        return self.proxy_by if was_ready else self.proxy_by_starting


@functools.cache
def shutdown_plan(timing: Timing) -> ShutdownPlan:
    grace = timing.grace_period
    scale = min(1.0, grace / FULL_SIZE_GRACE)
    rpc, kill, supervisor = SHUTDOWN_RPC_TIMEOUT * scale, KILL_WAIT * scale, SUPERVISOR_WAIT * scale
    end = grace - (LOG_FLUSH + SLACK) * scale
    # After the engine's deadline: its SIGKILL wait, then supervisord's
    # shutdown call, its exit, and its SIGKILL wait (shared with adopted groups).
    engine_by = end - (kill + rpc + supervisor + kill)
    # The proxy has drained first, so the engine rarely has work left: a
    # fifth of the grace period is plenty.
    engine_drain = max(1, int(grace // 5))
    proxy_by = engine_by - (engine_drain + 1.0) - kill
    return ShutdownPlan(
        rpc=rpc, kill_wait=kill, supervisor_wait=supervisor,
        starting_engine_grace=STARTING_ENGINE_GRACE * scale, limiter_grace=LIMITER_GRACE * scale,
        log_settle=LOG_SETTLE * scale,
        proxy_by=proxy_by, proxy_by_starting=engine_by - STARTING_ENGINE_GRACE * scale - kill,
        engine_by=engine_by, end=end, engine_drain=engine_drain,
        # From after the first XML-RPC call and the drain delay to its deadline.
        proxy_drain=max(1.0, proxy_by - rpc - timing.drain_delay),
        supervisord_stop_wait=max(1, int(grace)),
    )
