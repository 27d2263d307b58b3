"""Starts llm-entry for the benchmarks, and keeps the list of everything
started (here and in bench.alone) so that `Runs.stop_all` ends it whatever
happened.

All on 127.0.0.1 and free ports, each program in a process group of its own.
The engine is always the test double (tests/engine_double.py), so every
number is about llm-entry and LiteLLM, not about a model.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import requests

from . import procs
from .watch import probe_ready

REPO = Path(__file__).resolve().parent.parent
ENGINE_DOUBLE = REPO / "tests" / "engine_double.py"
BASELINE_SCRIPT = REPO / "bench" / "baseline_start.sh"
PYTHON = sys.executable
START_DEADLINE = 180.0      # LiteLLM takes 10-30 s to start on a busy 2-core machine
MODEL_NAME = "bench-model"


def new_master_key() -> str:
    return "sk-bench-" + secrets.token_hex(16)


def base_env() -> dict[str, str]:
    """The environment every started program gets: ours, minus what would
    change behaviour (Kubernetes' drain delay, a stray proxy key)."""
    env = dict(os.environ)
    for name in ("KUBERNETES_SERVICE_HOST", "LITELLM_MASTER_KEY", "LLM_ENTRY_MASTER_KEY"):
        env.pop(name, None)
    env = {k: v for k, v in env.items() if not k.startswith(("LLM_ENTRY_", "ENGINE_DOUBLE_"))}
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
    # The same for every side: no internet fetch at import (llm-entry sets
    # these for its own children; the baseline and the proxy alone get them here).
    env["LITELLM_OFFLINE_MODE"] = "true"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def make_model_dir(parent: Path) -> Path:
    model = parent / MODEL_NAME
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text('{"num_attention_heads": 8, "num_key_value_heads": 8}')
    return model


def chat_body(content: str = "hello", stream: bool = False) -> dict:
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return body


def chat_ok(port: int, key: str | None, timeout: float = 2.0, body: dict | None = None) -> bool:
    """One authenticated chat completion answered 200 (what "ready" means to a client)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body or chat_body("ready?"),
                                 headers=headers, timeout=timeout)
        return response.status_code == 200
    except requests.RequestException:
        return False


class Runs:
    """Everything started, so that one call stops it all."""

    def __init__(self, work: Path):
        self.work = work
        self.started: list[tuple[subprocess.Popen, object]] = []

    def folder(self, name: str) -> Path:
        index = len(list(self.work.glob(name + "-*")))
        path = self.work / f"{name}-{index}"
        path.mkdir(parents=True)
        return path

    def track(self, process: subprocess.Popen, owner: object) -> None:
        self.started.append((process, owner))

    def stop_all(self) -> None:
        for process, owner in reversed(self.started):
            procs.stop_group(process, grace=5.0)
            getattr(owner, "kill_leftovers", lambda: None)()
        self.started.clear()


class Entry:
    """One llm-entry and the engine double it runs."""

    def __init__(self, runs: Runs, args: list[str] = (), engine_env: dict[str, str] | None = None,
                 model: Path | None = None):
        self.runs = runs
        self.dir = runs.folder("entry")
        self.port, self.engine_port = procs.free_ports(2)
        self.probe_dir = self.dir / "probe"
        self.master_key = new_master_key()
        self.log = self.dir / "llm-entry.log"
        self.argv = [
            PYTHON, "-m", "entrypoint.cli", "--model", str(model or make_model_dir(self.dir)),
            "--host", "127.0.0.1", "--port", str(self.port), "--engine-port", str(self.engine_port),
            "--probe-dir", str(self.probe_dir), *args,
        ]
        self.env = {
            **base_env(),
            "LLM_ENTRY_MASTER_KEY": self.master_key,
            "LLM_ENTRY_ENGINE_CMD": f"{PYTHON} {ENGINE_DOUBLE}",
            **(engine_env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.launched_at = 0.0
        self._pgids: dict[str, int] = {}
        self._seen: set[procs.Identity] = set()     # every process of the run, while it ran

    def start(self) -> Entry:
        self.launched_at = time.monotonic()
        self.process = procs.launch(self.argv, self.env, self.log, cwd=REPO)
        self.runs.track(self.process, self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and not procs.exited(self.process)

    def ready(self) -> bool:
        return probe_ready(self.probe_dir)

    def has(self, name: str) -> bool:
        return (self.probe_dir / name).exists()

    def wait_ready(self, timeout: float = START_DEADLINE) -> float:
        """Seconds from launch until the probe files say ready."""
        def check():
            if not self.running():
                code = procs.stop_group(self.process)
                raise RuntimeError(f"llm-entry exited with {code}:\n{self.output()[-3000:]}")
            return self.ready()
        procs.wait_for(check, timeout, "llm-entry to be ready")
        self.remember_programs()
        return time.monotonic() - self.launched_at

    def program_pid(self, name: str) -> int:
        """The engine or proxy: the leader of its process group under llm-entry."""
        pid = procs.program_under(self.pid, name)
        if pid is None:
            raise RuntimeError(f"no {name} process under llm-entry")
        return pid

    def supervisord_pid(self) -> int:
        pid = procs.supervisord_under(self.pid)
        if pid is None:
            raise RuntimeError("no supervisord under llm-entry")
        return pid

    def remember_programs(self) -> None:
        for name in ("engine", "proxy"):
            self._pgids[name] = self.program_pid(name)
        self._pgids["supervisord"] = self.supervisord_pid()
        self.record_tree()

    def record_tree(self) -> None:
        """Remember every process of the run (PID and start time), while it runs."""
        if self.running():
            self._seen |= procs.identities(procs.descendants(self.pid))

    def pgid(self, name: str) -> int:
        return self._pgids[name]

    def engine_key(self) -> str:
        """The internal key llm-entry gave the engine, so that a benchmark can
        talk to the engine directly, past the proxy."""
        try:
            key = procs.environment_of(self.pgid("engine")).get("VLLM_API_KEY", "")
        except OSError:
            key = ""
        if not key:
            raise RuntimeError("cannot read the engine's key from /proc (run as the same user)")
        return key

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, grace: float = 40.0) -> int | None:
        """SIGTERM llm-entry (it stops its own children) and reap it; then
        SIGKILL whatever of its run is still alive."""
        assert self.process is not None
        self.record_tree()
        code = procs.stop_group(self.process, grace=grace)
        self.kill_leftovers()
        return code

    def kill_leftovers(self) -> None:
        procs.kill_identities(self._seen)
