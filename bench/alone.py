"""What llm-entry is compared with: the engine double alone, the LiteLLM
proxy alone (started exactly as llm-entry starts it), and the serial
baseline script. Each in a process group of its own, tracked by `Runs`."""

from __future__ import annotations

import subprocess
import time

import requests

from . import procs
from .runner import (BASELINE_SCRIPT, ENGINE_DOUBLE, MODEL_NAME, PYTHON, REPO, Runs, base_env,
                     make_model_dir, new_master_key)


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


def _without(*keys: str):
    def change(yaml: str) -> str:
        return "".join(line for line in yaml.splitlines(keepends=True) if not line.lstrip().startswith(keys))
    return change


def _under(section: str, *lines: str):
    def change(yaml: str) -> str:
        assert f"\n{section}:\n" in yaml, section
        return yaml.replace(f"\n{section}:\n", f"\n{section}:\n" + "".join(f"  {line}\n" for line in lines))
    return change


def _with_section(section: str, *lines: str):
    def change(yaml: str) -> str:
        return yaml.rstrip("\n") + f"\n\n{section}:\n" + "".join(f"  {line}\n" for line in lines)
    return change


class Proxy:
    """The LiteLLM proxy alone, started exactly as llm-entry starts it (same
    command, config, custom auth and environment), in front of `engine`.
    `variant` changes the rendered config, to measure what a line costs or
    what a setting would save: see CONFIG_VARIANTS."""

    # name -> the change to llm-entry's rendered litellm.yaml
    CONFIG_VARIANTS = {
        "llm-entry": lambda yaml: yaml,
        # The key check: LiteLLM's route checks after ours; ours replaced by LiteLLM's master-key check.
        "no common checks": _without("custom_auth_run_common_checks"),
        "master key only": _without("custom_auth"),
        # Settings LiteLLM documents for speed, none of which llm-entry sets today.
        "callbacks left to LiteLLM": _without("callbacks"),
        "no retries, no cooldowns": _with_section("router_settings", "num_retries: 0", "disable_cooldowns: true"),
        "message logging off": _under("litellm_settings", "turn_off_message_logging: true"),
        "spend and error logs off": _under("general_settings", "disable_spend_logs: true",
                                           "disable_error_logs: true"),
    }

    def __init__(self, runs: Runs, engine: Engine, workers: int = 1, variant: str = "llm-entry",
                 extra_args: tuple[str, ...] = ()):
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
            if file.name.endswith((".yaml", ".yml")):
                content = self.CONFIG_VARIANTS[variant](content)
            (self.dir / file.name).write_text(content)
        self.argv = proxy_command(config, PYTHON, self.dir) + list(extra_args)
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

    def start(self) -> "Baseline":
        self.launched_at = time.monotonic()
        self.process = procs.launch(["sh", str(BASELINE_SCRIPT)], self.env, self.dir / "baseline.log")
        self.runs.track(self.process, self)
        return self

    def stop(self) -> None:
        procs.stop_group(self.process)
