"""Starts what the benchmarks measure: llm-entry, the engine double alone,
the proxy alone (as llm-entry runs it) and the baseline script.

All on 127.0.0.1 and free ports, each in a process group of its own that
`Runs.stop_all` ends whatever happened. The engine is always the test double
(tests/engine_double.py), so every number is about llm-entry and LiteLLM,
not about a model.
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


def chat_ok(port: int, key: str | None, timeout: float = 2.0) -> bool:
    """One authenticated chat completion answered 200 (what "ready" means to a client)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body("ready?"),
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
            extra = getattr(owner, "known_pgids", lambda: set())()
            procs.stop_group(process, grace=5.0, extra_pgids=extra)
        self.started.clear()


class Entry:
    """One llm-entry and the engine double it runs."""

    def __init__(self, runs: Runs, args: list[str] = (), engine_env: dict[str, str] | None = None):
        self.runs = runs
        self.dir = runs.folder("entry")
        self.port = procs.free_port()
        self.engine_port = procs.free_port()
        self.probe_dir = self.dir / "probe"
        self.master_key = new_master_key()
        self.log = self.dir / "llm-entry.log"
        self.argv = [
            PYTHON, "-m", "entrypoint.cli", "--model", str(make_model_dir(self.dir)),
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

    def start(self) -> "Entry":
        self.launched_at = time.monotonic()
        self.process = procs.launch(self.argv, self.env, self.log, cwd=REPO)
        self.runs.track(self.process, self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        return (self.probe_dir / "heartbeat").exists() and not self.has("not-ready")

    def has(self, name: str) -> bool:
        return (self.probe_dir / name).exists()

    def wait_ready(self, timeout: float = START_DEADLINE) -> float:
        """Seconds from launch until the probe files say ready."""
        def check():
            if not self.running():
                raise RuntimeError(f"llm-entry exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            return self.ready()
        procs.wait_for(check, timeout, "llm-entry to be ready")
        self.remember_programs()
        return time.monotonic() - self.launched_at

    def program_pid(self, name: str) -> int:
        """The engine or proxy: the leader of its process group under llm-entry."""
        for pid in procs.descendants(self.pid):
            parts = procs.cmdline(pid)
            is_engine = any(b"engine_double" in part for part in parts)
            is_proxy = any(b"run_server" in part for part in parts)
            if procs.pgid_of(pid) == pid and ((name == "engine" and is_engine) or (name == "proxy" and is_proxy)):
                return pid
        raise RuntimeError(f"no {name} process under llm-entry")

    def supervisord_pid(self) -> int:
        for pid in procs.children_of(self.pid):
            if any(b"supervisord" in part for part in procs.cmdline(pid)):
                return pid
        raise RuntimeError("no supervisord under llm-entry")

    def remember_programs(self) -> None:
        for name in ("engine", "proxy"):
            self._pgids[name] = self.program_pid(name)
        self._pgids["supervisord"] = self.supervisord_pid()

    def known_pgids(self) -> set[int]:
        return set(self._pgids.values())

    def pgid(self, name: str) -> int:
        return self._pgids[name]

    def engine_key(self) -> str:
        """The internal key llm-entry gave the engine, so that a benchmark can
        talk to the engine directly, past the proxy."""
        key = procs.environ(self.pgid("engine")).get("VLLM_API_KEY", "")
        if not key:
            raise RuntimeError("cannot read the engine's key from /proc (run as the same user)")
        return key

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, grace: float = 40.0) -> int | None:
        assert self.process is not None
        if self.running() and not self._pgids:
            try:
                self.remember_programs()
            except RuntimeError:
                pass  # not all started yet: supervisord stops them when we go
        return procs.stop_group(self.process, grace=grace, extra_pgids=self.known_pgids())


class Engine:
    """The engine double alone, with a key of our own."""

    def __init__(self, runs: Runs, startup_delay: float = 0.0, extra_env: dict[str, str] | None = None):
        self.runs = runs
        self.dir = runs.folder("engine")
        self.port = procs.free_port()
        self.key = new_master_key()
        self.startup_delay = startup_delay
        self.argv = [PYTHON, str(ENGINE_DOUBLE), "--model", str(make_model_dir(self.dir)),
                     "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(self.port)]
        self.env = {**base_env(), "VLLM_API_KEY": self.key,
                    "ENGINE_DOUBLE_STARTUP_DELAY": str(startup_delay), **(extra_env or {})}
        self.process: subprocess.Popen | None = None
        self.launched_at = 0.0

    def start(self) -> "Engine":
        self.launched_at = time.monotonic()
        self.process = procs.launch(self.argv, self.env, self.dir / "engine.log")
        self.runs.track(self.process, self)
        return self

    def healthy(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        procs.stop_group(self.process)


class Proxy:
    """The LiteLLM proxy alone, started exactly as llm-entry starts it (same
    command, config, custom auth and environment), in front of `engine`.
    `custom_auth=False` drops llm-entry's key check from the config, leaving
    LiteLLM's own master-key check: the one difference, to measure its cost."""

    def __init__(self, runs: Runs, engine: Engine, workers: int = 1, custom_auth: bool = True):
        from entrypoint.config import Options, build_config
        from entrypoint.gpus import NodeGpus
        from entrypoint.keys import Secret
        from entrypoint.render import proxy_command, render_run_files
        from entrypoint.run import child_environment

        self.runs = runs
        self.dir = runs.folder("proxy")
        self.port = procs.free_port()
        self.master_key = new_master_key()
        options = Options(model=str(make_model_dir(self.dir)), master_key=self.master_key,
                          host="127.0.0.1", port=self.port, engine_port=engine.port,
                          probe_dir=self.dir / "probe", proxy_workers=workers)
        config = build_config(options, {}, lambda: NodeGpus(0, "none"))
        for file in render_run_files(config, PYTHON, self.dir):
            content = file.content
            if file.name.endswith((".yaml", ".yml")) and not custom_auth:
                content = "".join(line for line in content.splitlines(keepends=True)
                                  if not line.lstrip().startswith("custom_auth"))
            (self.dir / file.name).write_text(content)
        self.argv = proxy_command(config, PYTHON, self.dir)
        self.env = child_environment(config, base_env(), Secret(engine.key))
        self.env["PYTHONPATH"] = str(REPO)  # the auth shim imports entrypoint
        self.process: subprocess.Popen | None = None
        self.launched_at = 0.0

    def start(self) -> "Proxy":
        self.launched_at = time.monotonic()
        self.process = procs.launch(self.argv, self.env, self.dir / "proxy.log", cwd=self.dir)
        self.runs.track(self.process, self)
        return self

    def stop(self) -> None:
        procs.stop_group(self.process)


class Baseline:
    """bench/baseline_start.sh: engine, poll, then proxy, poll."""

    def __init__(self, runs: Runs, engine_env: dict[str, str] | None = None):
        self.runs = runs
        self.dir = runs.folder("baseline")
        self.port = procs.free_port()
        self.engine_port = procs.free_port()
        self.master_key = new_master_key()
        self.env = {
            **base_env(), **(engine_env or {}),
            "ENGINE_CMD": f"{PYTHON} {ENGINE_DOUBLE}", "MODEL": str(make_model_dir(self.dir)),
            "SERVED_NAME": MODEL_NAME, "ENGINE_PORT": str(self.engine_port), "PORT": str(self.port),
            "WORK_DIR": str(self.dir), "LITELLM_MASTER_KEY": self.master_key,
        }
        self.process: subprocess.Popen | None = None
        self.launched_at = 0.0

    def start(self) -> "Baseline":
        self.launched_at = time.monotonic()
        self.process = procs.launch(["sh", str(BASELINE_SCRIPT)], self.env, self.dir / "baseline.log")
        self.runs.track(self.process, self)
        return self

    def stop(self) -> None:
        procs.stop_group(self.process)
