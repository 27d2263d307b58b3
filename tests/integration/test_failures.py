"""Fault injection: the probe files, the exit code and the process table tell
the truth when the engine or the proxy crashes, hangs, or is stopped
(issue: health, probes and failure handling)."""

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from bench.procs import alive, descendants, pgid_of, wait_for

from repo_paths import REPO

EXIT_ENGINE_FAILED, EXIT_PROXY_FAILED, EXIT_STARTUP_TIMEOUT, EXIT_HUNG, EXIT_SUPERVISOR_FAILED = 3, 4, 5, 6, 7
FAST_CHECKS = ["--check-interval", "0.5", "--check-timeout", "1", "--unready-after", "2"]


def probe(entry, name):
    return subprocess.run([str(REPO / "probes" / name), str(entry.probe_dir)],
                          capture_output=True, timeout=10).returncode


def assert_failed(entry, code, *phrases):
    assert entry.wait_exit() == code, entry.output()
    assert entry.has("not-ready") and entry.has("not-healthy")
    summary = entry.stderr()
    for phrase in phrases:
        assert phrase in summary, summary
    assert probe(entry, "liveness") == 1 and probe(entry, "readiness") == 1
    entry.assert_nothing_left()


def assert_stopped(entry):
    """After a requested shutdown (exit 0): not-ready says so, no not-healthy,
    the heartbeat vouches for nothing (liveness fails too), nothing left."""
    assert entry.probe_text("not-ready") == "stopped; exit code 0\n"
    assert not entry.has("not-healthy")
    assert probe(entry, "readiness") == 1 and probe(entry, "liveness") == 1
    entry.assert_nothing_left()


def test_engine_failing_at_start_exits_at_once_with_its_own_error(entry_factory):
    entry = entry_factory(env={"ENGINE_DOUBLE_FAIL_AT_START": "Total number of attention heads (7) must be divisible"})
    entry.start()
    wait_for(lambda: entry.process.poll() is not None or entry.record_tree() and False, 60,
             "llm-entry to give up on the engine")
    assert_failed(entry, EXIT_ENGINE_FAILED, "engine exited", "while starting",
                  "its error: ValueError: Total number of attention heads (7) must be divisible",
                  "llm-entry:   engine | Traceback (most recent call last):")


def exit_engine_when_told(tmp_path, code):
    return {"ENGINE_DOUBLE_EXIT_FILE": str(tmp_path / "exit-now"), "ENGINE_DOUBLE_EXIT_CODE": str(code)}


def test_engine_crash_after_ready_fails_the_container(entry_factory, tmp_path):
    entry = entry_factory(env=exit_engine_when_told(tmp_path, 1), args=FAST_CHECKS)
    entry.start().wait_ready()
    (tmp_path / "exit-now").touch()
    assert_failed(entry, EXIT_ENGINE_FAILED, "engine exited (exit status 1)", "after it was ready")


def test_engine_exit_0_is_still_a_failure(entry_factory, tmp_path):
    entry = entry_factory(env=exit_engine_when_told(tmp_path, 0))
    entry.start().wait_ready()
    (tmp_path / "exit-now").touch()
    assert_failed(entry, EXIT_ENGINE_FAILED, "exit status 0", "engine core dies")


def test_engine_sigkill_is_reported_as_possible_oom_and_leaves_no_worker(entry_factory):
    entry = entry_factory(env={"ENGINE_DOUBLE_WORKERS": "2"})
    entry.start().wait_ready()
    workers = [int(p) for p in entry.pid_file.read_text().split()[1:]]
    assert len(workers) == 2 and all(map(alive, workers))
    os.kill(entry.program_pid("engine"), signal.SIGKILL)
    assert_failed(entry, EXIT_ENGINE_FAILED, "SIGKILL", "out of memory")
    assert not any(map(alive, workers)), "orphaned engine workers survived"


def freeze_the_engine(entry) -> int:
    """Stop the engine's whole process group (SIGSTOP), as a hang looks from outside; returns its PID."""
    engine = entry.program_pid("engine")
    os.killpg(engine, signal.SIGSTOP)
    return engine


def kill_the_proxy(entry) -> int:
    """SIGKILL the proxy and wait until the probe files say not ready; returns the PID it had."""
    proxy = entry.program_pid("proxy")
    os.kill(proxy, signal.SIGKILL)
    wait_for(lambda: entry.has("not-ready"), 30, "not-ready while the proxy is down")
    return proxy


def test_engine_hang_makes_not_ready_and_recovery_makes_ready_again(entry_factory):
    entry = entry_factory(args=[*FAST_CHECKS, "--hang-timeout", "60"])
    entry.start().wait_ready()
    engine = freeze_the_engine(entry)
    try:
        wait_for(lambda: entry.has("not-ready"), 30, "not-ready during the hang")
        assert "engine" in entry.probe_text("not-ready")
        assert probe(entry, "readiness") == 1 and probe(entry, "liveness") == 0
    finally:
        os.killpg(engine, signal.SIGCONT)
    wait_for(entry.ready, 30, "ready again after SIGCONT")
    assert not entry.has("not-healthy")
    assert entry.stop() == 0
    entry.assert_nothing_left()


def test_engine_hang_beyond_the_hang_timeout_makes_not_healthy_and_the_engine_is_killed_at_once(entry_factory):
    entry = entry_factory(args=[*FAST_CHECKS, "--hang-timeout", "4"])
    entry.start().wait_ready()
    freeze_the_engine(entry)
    wait_for(lambda: entry.has("not-healthy"), 30, "not-healthy after the hang timeout", poll=0.02)
    assert entry.wait_exit() == EXIT_HUNG
    # A stopped engine ignores SIGTERM: sending it one and waiting for its
    # deadline would cost the whole stop budget for nothing.
    assert "engine looks hung: killing its process group at once" in entry.output()
    assert "engine did not stop in time" not in entry.output()
    assert_failed(entry, EXIT_HUNG, "engine has not passed a check", "hung")


def test_engine_health_503_makes_not_ready_until_it_recovers(entry_factory, tmp_path):
    status = tmp_path / "health-status"
    entry = entry_factory(env={"ENGINE_DOUBLE_HEALTH_STATUS_FILE": str(status)}, args=FAST_CHECKS)
    entry.start().wait_ready()
    status.write_text("503")
    wait_for(lambda: entry.has("not-ready"), 30, "not-ready while /health is 503")
    assert "503" in entry.probe_text("not-ready")
    assert not entry.has("not-healthy") and probe(entry, "liveness") == 0
    status.unlink()
    wait_for(entry.ready, 30, "ready again")
    assert entry.stop() == 0
    assert_stopped(entry)


def test_proxy_crash_restarts_it_in_place(entry_factory):
    entry = entry_factory(args=FAST_CHECKS)
    entry.start().wait_ready()
    first = kill_the_proxy(entry)
    assert not entry.has("not-healthy")
    entry.wait_ready()
    assert entry.program_pid("proxy") != first
    assert entry.chat("again").status_code == 200
    assert "restarting it" in entry.output()
    assert entry.stop() == 0
    entry.assert_nothing_left()


def test_proxy_crashing_too_often_gives_up(entry_factory):
    entry = entry_factory(args=[*FAST_CHECKS, "--max-restarts", "1"])
    entry.start().wait_ready()
    kill_the_proxy(entry)
    entry.wait_ready()
    entry.record_tree()
    os.kill(entry.program_pid("proxy"), signal.SIGKILL)
    assert_failed(entry, EXIT_PROXY_FAILED, "proxy exited", "gave up after 1 restarts")


def test_startup_timeout_makes_not_healthy(entry_factory):
    entry = entry_factory(env={"ENGINE_DOUBLE_STARTUP_DELAY": "300"}, args=["--startup-timeout", "3"])
    entry.start()
    wait_for(lambda: entry.record_tree() and entry.process.poll() is not None, 60, "the start-up deadline")
    assert_failed(entry, EXIT_STARTUP_TIMEOUT, "--startup-timeout 3")


def test_engine_restart_policy_always_restarts_the_engine_without_its_old_workers(entry_factory):
    entry = entry_factory(env={"ENGINE_DOUBLE_WORKERS": "2"},
                          args=[*FAST_CHECKS, "--engine-restart", "always", "--max-restarts", "5"])
    entry.start().wait_ready()
    first = entry.program_pid("engine")
    old_workers = [int(p) for p in entry.pid_file.read_text().split()[1:]]
    assert len(old_workers) == 2
    os.kill(first, signal.SIGKILL)  # its workers stay behind in its process group
    wait_for(lambda: "engine exited" in entry.output(), 30, "the engine to exit")
    assert not entry.has("not-healthy")
    wait_for(lambda: entry.ready() and _engine_pid_or_none(entry) not in (None, first), 30, "a new engine")
    assert not any(map(alive, old_workers)), "the old engine's workers survived its restart"
    assert entry.process.poll() is None
    assert entry.stop() == 0
    assert_stopped(entry)


def _engine_pid_or_none(entry):
    try:
        return entry.program_pid("engine")
    except AssertionError:
        return None


def test_stale_heartbeat_fails_both_probes(entry_factory):
    entry = entry_factory(args=["--heartbeat-ttl", "2"])
    entry.start().wait_ready()
    assert probe(entry, "liveness") == 0 and probe(entry, "readiness") == 0
    os.kill(entry.pid, signal.SIGSTOP)  # the monitor freezes; the files do not change
    try:
        wait_for(lambda: probe(entry, "liveness") == 1, 30, "liveness to fail on a stale heartbeat", poll=0.5)
        assert probe(entry, "readiness") == 1
        assert not entry.has("not-ready"), "the files alone would still say ready"
    finally:
        os.kill(entry.pid, signal.SIGCONT)
    wait_for(lambda: probe(entry, "liveness") == 0, 30, "a fresh heartbeat after SIGCONT", poll=0.5)
    assert entry.stop() == 0
    assert_stopped(entry)


def test_sigterm_during_startup_stops_an_engine_that_ignores_it(entry_factory):
    entry = entry_factory(env={"ENGINE_DOUBLE_STARTUP_DELAY": "300",
                               "ENGINE_DOUBLE_IGNORE_SIGTERM_DURING_STARTUP": "1"})
    entry.start()
    wait_for(lambda: entry.pid_file.exists(), 60, "the engine double to start its workers")
    entry.record_tree()
    assert entry.stop(timeout=30) == 0, entry.output()
    assert "killed its process group" in entry.output()
    assert_stopped(entry)


def test_sigterm_before_the_monitor_saw_the_engine_still_stops_its_whole_group(entry_factory):
    """The monitor takes a SIGTERM before it ever learnt the engine's process
    group from supervisord: the shutdown must ask for it itself. llm-entry is
    frozen (as on a busy machine) from supervisord's start until the engine
    runs, so its first look at the programs comes after the signal."""
    entry = entry_factory(env={"ENGINE_DOUBLE_STARTUP_DELAY": "300", "ENGINE_DOUBLE_WORKERS": "2",
                               "ENGINE_DOUBLE_IGNORE_SIGTERM_DURING_STARTUP": "1"})
    entry.start()
    wait_for(entry.supervisord_pid, 60, "supervisord to start", poll=0.01)
    os.kill(entry.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: entry.pid_file.exists() and len(entry.pid_file.read_text().split()) == 3, 60,
                 "the engine and its two workers")
        engine_processes = {int(p) for p in entry.pid_file.read_text().split()}
        entry.send(signal.SIGTERM)
    finally:
        os.kill(entry.pid, signal.SIGCONT)
    # Within the default grace period (25 s) and Kubernetes' 30 s.
    assert entry.wait_exit(timeout=30) == 0, entry.output()
    assert not any(map(alive, engine_processes)), "the engine outlived llm-entry"
    assert_stopped(entry)


def test_supervisord_not_answering_makes_not_ready_the_heartbeat_goes_on_and_it_fails_after_the_hang_timeout(
        entry_factory):
    entry = entry_factory(args=[*FAST_CHECKS, "--hang-timeout", "6"])
    entry.start().wait_ready()
    supervisord = wait_for(entry.supervisord_pid, 10, "supervisord's pid")
    entry.record_tree()
    os.kill(supervisord, signal.SIGSTOP)
    try:
        wait_for(lambda: "supervisord not answering" in entry.probe_text("not-ready"), 30,
                 "not-ready that names supervisord")
        beat = int(entry.probe_text("heartbeat"))
        wait_for(lambda: int(entry.probe_text("heartbeat") or 0) >= beat + 2, 30, "the heartbeat to go on")
        assert probe(entry, "readiness") == 1 and probe(entry, "liveness") == 0
        assert entry.wait_exit() == EXIT_SUPERVISOR_FAILED, entry.output()
    finally:
        try:
            os.kill(supervisord, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "supervisord has not answered" in entry.probe_text("not-healthy")
    assert probe(entry, "liveness") == 1
    entry.assert_nothing_left()


def _stream_in_background(entry, results):
    def run():
        try:
            response = entry.chat("drain me", stream=True)
            results["status"] = response.status_code
            results["lines"] = [line for line in response.iter_lines(decode_unicode=True)
                                if line.startswith("data: ")]
        except requests.RequestException as error:
            results["error"] = repr(error)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_a_stream_in_flight_finish(entry_factory, workers):
    # Two workers: GPU nodes get several by default (uvicorn's supervisor
    # forwards SIGTERM to each worker, which drains like a single one).
    entry = entry_factory(env={"ENGINE_DOUBLE_TOKENS": "20", "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.2"},
                          args=["--proxy-workers", workers])
    entry.start().wait_ready()
    results: dict = {}
    thread = _stream_in_background(entry, results)
    wait_for(lambda: _in_flight(entry), 30, "the stream to reach the engine")
    entry.send(signal.SIGTERM)
    assert entry.wait_exit() == 0, entry.output()
    thread.join(30)
    assert results.get("status") == 200, results
    assert results["lines"][-1] == "data: [DONE]", results
    assert len(results["lines"]) >= 21
    assert_stopped(entry)


def _in_flight(entry) -> bool:
    # The double counts requests in flight on /metrics (open, like vLLM's).
    try:
        text = requests.get(f"http://127.0.0.1:{entry.engine_port}/metrics", timeout=2).text
    except requests.RequestException:
        return False
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.split()[-1]) >= 1
    return False


def test_second_sigterm_cuts_the_drain_short(entry_factory):
    # The stream needs 80 s and the grace period would let the drain wait for
    # it: only the second signal can end the run before the stream ends.
    entry = entry_factory(env={"ENGINE_DOUBLE_TOKENS": "400", "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.2"},
                          args=["--grace-period", "150"])
    entry.start().wait_ready()
    results: dict = {}
    thread = _stream_in_background(entry, results)
    wait_for(lambda: _in_flight(entry), 30, "the stream to reach the engine")
    entry.send(signal.SIGTERM)
    wait_for(lambda: "shutting down" in entry.output(), 10, "the shutdown to begin")
    entry.send(signal.SIGTERM)
    assert entry.wait_exit(timeout=60) == 0, entry.output()
    assert "second signal" in entry.output()
    thread.join(30)
    assert results.get("lines", [])[-1:] != ["data: [DONE]"], "the stream was drained, not cut"
    assert_stopped(entry)


def test_as_pid_1_orphaned_workers_are_killed_and_reaped(entry_factory):
    """In a PID namespace llm-entry is PID 1: the engine's orphaned workers
    are re-parented to it, and it must kill them and reap every child."""
    unshare = ["unshare", "--pid", "--fork", "--kill-child"]
    entry = entry_factory(env={"ENGINE_DOUBLE_WORKERS": "2"}, wrapper=unshare)
    entry.start().wait_ready()
    nspid = next(line for line in Path(f"/proc/{entry.pid}/status").read_text().splitlines()
                 if line.startswith("NSpid:"))
    assert nspid.split()[-1] == "1", f"llm-entry is not PID 1 in its namespace: {nspid}"
    engine = entry.program_pid("engine")
    # PIDs as seen from here (the double's pid file holds the namespace's own).
    workers = [pid for pid in descendants(engine) if pgid_of(pid) == engine]
    assert len(workers) == 2
    os.kill(engine, signal.SIGKILL)
    assert entry.wait_exit() == EXIT_ENGINE_FAILED, entry.output()
    assert not any(map(alive, workers))
    assert entry.has("not-ready") and entry.has("not-healthy")
    assert "engine exited" in entry.probe_text("not-healthy")
    entry.assert_nothing_left()


def test_as_pid_1_a_sigterm_while_the_demo_model_builds_stops_it(entry_factory, tmp_path):
    """PID 1 ignores a signal it has no handler for: the handlers come before
    the demo model's build, so a SIGTERM then still stops the container."""
    unshare = ["unshare", "--pid", "--fork", "--kill-child"]
    entry = entry_factory(model="demo", args=["--cache-dir", str(tmp_path / "cache")], wrapper=unshare)
    entry.start()
    wait_for(lambda: "demo model:" in entry.output(), 60, "the demo model's build to begin")
    llm_entry = entry.pid
    entry.send(signal.SIGTERM)
    assert entry.wait_exit(timeout=90) == 0, entry.output()
    assert entry.has("not-ready") and not entry.has("not-healthy")
    # Whether the signal came during the build (nothing started) or just
    # after it (the usual shutdown), nothing of the run may be left.
    wait_for(lambda: not alive(llm_entry), 10, "llm-entry to be gone")
    wait_for(lambda: not [p for p in entry.seen if alive(p)], 10, "every process of the run to be gone")
