"""Unit tests of the monitor's tick with a fake clock, a fake supervisord and
fake process groups: what the probe files say when supervisord falls silent,
how a signal, a hang, a bug and an exit end the loop, and how a restart waits
for the old process group."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrypoint.board import ProgramBoard
from entrypoint.errors import (
    EXIT_ENGINE_FAILED,
    EXIT_HUNG,
    EXIT_INTERNAL_ERROR,
    EXIT_OK,
    EXIT_PROXY_FAILED,
    EXIT_SUPERVISOR_FAILED,
)
from entrypoint.host import Host
from entrypoint.monitor import TICK, Monitor
from entrypoint.probe_files import HEARTBEAT, NOT_HEALTHY, NOT_READY, ProbeFiles
from entrypoint.readiness import Readiness, ready_line
from entrypoint.restarts import RESTART_KILL_WAIT, RestartPolicy

from fakes import (
    FakeClock,
    FakeConfig,
    FakeForwarder,
    FakeProcesses,
    FakeReaper,
    FakeSignals,
    FakeSupervisor,
    FakeTail,
    quiet_console,
    unwritten_metrics,
)

ENGINE, PROXY, LIMITER = 200, 300, 400
TTL = 15.0
PIDS = {"engine": ENGINE, "proxy": PROXY, "limiter": LIMITER}
WITH_LIMITER = ("engine", "proxy", "limiter")


DEFAULT_CONFIG = FakeConfig()


class World:
    def __init__(self, tmp_path: Path, config: FakeConfig = DEFAULT_CONFIG, signal_at: tuple[float, ...] = (),
                 programs: tuple[str, ...] = ("engine", "proxy"), checkers: dict | None = None,
                 start: float = 1000.0):
        self.clock = FakeClock(start)
        self.processes = FakeProcesses(self.clock)
        self.supervisor = FakeSupervisor(self.clock, self.processes)
        self.probes = ProbeFiles(tmp_path / "probe", TTL, clock=self.clock.wall)
        self.probes.prepare()
        self.console, self.out, _ = quiet_console()
        self.forwarder = FakeForwarder()
        self.forwarder.tails.setdefault("limiter", FakeTail())
        host = Host(self.supervisor, FakeSignals(self.clock, signal_at), FakeReaper(self.processes),
                    processes=self.processes, clock=self.clock)
        self.board = ProgramBoard(programs, self.clock(), unwritten_metrics(programs))
        readiness = Readiness(config, self.probes, self.console, self.board.metrics, self.board.started)
        restart_policy = RestartPolicy(config, host, self.board, self.forwarder, self.console)
        self.monitor = Monitor(config, self.board, host, readiness, restart_policy, checkers=checkers or {})
        for name in programs:
            if name not in PIDS:
                continue   # on the board, but no supervisord program (a worker's leader)
            self.processes.add(PIDS[name])
            self.supervisor.run(name, PIDS[name])

    def passes(self, *names: str) -> None:
        for name in names or tuple(self.board.programs):
            program = self.board.programs[name]
            self.board.report(name, program.generation, True, "200", self.clock())

    def tick(self):
        outcome = self.monitor.tick()
        self.clock.sleep(TICK)
        return outcome

    def file(self, name: str) -> str | None:
        path = self.probes.dir / name
        return path.read_text() if path.exists() else None

    def heartbeat_is_fresh(self) -> bool:
        """Written within the last second (it holds whole seconds)."""
        return int(self.file(HEARTBEAT)) >= int(self.clock.wall() + TTL) - 1


def ready_world(tmp_path: Path, **kwargs) -> World:
    world = World(tmp_path, **kwargs)
    world.passes()
    assert world.tick() is None
    assert world.file(NOT_READY) is None
    return world


def test_both_programs_passing_their_checks_make_the_container_ready(tmp_path: Path) -> None:
    world = ready_world(tmp_path)
    assert "ready in" in world.out.getvalue()
    assert "(public: 0.0.0.0:8080)" in world.out.getvalue()
    assert world.board.programs["engine"].pgids == {ENGINE}


def test_the_ready_line_names_the_master_key_as_the_only_key_without_a_keys_file() -> None:
    assert ready_line(FakeConfig(), 12.34) == (
        "ready in 12.3 s: http://127.0.0.1:8080/v1 serves model 'tiny' to holders of the master key "
        "(public: 0.0.0.0:8080)")


def test_the_ready_line_names_the_keys_file_when_there_is_one() -> None:
    config = FakeConfig(api_keys_file=Path("/run/secrets/llm/keys"))
    assert ready_line(config, 3.0) == (
        "ready in 3.0 s: http://127.0.0.1:8080/v1 serves model 'tiny' to holders of the master key "
        "or of a key in --api-keys-file /run/secrets/llm/keys (public: 0.0.0.0:8080)")


def test_a_silent_supervisord_makes_not_ready_with_the_reason_and_the_heartbeat_stays_fresh(tmp_path: Path) -> None:
    world = ready_world(tmp_path)
    world.supervisor.silent = True
    for _ in range(5):
        world.passes()
        assert world.tick() is None
        assert world.heartbeat_is_fresh()
        assert "supervisord not answering" in world.file(NOT_READY)
    assert world.file(NOT_HEALTHY) is None
    world.supervisor.silent = False
    assert world.tick() is None
    assert world.file(NOT_READY) is None
    assert "supervisord answers again" in world.out.getvalue()


def test_supervisord_silent_beyond_the_hang_timeout_fails_the_container_with_exit_7(tmp_path: Path) -> None:
    world = ready_world(tmp_path)
    world.supervisor.silent = True
    outcome = None
    while outcome is None:
        world.passes()
        outcome = world.tick()
    assert outcome.exit_code == EXIT_SUPERVISOR_FAILED
    assert "supervisord has not answered for 30 s" in world.file(NOT_HEALTHY)


def test_a_supervisord_still_starting_is_shown_as_starting(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.supervisor.silent = True
    assert world.tick() is None
    assert "supervisord starting" in world.file(NOT_READY)
    assert world.heartbeat_is_fresh()


def test_a_signal_outcome_counts_its_budget_from_the_previous_look(tmp_path: Path) -> None:
    world = World(tmp_path, signal_at=(1000.5,))
    assert world.tick() is None          # looked at 1000.0
    world.clock.now = 1001.7             # a slow tick: the signal waited
    outcome = world.tick()
    assert outcome.requested and outcome.exit_code == EXIT_OK
    assert outcome.summary == "received SIGTERM"
    assert outcome.since == 1000.0


def test_a_bug_in_the_loop_ends_in_an_outcome_with_exit_8_and_one_line(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.supervisor.fault = ZeroDivisionError("division by zero")
    outcome = world.monitor.run()
    assert outcome.exit_code == EXIT_INTERNAL_ERROR
    assert "\n" not in outcome.summary
    assert "monitor failed (ZeroDivisionError: division by zero at fakes.py:" in outcome.summary
    assert world.file(NOT_HEALTHY) == outcome.summary + "\n"
    assert any("ZeroDivisionError" in line for line in outcome.details)


def test_a_hung_engine_fails_with_exit_6_and_asks_to_be_killed_at_once(tmp_path: Path) -> None:
    world = ready_world(tmp_path)
    outcome = None
    while outcome is None:
        world.passes("proxy")
        outcome = world.tick()
    assert outcome.exit_code == EXIT_HUNG
    assert outcome.kill_at_once == ("engine",)
    assert world.file(NOT_HEALTHY).startswith("engine has not passed a check for 30 s")


VLLM_FAILURE = [
    "(EngineCore_DP0 pid=812) ERROR 05-02 10:00:01 [core.py:708] EngineCore failed to start.",
    "(EngineCore_DP0 pid=812) ERROR 05-02 10:00:01 [core.py:708] Traceback (most recent call last):",
    *[f'(EngineCore_DP0 pid=812) ERROR 05-02 10:00:01 [core.py:708]   File "x.py", line {n}, in f' for n in range(8)],
    "(EngineCore_DP0 pid=812) ERROR 05-02 10:00:01 [core.py:708] torch.OutOfMemoryError: CUDA out of memory. "
    "Tried to allocate 2.00 GiB",
    "(APIServer pid=1) Traceback (most recent call last):",
    *[f'(APIServer pid=1)   File "y.py", line {n}, in g' for n in range(8)],
    "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. "
    "Failed core proc(s): {'EngineCore_DP0': 1}",
]


def test_the_exit_summary_names_the_root_cause_and_the_last_lines_come_below(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.forwarder.tails["engine"].lines = ["INFO loading"] * 10 + VLLM_FAILURE
    world.supervisor.exit("engine", 1)
    outcome = world.tick()
    assert outcome.exit_code == EXIT_ENGINE_FAILED
    assert outcome.summary.startswith("engine exited (exit status 1) 0 s after start, while starting")
    assert outcome.summary.endswith("; its error: torch.OutOfMemoryError: CUDA out of memory. "
                                    "Tried to allocate 2.00 GiB")
    assert len(outcome.details) == 20
    assert outcome.details[-1] == "engine | " + VLLM_FAILURE[-1]


def test_a_summary_after_a_restart_is_told_from_the_last_runs_output_only(tmp_path: Path) -> None:
    world = ready_world(tmp_path, config=FakeConfig(max_restarts=1))
    world.supervisor.next_pid["proxy"] = 301
    tail = world.forwarder.tails["proxy"]
    tail.lines = ["Traceback (most recent call last):", '  File "server.py", line 182, in startup',
                  "OSError: [Errno 98] address already in use"]
    world.supervisor.exit("proxy", 3)
    while not world.supervisor.started:
        assert world.tick() is None
    assert "; its error: OSError: [Errno 98] address already in use; restarting it" in world.out.getvalue()
    tail.lines += ["INFO uvicorn.error: Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)"]
    world.supervisor.exit("proxy", -1, reason="terminated by SIGKILL")
    outcome = None
    while outcome is None:
        outcome = world.tick()
    assert outcome.exit_code == EXIT_PROXY_FAILED
    assert "; last output: INFO uvicorn.error: Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)" \
        in outcome.summary
    assert outcome.details == ("proxy | INFO uvicorn.error: Uvicorn running on http://0.0.0.0:8080 "
                               "(Press CTRL+C to quit)",)


def restart_world(tmp_path: Path, **old_group) -> World:
    world = ready_world(tmp_path, config=FakeConfig(engine_restart="always"))
    world.processes.add(ENGINE, **old_group)   # workers outlive the API server
    world.supervisor.next_pid["engine"] = 201
    world.supervisor.exit("engine", 0)
    return world


def test_an_engine_restart_starts_the_engine_only_once_its_old_group_is_gone(tmp_path: Path) -> None:
    world = restart_world(tmp_path, kill_takes=0.5)
    assert world.tick() is None
    killed_at = world.processes.killed(ENGINE)
    assert len(killed_at) == 1 and world.supervisor.started == []
    assert "restarting it" in world.out.getvalue()
    while not world.supervisor.started:
        assert world.processes.group_alive(ENGINE) or world.clock() <= killed_at[0] + 0.5 + TICK
        assert world.tick() is None
        assert "engine starting" in world.file(NOT_READY)
    assert world.supervisor.started[0][0] >= killed_at[0] + 0.5
    world.tick()
    assert world.board.programs["engine"].pgids == {201}, "the old group id is forgotten"


def test_an_old_engine_group_that_outlives_sigkill_fails_the_restart(tmp_path: Path) -> None:
    world = restart_world(tmp_path, kill_takes=None)
    outcome = None
    while outcome is None:
        outcome = world.tick()
    assert outcome.exit_code == EXIT_ENGINE_FAILED
    assert "still there" in outcome.summary and "SIGKILL" in outcome.summary
    assert world.supervisor.started == []
    assert world.clock() - world.processes.killed(ENGINE)[0] == pytest.approx(RESTART_KILL_WAIT, abs=2 * TICK)


def test_an_engine_exit_without_restarts_fails_at_once(tmp_path: Path) -> None:
    world = ready_world(tmp_path)
    world.supervisor.exit("engine", 0)
    outcome = world.tick()
    assert outcome.exit_code == EXIT_ENGINE_FAILED
    assert world.file(NOT_READY) == world.file(NOT_HEALTHY) == outcome.summary + "\n"
    assert "after it was ready; vLLM exits even with status 0" in outcome.summary


# --- the private redis-server (limiter) as a third program ---------------------------

def test_the_limiters_check_holds_readiness_back_until_it_passes(tmp_path: Path) -> None:
    world = World(tmp_path, programs=WITH_LIMITER)
    world.passes("engine", "proxy")
    assert world.tick() is None
    assert "limiter starting" in world.file(NOT_READY)
    world.passes("limiter")
    assert world.tick() is None
    assert world.file(NOT_READY) is None
    assert "ready in" in world.out.getvalue()


def test_a_limiter_that_stops_answering_after_the_first_ready_leaves_the_container_ready(tmp_path: Path) -> None:
    """The proxy counts in each worker's memory while Redis is away, and serves."""
    world = World(tmp_path, programs=WITH_LIMITER)
    world.passes()
    assert world.tick() is None
    for _ in range(2):
        world.board.report("limiter", 0, False, "no answer to PING within the check timeout", world.clock())
    world.passes("engine", "proxy")
    assert world.tick() is None
    assert world.file(NOT_READY) is None


def test_a_limiter_exit_restarts_it_in_place_says_its_counters_start_from_zero_and_the_container_stays_ready(
        tmp_path: Path) -> None:
    world = World(tmp_path, programs=WITH_LIMITER)
    world.passes()
    assert world.tick() is None
    world.supervisor.next_pid["limiter"] = 401
    world.supervisor.exit("limiter", -1, reason="terminated by SIGKILL")
    while not world.supervisor.started:
        assert world.tick() is None
    assert world.supervisor.started[0][1] == "limiter"
    assert world.processes.killed(LIMITER), "the old group is killed first"
    assert ("limiter exited (terminated by SIGKILL (perhaps out of memory: check the container's memory limit "
            "and dmesg)) 0 s after start, after it was ready; restarting it (the keys' limit counters start "
            "again from zero)") in world.out.getvalue()
    assert world.tick() is None
    assert world.file(NOT_READY) is None, "the proxy serves while the limiter restarts"
    world.passes()
    assert world.tick() is None
    assert world.file(NOT_READY) is None
    assert "not ready" not in world.out.getvalue()
    assert world.board.programs["limiter"].pgids == {401}
    assert world.board.programs["engine"].generation == world.board.programs["proxy"].generation == 0


def limiter_exits(world: World, new_pid: int, status: int = 1):
    """The limiter exits; tick until the monitor follows its new start or gives up."""
    world.supervisor.next_pid["limiter"] = new_pid
    world.supervisor.exit("limiter", status)
    for _ in range(100):
        world.passes()
        outcome = world.tick()
        if outcome is not None or world.board.programs["limiter"].pgids == {new_pid}:
            return outcome
    raise AssertionError("the limiter was neither restarted nor given up on")


def test_a_limiter_that_keeps_exiting_fails_the_container_as_the_proxy_side_with_exit_4(tmp_path: Path) -> None:
    world = World(tmp_path, config=FakeConfig(max_restarts=2), programs=WITH_LIMITER)
    world.passes()
    assert world.tick() is None
    assert limiter_exits(world, 401) is None
    assert limiter_exits(world, 402) is None
    outcome = limiter_exits(world, 403)
    assert outcome.exit_code == EXIT_PROXY_FAILED
    assert outcome.summary.startswith("limiter exited (exit status 1)")
    assert outcome.summary.endswith("; gave up after 2 restarts in 300 s")
    assert world.file(NOT_HEALTHY) == outcome.summary + "\n"
    assert [name for _, name in world.supervisor.started] == ["limiter", "limiter"]


def test_limiter_restarts_older_than_the_restart_window_no_longer_count(tmp_path: Path) -> None:
    world = World(tmp_path, config=FakeConfig(max_restarts=1, restart_window=60.0), programs=WITH_LIMITER)
    world.passes()
    assert world.tick() is None
    assert limiter_exits(world, 401) is None
    world.clock.sleep(61.0)
    assert limiter_exits(world, 402) is None
    assert [name for _, name in world.supervisor.started] == ["limiter", "limiter"]
    assert limiter_exits(world, 403).exit_code == EXIT_PROXY_FAILED
