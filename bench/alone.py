"""What llm-entry is compared with: the engine double alone, the LiteLLM
proxy alone (started exactly as llm-entry starts it), and the serial
baseline script. Each in a process group of its own, tracked by `Runs`."""

from __future__ import annotations

import subprocess
import time

import requests

from . import procs
from .runner import (
    BASELINE_SCRIPT,
    ENGINE_DOUBLE,
    MODEL_NAME,
    PYTHON,
    REPO,
    Runs,
    base_env,
    make_model_dir,
    new_master_key,
)


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

    def start(self) -> Engine:
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
    `route="litellm"` starts it as llm-entry did before the model relay
    (LiteLLM's own launcher and app, so LiteLLM's chat route serves the model
    traffic), to measure what the relay changed."""

    ROUTES = ("relay", "litellm")
    LITELLM_LAUNCHER = ["-c", "from litellm import run_server; run_server()"]

    def __init__(self, runs: Runs, engine: Engine, route: str = "relay"):
        from entrypoint.config import Options, build_config
        from entrypoint.environment import child_environment
        from entrypoint.gpus import NodeGpus
        from entrypoint.inside import names
        from entrypoint.keys import Secret
        from entrypoint.render import proxy_launch, render_run_files

        assert route in self.ROUTES, route
        self.runs = runs
        self.dir = runs.folder("proxy")
        self.port = procs.free_port()
        self.master_key = new_master_key()
        options = Options(model=str(make_model_dir(self.dir)), master_key=self.master_key,
                          host="127.0.0.1", port=self.port, engine_port=engine.port,
                          probe_dir=self.dir / "probe", proxy_workers=1)
        config = build_config(options, {}, lambda: NodeGpus(0, "none"))
        for file in render_run_files(config, PYTHON, self.dir):
            (self.dir / file.name).write_text(file.content)
        (self.dir / names.METRICS_DIR).mkdir()     # the workers' metric files, as run.py makes it
        spec = proxy_launch(config, PYTHON, self.dir)
        self.argv = spec.argv
        if route == "litellm":
            self.argv = [spec.argv[0], *self.LITELLM_LAUNCHER, *spec.argv[3:]]
        self.env = {**child_environment(config, base_env(), Secret(engine.key)), **dict(spec.set)}
        self.env["PYTHONPATH"] = str(REPO)  # the auth shim imports entrypoint
        self.process: subprocess.Popen | None = None
        self.launched_at = 0.0

    def start(self) -> Proxy:
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
        self.port, self.engine_port = procs.free_ports(2)
        self.master_key = new_master_key()
        self.env = {
            **base_env(), **(engine_env or {}),
            "ENGINE_CMD": f"{PYTHON} {ENGINE_DOUBLE}", "MODEL": str(make_model_dir(self.dir)),
            "SERVED_NAME": MODEL_NAME, "ENGINE_PORT": str(self.engine_port), "PORT": str(self.port),
            "WORK_DIR": str(self.dir), "LITELLM_MASTER_KEY": self.master_key,
        }
        self.process: subprocess.Popen | None = None
        self.launched_at = 0.0

    def start(self) -> Baseline:
        self.launched_at = time.monotonic()
        self.process = procs.launch(["sh", str(BASELINE_SCRIPT)], self.env, self.dir / "baseline.log")
        self.runs.track(self.process, self)
        return self

    def stop(self) -> None:
        procs.stop_group(self.process)
