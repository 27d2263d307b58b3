"""Unit tests of the shutdown routine with a fake clock, fake process groups
and a fake supervisord: the budget holds in the worst case, groups the
monitor never saw are stopped, a second signal skips only graceful waits, a
hung program is killed at once, and the heartbeat stays fresh."""

from __future__ import annotations

import pytest

from entrypoint.board import ProgramBoard
from entrypoint.host import Host
from entrypoint.outcome import Outcome
from entrypoint.shutdown import Shutdown
from entrypoint.shutdown_plan import (
    FULL_SIZE_GRACE,
    LOG_FLUSH,
    SHUTDOWN_RPC_TIMEOUT,
    STARTING_ENGINE_GRACE,
    shutdown_plan,
)

from fakes import (
    FakeClock,
    FakeConfig,
    FakeProbes,
    FakeProcesses,
    FakeReaper,
    FakeSignals,
    FakeSupervisor,
    quiet_console,
    timing,
    unwritten_metrics,
)

ENGINE, PROXY, SUPERVISORD, LEFTOVER = 200, 300, 100, 400
# The monitor may notice a signal this late: a tick, and a call to a silent supervisord.
NOTICED_AFTER = 0.2 + 1.0


DEFAULT_CONFIG = FakeConfig()


class World:
    def __init__(self, second_signal_at: tuple[float, ...] = ()):
        self.clock = FakeClock()
        self.processes = FakeProcesses(self.clock)
        self.reaper = FakeReaper(self.processes)
        self.supervisor = FakeSupervisor(self.clock, self.processes)
        self.signals = FakeSignals(self.clock, second_signal_at)
        self.probes = FakeProbes(self.clock)
        self.console, self.out, _ = quiet_console()
        self.printed: set[str] = set()

    def stop(self, config: FakeConfig = DEFAULT_CONFIG, proxy=(), engine=(), limiter=(), drain: bool = True,
             **outcome) -> None:
        """The shutdown after an outcome (drain: a signal asked for it), with
        the process groups the monitor saw of each program."""
        programs = ("engine", "proxy", "limiter")
        board = ProgramBoard(programs, started=0.0, metrics=unwritten_metrics(programs))
        for name, pgids in (("proxy", proxy), ("engine", engine), ("limiter", limiter)):
            board[name].pgids.update(pgids)
        host = Host(self.supervisor, self.signals, self.reaper, processes=self.processes, clock=self.clock)
        shutdown = Shutdown(config, host, board, self.probes, self.console, flush_logs=self.flush_logs)
        shutdown.run(Outcome(0, "received SIGTERM", requested=drain, **outcome))

    def flush_logs(self, name: str) -> None:
        """The log forwarder: a program's last words reach its log when
        supervisord reaps it, and the console when the forwarder is told the
        program has finished."""
        state = self.supervisor.programs.get(name)
        if state is not None and name not in self.printed and not self.supervisor._as_reaped(state).alive:
            self.console.line(name, f"{name}'s last words")
            self.printed.add(name)

    def nothing_dies(self) -> None:
        for pgid in (PROXY, ENGINE, SUPERVISORD, LEFTOVER):
            self.processes.add(pgid, term_takes=None, kill_takes=None)
        self.processes.adopted = {LEFTOVER}
        self.supervisor.silent = True

    def alive(self) -> list[int]:
        return [pgid for pgid in self.processes.groups if self.processes.group_alive(pgid)]


@pytest.mark.parametrize("grace", [25.0, 12.0, 6.0, 3.0])
@pytest.mark.parametrize("was_ready", [True, False])
@pytest.mark.parametrize("hung", [(), ("engine",)])
def test_the_whole_shutdown_fits_the_grace_period_when_nothing_stops_and_supervisord_never_answers(
        grace, was_ready, hung) -> None:
    world = World()
    world.nothing_dies()
    config = FakeConfig(timing(grace_period=grace, drain_delay=grace / 5))
    world.clock.now = NOTICED_AFTER
    world.stop(config, [PROXY], [ENGINE], drain=True, was_ready=was_ready, since=0.0, kill_at_once=hung)
    log_flush = LOG_FLUSH * min(1.0, grace / FULL_SIZE_GRACE)  # the log forwarder's last flush comes after
    assert world.clock.now + log_flush <= grace
    assert {at for at, pgid, what in world.processes.sent if what == "SIGKILL group"}, "nothing was killed"
    assert all(world.processes.killed(pgid) for pgid in (PROXY, ENGINE, SUPERVISORD, LEFTOVER))


def test_every_call_to_supervisord_during_shutdown_has_the_short_timeout() -> None:
    world = World()
    world.nothing_dies()
    world.stop(FakeConfig(), [PROXY], [ENGINE], drain=True, was_ready=True, since=0.0)
    assert world.supervisor.calls
    assert all(timeout <= SHUTDOWN_RPC_TIMEOUT for _, timeout in world.supervisor.calls)


def test_the_heartbeat_stays_fresh_through_the_longest_shutdown() -> None:
    world = World()
    world.nothing_dies()
    world.clock.now = NOTICED_AFTER
    world.stop(FakeConfig(), [PROXY], [ENGINE], drain=True, was_ready=True, since=0.0)
    beats = [NOTICED_AFTER, *world.probes.beats, world.clock.now]
    assert max(later - earlier for earlier, later in zip(beats, beats[1:], strict=False)) <= 1.0


def test_a_signal_before_the_monitor_saw_any_group_still_stops_the_loading_engine() -> None:
    world = World()
    world.processes.add(ENGINE, term_takes=None)   # vLLM ignores SIGTERM while loading
    world.processes.add(PROXY)
    world.supervisor.run("engine", ENGINE)
    world.supervisor.run("proxy", PROXY)
    world.stop(FakeConfig(), proxy=set(), engine=set(), drain=True, was_ready=False, since=0.0)
    assert world.alive() == []
    assert world.processes.killed(ENGINE)[0] <= STARTING_ENGINE_GRACE + 1.0


def test_process_groups_adopted_from_supervisord_are_killed_and_waited_for() -> None:
    world = World()
    world.processes.add(LEFTOVER, term_takes=None, kill_takes=0.3)
    world.processes.adopted = {LEFTOVER}
    world.stop(FakeConfig(), [], [], drain=True, was_ready=True, since=0.0)
    assert world.processes.killed(LEFTOVER)
    assert world.alive() == []


def test_a_second_signal_skips_the_graceful_waits_but_not_the_wait_for_killed_groups() -> None:
    world = World(second_signal_at=(1.0,))
    world.processes.add(PROXY, term_takes=None, kill_takes=0.4)
    world.processes.add(ENGINE, term_takes=None, kill_takes=0.4)
    world.stop(FakeConfig(), [PROXY], [ENGINE], drain=True, was_ready=True, since=0.0)
    assert "second signal" in world.out.getvalue()
    assert world.clock.now < 5.0
    assert world.alive() == []


def test_a_hung_engine_is_killed_at_once_before_the_proxy_is_stopped() -> None:
    world = World()
    world.processes.add(ENGINE, term_takes=None)
    world.processes.add(PROXY)
    world.stop(FakeConfig(), [PROXY], [ENGINE], drain=False, was_ready=True, since=0.0, kill_at_once=("engine",))
    first = world.processes.sent[0]
    assert first == (0.0, ENGINE, "SIGKILL group")
    assert world.alive() == []
    assert world.clock.now < 3.0


def test_a_program_that_ignores_sigterm_is_killed_at_its_deadline() -> None:
    world = World()
    world.processes.add(ENGINE, term_takes=None)
    config = FakeConfig(timing(grace_period=25.0))
    world.stop(config, [], [ENGINE], drain=True, was_ready=True, since=0.0)
    assert world.processes.killed(ENGINE) == [pytest.approx(shutdown_plan(config.timing).engine_by)]
    assert "engine did not stop in time: killed its process group" in world.out.getvalue()


def test_programs_that_stop_on_sigterm_are_not_killed() -> None:
    world = World()
    world.processes.add(ENGINE)
    world.processes.add(PROXY)
    world.stop(FakeConfig(), [PROXY], [ENGINE], drain=True, was_ready=True, since=0.0)
    assert not world.processes.killed(ENGINE) and not world.processes.killed(PROXY)
    assert world.alive() == []
    assert world.clock.now < 2.0


def test_the_proxy_drain_budget_leaves_time_for_the_engine_and_the_tail() -> None:
    config = FakeConfig(timing(grace_period=25.0, drain_delay=2.0))
    plan = shutdown_plan(config.timing)
    assert shutdown_plan(config.timing).proxy_drain == pytest.approx(plan.proxy_by - SHUTDOWN_RPC_TIMEOUT - 2.0)
    assert shutdown_plan(config.timing).proxy_drain == pytest.approx(9.5)
    assert plan.end + LOG_FLUSH <= 25.0


def test_a_probe_dir_that_broke_does_not_stop_the_shutdown_half_way() -> None:
    world = World()
    world.processes.add(PROXY, term_takes=1.0)
    world.processes.add(ENGINE, term_takes=2.0)
    world.probes.broken = True
    world.stop(FakeConfig(), [PROXY], [ENGINE], drain=True, was_ready=True, since=0.0)
    assert not world.processes.group_alive(PROXY) and not world.processes.group_alive(ENGINE)


@pytest.mark.parametrize("reap_delay", [0.0, 0.3])
def test_each_programs_last_lines_come_before_the_line_that_says_it_stopped(reap_delay: float) -> None:
    world = World()
    world.processes.add(PROXY, term_takes=0.2)
    world.processes.add(ENGINE, term_takes=1.0)
    world.supervisor.run("proxy", PROXY)
    world.supervisor.run("engine", ENGINE)
    world.supervisor.reap_delay = reap_delay
    world.stop(FakeConfig(), [PROXY], [ENGINE], drain=True, was_ready=True, since=0.0)
    lines = world.out.getvalue().splitlines()
    assert lines == ["proxy     | proxy's last words", "llm-entry | proxy stopped in 0.2 s",
                     "engine    | engine's last words", "llm-entry | engine stopped in 1.0 s"]


def test_a_killed_programs_last_lines_come_before_the_line_that_says_so() -> None:
    world = World()
    world.processes.add(ENGINE, term_takes=None)
    world.supervisor.run("engine", ENGINE)
    world.supervisor.reap_delay = 0.1
    world.stop(FakeConfig(), [], [ENGINE], drain=True, was_ready=True, since=0.0)
    lines = world.out.getvalue().splitlines()
    assert lines[:2] == ["engine    | engine's last words",
                         "llm-entry | engine did not stop in time: killed its process group"]


def test_with_supervisord_silent_the_stop_lines_wait_for_nothing() -> None:
    world = World()
    world.processes.add(ENGINE)
    world.supervisor.silent = True
    world.stop(FakeConfig(), [], [ENGINE], drain=True, was_ready=True, since=0.0)
    calls = [method for method, _ in world.supervisor.calls]
    assert calls.count("getAllProcessInfo") == 1   # learning the groups; the stop line does not ask again


# --- the private redis-server (limiter) ----------------------------------------------

LIMITER = 500


def test_the_limiter_stops_after_the_proxy_and_before_the_engine() -> None:
    world = World()
    for name, pgid, takes in (("proxy", PROXY, 0.2), ("limiter", LIMITER, 0.01), ("engine", ENGINE, 1.0)):
        world.processes.add(pgid, term_takes=takes)
        world.supervisor.run(name, pgid)
    world.stop(FakeConfig(), [PROXY], [ENGINE], drain=True, was_ready=True, since=0.0, limiter=[LIMITER])
    terms = [pgid for _, pgid, what in world.processes.sent if what == "SIGTERM leader"]
    assert terms[:3] == [PROXY, LIMITER, ENGINE]
    assert world.alive() == []
    lines = world.out.getvalue().splitlines()
    assert lines[2:4] == ["limiter   | limiter's last words", "llm-entry | limiter stopped in 0.0 s"]


def test_a_limiter_the_monitor_never_saw_is_learned_from_supervisord_and_stopped() -> None:
    world = World()
    world.processes.add(LIMITER)
    world.supervisor.run("limiter", LIMITER)
    world.stop(FakeConfig(), [], [], drain=True, was_ready=True, since=0.0)
    assert (0.0, LIMITER, "SIGTERM leader") in world.processes.sent
    assert world.alive() == []


def test_a_limiter_that_ignores_sigterm_is_killed_without_moving_the_engines_deadline() -> None:
    world = World()
    world.processes.add(LIMITER, term_takes=None)
    world.processes.add(ENGINE, term_takes=None)
    config = FakeConfig(timing(grace_period=25.0))
    world.stop(config, [], [ENGINE], drain=True, was_ready=True, since=0.0, limiter=[LIMITER])
    assert world.processes.killed(LIMITER) == [pytest.approx(shutdown_plan(config.timing).limiter_grace)]
    assert world.processes.killed(ENGINE) == [pytest.approx(shutdown_plan(config.timing).engine_by)]


@pytest.mark.parametrize("grace", [25.0, 6.0, 3.0])
def test_the_whole_shutdown_with_a_limiter_fits_the_grace_period_when_nothing_stops(grace: float) -> None:
    world = World()
    world.nothing_dies()
    world.processes.add(LIMITER, term_takes=None, kill_takes=None)
    config = FakeConfig(timing(grace_period=grace, drain_delay=grace / 5))
    world.clock.now = NOTICED_AFTER
    world.stop(config, [PROXY], [ENGINE], drain=True, was_ready=True, since=0.0, limiter=[LIMITER])
    assert world.clock.now + LOG_FLUSH * min(1.0, grace / FULL_SIZE_GRACE) <= grace
    assert all(world.processes.killed(pgid) for pgid in (PROXY, LIMITER, ENGINE, SUPERVISORD, LEFTOVER))


def test_a_hung_limiter_is_killed_at_once() -> None:
    world = World()
    world.processes.add(LIMITER, term_takes=None)
    world.processes.add(PROXY)
    world.stop(FakeConfig(), [PROXY], [], drain=False, was_ready=True, since=0.0, limiter=[LIMITER],
                         kill_at_once=("limiter",))
    assert world.processes.sent[0] == (0.0, LIMITER, "SIGKILL group")
    assert "limiter looks hung: killing its process group at once" in world.out.getvalue()
    assert world.alive() == []
