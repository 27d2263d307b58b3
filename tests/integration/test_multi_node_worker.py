"""A worker of a multi-node group (--node-rank 1 and up), with the engine
double as its headless engine and a listening socket of the test's own as
its leader's rendezvous port: it runs no proxy and opens no public port, it
waits for its leader within --startup-timeout and says whom it waits for,
and it exits non-zero once its leader is gone. The real two-node group runs
in tests/e2e/test_multi_node.py."""

from __future__ import annotations

import socket
import time

import pytest

from bench.procs import cmdline, free_ports, wait_for

EXIT_BAD_CONFIG = 2
EXIT_STARTUP_TIMEOUT = 5
EXIT_HUNG = 6
FAST_CHECKS = ["--check-interval", "0.5", "--check-timeout", "1", "--unready-after", "2"]


def worker_args(rendezvous_port: int, *more: str) -> list[str]:
    return ["--nodes", "2", "--node-rank", "1", "--leader-address", "127.0.0.1",
            "--rendezvous-port", str(rendezvous_port), *more]


def leader_expected(port: int) -> str:
    return f"the leader (node rank 0 of 2) at 127.0.0.1:{port}"


@pytest.fixture
def rendezvous():
    """A stand-in for the leader's rendezvous port: it listens until closed."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def program_lines(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"{name} ") and "|" in line[:12]]


def test_a_worker_whose_leader_never_comes_is_not_healthy_at_the_startup_timeout_and_names_it(entry_factory):
    (port,) = free_ports(1)
    entry = entry_factory(args=worker_args(port, *FAST_CHECKS, "--startup-timeout", "5"))
    entry.start()
    wait_for(lambda: leader_expected(port) in entry.probe_text("not-ready"), 30,
             "not-ready to name the leader the worker waits for")
    entry.record_tree()
    assert entry.wait_exit(60) == EXIT_STARTUP_TIMEOUT
    assert leader_expected(port) in entry.probe_text("not-healthy")
    last_lines = entry.stderr()
    assert "--startup-timeout 5 s" in last_lines and leader_expected(port) in last_lines
    assert not program_lines(entry.output(), "proxy"), "a worker runs no proxy"
    entry.assert_nothing_left()


def test_a_worker_serves_nothing_itself_and_exits_once_its_leader_is_gone(entry_factory, rendezvous):
    port = rendezvous.getsockname()[1]
    entry = entry_factory(args=worker_args(port, *FAST_CHECKS, "--hang-timeout", "4"))
    entry.start().wait_ready(60)
    assert f"runs its part of model {entry.served_model_name!r} for {leader_expected(port)}" in entry.output()
    engine = entry.program_pid("engine")
    assert b"--headless" in cmdline(engine), "the worker's engine runs headless"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", entry.port), timeout=2).close()   # no public port
    assert not program_lines(entry.output(), "proxy"), "a worker runs no proxy"
    entry.record_tree()

    rendezvous.close()
    gone_at = time.monotonic()
    wait_for(lambda: entry.has("not-ready"), 15, "not-ready once the leader is gone")
    assert leader_expected(port) in entry.probe_text("not-ready")
    assert entry.wait_exit(30) == EXIT_HUNG
    took = time.monotonic() - gone_at
    assert "it is gone, and a worker cannot serve without it" in entry.stderr()
    assert "engine has lost its leader: killing its process group at once" in entry.output()
    assert took < 4 + 10, f"exited {took:.1f} s after the leader went"   # --hang-timeout plus slack
    entry.assert_nothing_left()


def test_a_leader_whose_rendezvous_port_is_taken_refuses_to_start(entry_factory, rendezvous):
    port = rendezvous.getsockname()[1]
    entry = entry_factory(args=["--nodes", "2", "--node-rank", "0", "--leader-address", "127.0.0.1",
                                "--rendezvous-port", str(port)])
    entry.start()
    assert entry.wait_exit(30) == EXIT_BAD_CONFIG
    assert f"--rendezvous-port {port} is already in use" in entry.stderr()
    assert "starting engine" not in entry.output(), "nothing may start before the check"
