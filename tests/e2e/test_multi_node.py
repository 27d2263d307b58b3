"""One model across two "nodes" on this machine: a leader and a worker
llm-entry, each with the real vLLM (CPU build) pinned to its own core, in
vLLM's native multi-node mode (a pipeline stage per node). They start in
either order and both become ready; a chat through the leader is answered by
the 2-stage pipeline; a lost worker is seen at the leader (not ready within
15 s, not healthy after --hang-timeout); a stopped leader makes the worker
exit; SIGTERM to both leaves nothing running.

Every address is loopback: VLLM_HOST_IP and GLOO_SOCKET_IFNAME keep vLLM's
queues and gloo on 127.0.0.1 (in a cluster they are the pod's address and
interface: docs/multi-node.md). No skip: a missing vLLM is an error here.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import openai

from bench.procs import cmdline, free_ports, wait_for

from harness import MASTER_KEY, Entry
from repo_paths import REPO

VLLM_START_DEADLINE = 600.0   # two engines compiling on 2 busy cores
NOT_READY_WITHIN = 15.0       # the bound for a lost worker at the leader
LEADER_HANG_TIMEOUT = 20.0
WORKER_HANG_TIMEOUT = 10.0
EXIT_ENGINE_FAILED = 3
EXIT_HUNG = 6


def node(tmp: Path, rank: int, rendezvous_port: int, cache: Path, hang_timeout: float) -> Entry:
    import vllm  # noqa: F401  (fails loudly, never skips)

    from entrypoint.engine_options import default_engine_cmd
    folder = tmp / f"node{rank}"
    folder.mkdir()
    entry = Entry(folder, model="demo", engine_cmd=" ".join(default_engine_cmd()), args=[
        "--cache-dir", str(cache), "--nodes", "2", "--node-rank", str(rank), "--leader-address", "127.0.0.1",
        "--rendezvous-port", str(rendezvous_port), "--hang-timeout", f"{hang_timeout:g}",
    ], env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": str(rank), "VLLM_HOST_IP": "127.0.0.1",
            "GLOO_SOCKET_IFNAME": "lo"})
    entry.served_model_name = "demo"
    if rank > 0:
        entry.env.pop("LLM_ENTRY_MASTER_KEY")   # a worker serves nothing: it needs no key
    return entry


def group(tmp: Path) -> tuple[Entry, Entry]:
    from entrypoint.demo.model import ensure_demo_model
    cache = tmp / "cache"
    ensure_demo_model(cache)   # once, before two runs would build it side by side
    (port,) = free_ports(1)
    return (node(tmp, 0, port, cache, LEADER_HANG_TIMEOUT), node(tmp, 1, port, cache, WORKER_HANG_TIMEOUT))


def startup_passes(entry: Entry) -> bool:
    """Kubernetes' verdict: the image's startup probe script, with the run alive."""
    import subprocess
    if entry.process.poll() is not None:
        raise AssertionError(f"llm-entry exited with {entry.process.returncode}\n{entry.output()}")
    probe = subprocess.run(["sh", str(REPO / "probes" / "startup"), str(entry.probe_dir)],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    return probe.returncode == 0


def wait_both_ready(leader: Entry, worker: Entry) -> None:
    wait_for(lambda: startup_passes(leader) and startup_passes(worker), VLLM_START_DEADLINE,
             "both nodes' startup probes to pass", poll=0.2)
    wait_for(lambda: leader.ready() and worker.ready(), 30, "both nodes ready")
    leader.record_tree()
    worker.record_tree()


def chat_fingerprint(leader: Entry) -> str:
    client = openai.OpenAI(base_url=leader.url("/v1"), api_key=MASTER_KEY, max_retries=0, timeout=120)
    answer = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello"}],
                                            max_tokens=4)
    assert answer.choices[0].message.content
    return answer.system_fingerprint or ""


def assert_worker_is_headless(worker: Entry) -> None:
    assert b"--headless" in cmdline(worker.program_pid("engine"))
    lines = worker.output().splitlines()
    assert not [line for line in lines if line.startswith("proxy ")], "a worker runs no proxy"


def seconds_until(condition, limit: float, what: str, since: float) -> float:
    wait_for(condition, limit, what, poll=0.1)
    return time.monotonic() - since


def test_worker_first_then_leader_serve_as_a_pipeline_and_a_lost_worker_is_seen_at_the_leader(tmp_path):
    leader, worker = group(tmp_path)
    try:
        worker.start()
        wait_for(lambda: "the leader (node rank 0 of 2)" in worker.probe_text("not-ready"), 60,
                 "the worker to say whom it waits for")
        leader.start()
        wait_both_ready(leader, worker)
        assert "-pp2-" in chat_fingerprint(leader)
        assert_worker_is_headless(worker)

        os.kill(worker.program_pid("engine"), signal.SIGKILL)
        killed = time.monotonic()
        assert worker.wait_exit(60) == EXIT_ENGINE_FAILED
        not_ready = seconds_until(lambda: leader.has("not-ready"), 60, "the leader not ready", killed)
        assert not_ready <= NOT_READY_WITHIN, f"the leader went not ready {not_ready:.1f} s after the worker died"
        assert "one token was not generated" in leader.probe_text("not-ready")
        not_healthy = seconds_until(lambda: leader.has("not-healthy"), 120, "the leader not healthy", killed)
        assert not_healthy <= LEADER_HANG_TIMEOUT + 5, f"not healthy after {not_healthy:.1f} s"
        assert leader.wait_exit(60) == EXIT_HUNG
        leader.assert_nothing_left(30)
        worker.assert_nothing_left(30)
    finally:
        worker.kill_everything()
        leader.kill_everything()


def test_leader_first_then_worker_and_a_stopped_leader_makes_the_worker_exit(tmp_path):
    leader, worker = group(tmp_path)
    try:
        leader.start()
        wait_for(lambda: leader.has("not-ready"), 60, "the leader to start")
        worker.start()
        wait_both_ready(leader, worker)
        assert "-pp2-" in chat_fingerprint(leader)

        assert leader.stop(60) == 0
        code = worker.wait_exit(WORKER_HANG_TIMEOUT + 60)
        assert code == EXIT_HUNG, worker.output()[-3000:]
        assert "leader has not passed a check" in worker.stderr()
        assert "it is gone" in worker.stderr()
        leader.assert_nothing_left(30)
        worker.assert_nothing_left(30)
    finally:
        worker.kill_everything()
        leader.kill_everything()


def test_sigterm_to_both_nodes_leaves_nothing_running(tmp_path):
    leader, worker = group(tmp_path)
    try:
        leader.start()
        worker.start()
        wait_both_ready(leader, worker)
        leader.send(signal.SIGTERM)
        worker.send(signal.SIGTERM)
        assert leader.wait_exit(60) == 0
        assert worker.wait_exit(60) == 0
        leader.assert_nothing_left(30)
        worker.assert_nothing_left(30)
    finally:
        worker.kill_everything()
        leader.kill_everything()
