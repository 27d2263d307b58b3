"""The keys' limit counters find a Redis: a private redis-server as a third
supervised program when --api-keys-file meets several proxy workers, or the
one --redis-url names; a start that cannot have either is refused before
anything runs."""

import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import redis

from bench.procs import descendants, environment_of, free_ports, wait_for

from harness import start_redis, stop_redis

EXIT_BAD_CONFIG = 2
FAST_CHECKS = ["--check-interval", "0.5", "--check-timeout", "1", "--unready-after", "2"]
REDIS_PASSWORD = "r3d1s-Pa55w0rd-kQ8zX4vN"
STORAGE_VARIABLE = "LLM_ENTRY_LIMITS_STORAGE"


def limited(entry_factory, tmp_path: Path, args: tuple[str, ...] = (), **kwargs):
    """llm-entry with a keys file and two proxy workers: the keys' limits must be shared."""
    keys = tmp_path / "keys"
    keys.write_text("team-a-5d1c9e7b3a8f2c6e4b0d\n")
    return entry_factory(args=["--api-keys-file", str(keys), "--proxy-workers", "2", *FAST_CHECKS, *args], **kwargs)


def private_redis(entry) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(entry.run_dir() / "redis.sock"), socket_timeout=5)


def assert_refused_before_anything_starts(entry, sentence: str) -> None:
    assert entry.wait_exit() == EXIT_BAD_CONFIG, entry.output()
    assert f"llm-entry: {sentence}\n" in entry.stderr()
    assert not entry.probe_dir.exists(), "the probe files were prepared: the start went too far"
    assert "starting engine" not in entry.output()


def test_a_keys_file_with_two_proxy_workers_runs_a_private_redis_server_on_a_unix_socket_only(
        entry_factory, tmp_path):
    entry = limited(entry_factory, tmp_path)
    entry.start().wait_ready()
    limiter = entry.limiter_pid()
    assert limiter in descendants(entry.pid)
    client = private_redis(entry)
    assert client.ping()
    assert client.config_get("port") == {"port": "0"}
    client.close()
    proxy_environment = environment_of(entry.program_pid("proxy"))
    assert proxy_environment[STORAGE_VARIABLE] == f"async+redis+unix://{entry.run_dir()}/redis.sock"
    assert ("limits: a private redis-server on a unix socket holds them, so 2 proxy workers share exact counts"
            in entry.output())
    assert entry.stop() == 0
    entry.assert_nothing_left()


class ReadinessWatch:
    """Reads the probe files every few milliseconds, in a thread, and keeps
    every moment they did not say ready."""

    def __init__(self, entry):
        self.entry = entry
        self.not_ready: list[str] = []
        self.looks = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ReadinessWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(0.005):
            self.looks += 1
            if not self.entry.ready():
                self.not_ready.append(self.entry.probe_text("not-ready") or "no fresh heartbeat")


def test_a_private_redis_server_killed_with_sigkill_is_said_restarted_and_the_container_stays_ready(
        entry_factory, tmp_path):
    entry = limited(entry_factory, tmp_path)
    entry.start().wait_ready()
    old = entry.limiter_pid()
    with ReadinessWatch(entry) as watch:
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: "limiter exited (terminated by SIGKILL" in entry.output(), 30, "the limiter's exit in the log")
        assert "restarting it (the keys' limit counters start again from zero)" in entry.output()

        def new_limiter():
            pid = entry.limiter_pid()
            return pid if pid not in (None, old) else None
        new = wait_for(new_limiter, 30, "a new limiter")
        wait_for(lambda: private_redis(entry).ping(), 30, "the new limiter to answer")
        assert entry.chat().status_code == 200
    assert watch.looks > 10 and watch.not_ready == [], (watch.looks, watch.not_ready[:3])
    assert new in entry.record_tree()
    assert entry.stop() == 0
    entry.assert_nothing_left()


def test_without_redis_server_on_path_the_start_is_refused(entry_factory, tmp_path):
    entry = limited(entry_factory, tmp_path, env={"PATH": str(Path(sys.executable).parent)})
    entry.start()
    assert_refused_before_anything_starts(
        entry, "--api-keys-file with 2 proxy workers needs redis-server to keep the keys' limits exact across "
               "workers: install it (apt-get install redis-server), or pass --redis-url, or --proxy-workers 1.")


def test_a_redis_url_that_does_not_answer_is_refused(entry_factory, tmp_path):
    (closed,) = free_ports(1)
    entry = limited(entry_factory, tmp_path, args=("--redis-url", f"redis://127.0.0.1:{closed}/0"))
    entry.start()
    assert_refused_before_anything_starts(
        entry, f"cannot reach --redis-url redis://127.0.0.1:{closed}/0 (Connection refused): start that Redis "
               "or correct the URL (host, port, password), or leave --redis-url out to keep the limits in this "
               "container.")


@pytest.fixture
def shared_redis(tmp_path):
    """A redis-server of the test's own, with a password, on a free loopback port."""
    (port,) = free_ports(1)
    server = start_redis(tmp_path, port=port, password=REDIS_PASSWORD)
    try:
        yield port
    finally:
        stop_redis(server)


def test_a_redis_url_starts_no_private_redis_server_and_reaches_only_the_proxy(entry_factory, tmp_path, shared_redis):
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{shared_redis}/0"
    entry = limited(entry_factory, tmp_path, env={"LLM_ENTRY_REDIS_URL": url})
    entry.start().wait_ready()
    assert entry.limiter_pid() is None
    assert environment_of(entry.program_pid("proxy"))[STORAGE_VARIABLE] == "async+" + url
    engine_environment = environment_of(entry.program_pid("engine"))
    assert STORAGE_VARIABLE not in engine_environment
    for pid in descendants(entry.pid):   # llm-entry's own option goes no further than llm-entry
        assert "LLM_ENTRY_REDIS_URL" not in environment_of(pid), pid
    assert (f"limits: the Redis at --redis-url redis://:***@127.0.0.1:{shared_redis}/0 holds them, "
            "shared by every replica that names it") in entry.output()
    assert entry.stop() == 0
    assert REDIS_PASSWORD not in entry.output()
    entry.assert_nothing_left()
