"""Unit tests of how a worker of a multi-node group watches its leader: the
check of the leader's rendezvous port against a real socket, what a silent or
never-seen leader means to the verdicts, and the monitor's tick on a worker's
board, where the engine is a supervisord program and the leader is not."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_monitor import World

from entrypoint.checks import leader_check
from entrypoint.config import Timing
from entrypoint.errors import EXIT_ENGINE_FAILED, EXIT_HUNG, EXIT_STARTUP_TIMEOUT
from entrypoint.health import Vitals, assess
from entrypoint.keys import Secret
from entrypoint.monitor import TICK
from entrypoint.node_group import NodeGroup
from entrypoint.probe_files import NOT_HEALTHY, NOT_READY
from entrypoint.readiness import ready_line
from entrypoint.run import program_check, starting_line, watched

from fakes import (
    FakeClock,
    FakeConfig,
    make_config,
    model_folder,
)

TIMING = Timing(startup_timeout=100.0, check_interval=2.0, check_timeout=3.0, unready_after=2,
                hang_timeout=30.0, heartbeat_ttl=15.0, grace_period=25.0, drain_delay=0.0)
START = 1000.0
ENGINE_PID = 200
LEADER_TEXT = "the leader (node rank 0 of 2) at 127.0.0.1:29501"
REFUSED = f"{LEADER_TEXT} does not answer: connection refused"
WORKER = NodeGroup(2, 1, "127.0.0.1", 29501, "pipeline",
                   "node rank 1 of 2, a worker: its engine runs headless, no proxy; rendezvous at 127.0.0.1:29501; "
                   "pipeline parallel across nodes")
WORKER_CONFIG = FakeConfig(group=WORKER)


# --- the check of the leader's rendezvous port ----------------------------------------

@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A real socket listening on a free port of 127.0.0.1, as the leader's store does."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(5.0)
    yield server
    server.close()


def check_leader(port: int, deadline: float | None = None, clock=time.monotonic) -> tuple[bool, str]:
    check = leader_check("127.0.0.1", port, f"the leader (node rank 0 of 2) at 127.0.0.1:{port}", clock)
    with requests.Session() as session:
        return check(session, clock() + 3.0 if deadline is None else deadline)


def test_a_leader_whose_rendezvous_port_listens_passes_and_was_really_connected_to(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    assert check_leader(port) == (True, f"the leader (node rank 0 of 2) at 127.0.0.1:{port} answers")
    connection, _ = listening.accept()   # the check's connection reached the listener
    connection.close()


def test_a_leader_whose_port_closed_fails_as_connection_refused_and_is_named(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    listening.close()
    assert check_leader(port) == (
        False, f"the leader (node rank 0 of 2) at 127.0.0.1:{port} does not answer: connection refused")


def test_a_leader_check_whose_deadline_passed_fails_without_connecting(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    clock = FakeClock(10.0)
    ok, detail = check_leader(port, deadline=9.0, clock=clock)
    assert not ok
    assert detail.startswith(f"the leader (node rank 0 of 2) at 127.0.0.1:{port} does not answer: ")
    listening.setblocking(False)
    with pytest.raises(BlockingIOError):
        listening.accept()   # nothing ever connected


def test_a_workers_leader_check_goes_to_the_rendezvous_port_of_its_config(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    config = FakeConfig(group=NodeGroup(2, 1, "127.0.0.1", port, "pipeline"))
    check = program_check(config, "leader", Path("/nonexistent"), Secret("sk-" + "k" * 30))
    with requests.Session() as session:
        assert check(session, time.monotonic() + 3.0) == (
            True, f"the leader (node rank 0 of 2) at 127.0.0.1:{port} answers")
    listening.accept()[0].close()


def test_a_workers_engine_check_needs_no_http() -> None:
    check = program_check(WORKER_CONFIG, "engine", Path("/nonexistent"), Secret("sk-" + "k" * 30))
    with requests.Session() as session:
        ok, detail = check(session, time.monotonic() + 3.0)
    assert ok
    assert detail == "runs headless (no HTTP to check); its exit is watched"


# --- what the leader's checks mean ------------------------------------------------------

def leader_seen_at(at: float) -> Vitals:
    vitals = Vitals("leader", started_at=START)
    vitals.record(True, f"{LEADER_TEXT} answers", at)
    return vitals


def test_a_leader_silent_past_the_hang_timeout_is_gone_and_fatal_with_its_last_check() -> None:
    vitals = leader_seen_at(START + 1)
    vitals.record(False, REFUSED, START + 20)
    verdict = assess(vitals, START + 32, TIMING)
    assert verdict.exit_code == EXIT_HUNG
    assert verdict.program == "leader"
    assert verdict.fatal == ("leader has not passed a check for 31 s (--hang-timeout 30 s): it is gone, and a "
                             f"worker cannot serve without it; last check: {REFUSED}")
    assert "looks hung" not in verdict.fatal


def test_a_leader_silent_for_exactly_the_hang_timeout_is_not_yet_gone() -> None:
    vitals = leader_seen_at(START + 1)
    vitals.record(False, REFUSED, START + 20)
    verdict = assess(vitals, START + 31, TIMING)
    assert verdict.ready and verdict.fatal == ""   # one failed check is below --unready-after 2


def test_a_leader_never_seen_within_the_startup_timeout_is_a_startup_timeout_naming_the_leader() -> None:
    vitals = Vitals("leader", started_at=START)
    vitals.record(False, REFUSED, START + 99)
    verdict = assess(vitals, START + 101, TIMING)
    assert verdict.exit_code == EXIT_STARTUP_TIMEOUT
    assert verdict.program == "leader"
    assert verdict.fatal == f"leader was not ready after 101 s (--startup-timeout 100 s); last check: {REFUSED}"


def test_a_leader_not_seen_yet_is_waited_for_by_name() -> None:
    vitals = Vitals("leader", started_at=START)
    vitals.record(False, REFUSED, START + 5)
    verdict = assess(vitals, START + 6, TIMING)
    assert not verdict.ready and verdict.fatal == ""
    assert verdict.waiting_for == f"leader starting (6 s): {REFUSED}"


# --- the monitor of a worker -------------------------------------------------------------

class FollowedChecker:
    """Stands in for a Checker: keeps what the monitor tells it to follow."""

    def __init__(self) -> None:
        self.followed: list[tuple[int, bool]] = []   # (generation, alive)

    def follow(self, generation: int, alive: bool) -> None:
        self.followed.append((generation, alive))


class WorkerWorld(World):
    """A worker's monitor: supervisord runs the engine; the leader is on the board only."""

    def __init__(self, tmp_path: Path, config: FakeConfig = WORKER_CONFIG):
        self.checkers = {"engine": FollowedChecker(), "leader": FollowedChecker()}
        super().__init__(tmp_path, config, programs=("engine", "leader"), checkers=self.checkers, start=START)

    def passes(self, *names: str) -> None:
        for name in names:
            self.board.report(name, self.board.programs[name].generation, True, "passed", self.clock())

    def fails(self, name: str, detail: str) -> None:
        self.board.report(name, self.board.programs[name].generation, False, detail, self.clock())

    def until_the_end(self):
        """Tick with the engine passing and the leader refusing, until the run ends."""
        outcome = None
        while outcome is None:
            self.passes("engine")
            self.fails("leader", REFUSED)
            outcome = self.tick()
        return outcome


def ready_worker(tmp_path: Path) -> WorkerWorld:
    world = WorkerWorld(tmp_path)
    world.passes("engine", "leader")
    assert world.tick() is None
    assert world.file(NOT_READY) is None
    return world


def test_the_leaders_check_is_followed_as_alive_though_supervisord_runs_no_leader(tmp_path: Path) -> None:
    world = WorkerWorld(tmp_path)
    assert "leader" not in world.supervisor.programs
    for _ in range(3):
        assert world.tick() is None
    assert world.checkers["leader"].followed == [(0, True)] * 3
    assert world.checkers["engine"].followed == [(0, True)] * 3


def test_a_workers_engine_alone_does_not_make_it_ready(tmp_path: Path) -> None:
    world = WorkerWorld(tmp_path)
    world.passes("engine")
    assert world.tick() is None
    assert world.file(NOT_READY) == "leader starting (0 s): not checked yet\n"


def test_a_worker_whose_engine_and_leader_pass_is_ready_and_says_so_with_the_workers_line(tmp_path: Path) -> None:
    world = ready_worker(tmp_path)
    assert ("ready in 0.0 s: node rank 1 of 2 runs its part of model 'tiny' for the leader (node rank 0 of 2) "
            "at 127.0.0.1:29501, which serves it") in world.out.getvalue()
    assert "public" not in world.out.getvalue()
    assert world.board.programs["engine"].pgids == {ENGINE_PID}


def test_a_workers_ready_line_names_its_rank_and_its_leader() -> None:
    assert ready_line(WORKER_CONFIG, 12.34) == (
        "ready in 12.3 s: node rank 1 of 2 runs its part of model 'tiny' for the leader (node rank 0 of 2) "
        "at 127.0.0.1:29501, which serves it")


def test_a_leader_failing_its_checks_makes_the_worker_not_ready_before_the_hang_timeout(tmp_path: Path) -> None:
    world = ready_worker(tmp_path)
    for _ in range(2):
        world.fails("leader", REFUSED)
    world.passes("engine")
    assert world.tick() is None
    assert world.file(NOT_READY) == f"leader failing checks (2 in a row): {REFUSED}\n"
    assert world.file(NOT_HEALTHY) is None


def test_a_leader_gone_past_the_hang_timeout_fails_with_exit_6_and_kills_the_engine_at_once(tmp_path: Path) -> None:
    world = ready_worker(tmp_path)
    outcome = world.until_the_end()
    assert outcome.exit_code == EXIT_HUNG
    assert outcome.kill_at_once == ("engine",)
    assert outcome.summary.startswith("leader has not passed a check for 30 s (--hang-timeout 30 s): it is gone")
    assert outcome.summary.endswith(f"; last check: {REFUSED}")
    assert world.file(NOT_HEALTHY) == outcome.summary + "\n"


def test_a_leader_never_seen_fails_the_worker_at_the_startup_timeout_without_killing_at_once(tmp_path: Path) -> None:
    world = WorkerWorld(tmp_path)
    outcome = world.until_the_end()
    assert outcome.exit_code == EXIT_STARTUP_TIMEOUT
    assert outcome.summary.startswith("leader was not ready after 100 s (--startup-timeout 100 s)")
    assert outcome.kill_at_once == ()
    assert world.clock() - START == pytest.approx(100.0, abs=2 * TICK)


def test_a_workers_engine_exit_fails_it_at_once_with_exit_3(tmp_path: Path) -> None:
    world = ready_worker(tmp_path)
    world.supervisor.exit("engine", 1)
    world.passes("leader")
    outcome = world.tick()
    assert outcome is not None
    assert outcome.exit_code == EXIT_ENGINE_FAILED
    assert outcome.summary.startswith("engine exited (exit status 1)")
    assert world.supervisor.started == [], "a worker's engine is never restarted"


# --- what a run of a worker watches and says ------------------------------------------------

@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return model_folder(tmp_path)


def test_a_worker_watches_its_engine_and_its_leader(model_dir: Path) -> None:
    worker = make_config(model_dir, nodes=2, node_rank=1, leader_address="10.0.0.5")
    assert watched(worker) == ("engine", "leader")


def test_a_leader_watches_its_engine_and_its_proxy(model_dir: Path) -> None:
    leader = make_config(model_dir, nodes=2, node_rank=0, leader_address="10.0.0.5")
    assert watched(leader) == ("engine", "proxy")


def test_a_worker_says_it_starts_its_engine_headless_for_its_leader(model_dir: Path) -> None:
    worker = make_config(model_dir, nodes=3, node_rank=2, leader_address="fd00::5", rendezvous_port=29600)
    assert starting_line(worker) == ("starting the engine headless, node rank 2 of 3, for the leader (node rank 0 "
                                     "of 3) at [fd00::5]:29600 (no proxy, no public port on this node)")
