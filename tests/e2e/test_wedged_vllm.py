"""The real engine answering /health while it cannot generate: vLLM's engine
core stopped (SIGSTOP) looks from the API server as a lost node does. The
engine check's proof of generation makes the container not ready, and ready
again once the core runs."""

import os
import signal
from pathlib import Path

import requests

from bench.procs import wait_for

from harness import Entry

VLLM_START_DEADLINE = 600.0


def engine_core(entry: Entry) -> int:
    for pid in entry.record_tree():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"VLLM::EngineCore"):
            return pid
    raise AssertionError("no VLLM::EngineCore process in the engine's tree")


def test_a_stopped_engine_core_makes_not_ready_though_health_answers_and_ready_again_after(tmp_path):
    import vllm  # noqa: F401  (fails loudly, never skips)

    from entrypoint.engine_options import default_engine_cmd
    entry = Entry(tmp_path, model="demo", engine_cmd=" ".join(default_engine_cmd()),
                  args=["--cache-dir", str(tmp_path / "cache"), "--hang-timeout", "300"],
                  env={"HF_HUB_OFFLINE": "1"})
    entry.served_model_name = "demo"
    entry.start()
    core = None
    try:
        entry.wait_ready(VLLM_START_DEADLINE)
        core = engine_core(entry)
        os.kill(core, signal.SIGSTOP)
        wait_for(lambda: entry.has("not-ready"), 60, "not-ready while the engine core is stopped")
        assert "one token was not generated" in entry.probe_text("not-ready"), entry.probe_text("not-ready")
        health = requests.get(f"http://127.0.0.1:{entry.engine_port}/health", timeout=10)
        assert health.status_code == 200, "vLLM's /health no longer hides a stopped core: revisit engine_proof"
        os.kill(core, signal.SIGCONT)
        core = None
        wait_for(entry.ready, 120, "ready again once the core runs")
        assert not entry.has("not-healthy")
        assert entry.stop() == 0
        entry.assert_nothing_left()
    finally:
        if core is not None:
            os.kill(core, signal.SIGCONT)
        entry.kill_everything()
