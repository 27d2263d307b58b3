"""The command lines and files one run needs, rendered as text.

Nothing here writes or starts anything: functions return text (or argv lists)
and the caller decides where it goes, so tests compare whole rendered files
and `--dry-run` prints exactly what a real start would use.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from . import engine_guard, proxy_relay
from .config import Config

AUTH_MODULE = "llm_entry_auth"
LITELLM_CONFIG = "litellm.yaml"
SUPERVISORD_CONFIG = "supervisord.conf"
PROXY_LOGGING = "proxy-logging.json"
ENGINE_LAUNCH = "engine.launch.json"
PROXY_LAUNCH = "proxy.launch.json"
ENGINE = "engine"
PROXY = "proxy"

# Variables that carry keys. The engine never sees the master key or the
# extra keys: its command strips them from the environment it inherits.
MASTER_KEY_VAR = "LLM_ENTRY_MASTER_KEY"
ENGINE_KEY_VAR = proxy_relay.ENGINE_KEY_VARIABLE
API_KEYS_FILE_VAR = "LLM_ENTRY_API_KEYS_FILE"
KEY_VARS_HIDDEN_FROM_ENGINE = (MASTER_KEY_VAR, "LITELLM_MASTER_KEY", API_KEYS_FILE_VAR)


@dataclass(frozen=True)
class RenderedFile:
    name: str
    content: str


def template(name: str) -> Template:
    return Template(resources.files("entrypoint.templates").joinpath(name).read_text())


def engine_shutdown_timeout(config: Config) -> int:
    """Seconds vLLM may drain on SIGTERM. The proxy has drained first, so the
    engine rarely has work left; a fifth of the grace period is plenty."""
    return max(1, int(config.timing.grace_period // 5))


def engine_command(config: Config) -> list[str]:
    """The vLLM command line. No key is on it: vLLM reads VLLM_API_KEY."""
    args = [
        *config.engine_cmd,
        "--model", config.model,
        "--served-model-name", config.served_model_name,
        "--host", "127.0.0.1",
        "--port", str(config.engine_port),
        "--tensor-parallel-size", str(config.parallel.tensor_parallel_size),
        "--shutdown-timeout", str(engine_shutdown_timeout(config)),
        # Every health check would otherwise write an access log line.
        "--disable-uvicorn-access-log",
    ]
    if config.engine_guarded:
        # vLLM's own key check leaves /invocations, /tokenize, ... open.
        args += ["--middleware", engine_guard.IMPORT_PATH]
    if config.max_model_len is not None:
        args += ["--max-model-len", str(config.max_model_len)]
    if config.gpu_memory_utilization is not None and not config.on_cpu:
        args += ["--gpu-memory-utilization", f"{config.gpu_memory_utilization:g}"]
    return args + list(config.engine_args)


@dataclass(frozen=True)
class LaunchSpec:
    """A program as entrypoint.launch starts it: argv plus environment changes."""

    argv: list[str]
    unset: tuple[str, ...] = ()
    set: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> str:
        return json.dumps({"argv": self.argv, "unset": list(self.unset), "set": dict(self.set)}, indent=1) + "\n"


def engine_launch(config: Config) -> LaunchSpec:
    """The engine drops the proxy's keys from the environment it inherits."""
    return LaunchSpec(engine_command(config), KEY_VARS_HIDDEN_FROM_ENGINE, config.engine_env)


def proxy_launch(config: Config, python: str, run_dir: Path) -> LaunchSpec:
    """The proxy learns where the engine is (the relay calls it directly)."""
    return LaunchSpec(proxy_command(config, python, run_dir), set=(
        (proxy_relay.ENGINE_URL_VARIABLE, engine_base_url(config)),
        (proxy_relay.REQUEST_TIMEOUT_VARIABLE, str(REQUEST_TIMEOUT)),
        # LiteLLM's own switch for the box of links it prints at every start.
        ("LITELLM_DONT_SHOW_FEEDBACK_BOX", "true"),
    ))


def engine_base_url(config: Config) -> str:
    return f"http://127.0.0.1:{config.engine_port}"


def launcher_command(python: str, spec_path: Path) -> list[str]:
    return [python, "-m", "entrypoint.launch", str(spec_path)]


REQUEST_TIMEOUT = 600   # seconds the proxy waits for the engine's answer (or its next chunk)


def proxy_command(config: Config, python: str, run_dir: Path) -> list[str]:
    # LiteLLM's own launcher with the model relay in front of its app.
    return [
        python, "-m", "entrypoint.proxy_server",
        "--config", str(run_dir / LITELLM_CONFIG),
        "--host", config.host,
        "--port", str(config.port),
        "--num_workers", str(config.proxy_workers),
        "--log_config", str(run_dir / PROXY_LOGGING),
    ]


def supervisor_command_line(argv: list[str]) -> str:
    """argv as one supervisord `command=` value (it splits like a shell and
    expands %(...)s, so a literal % is doubled). Only the launcher and a run
    folder path go through here; programs' own argv go in launch specs."""
    return shlex.join(argv).replace("%", "%%")


def render_litellm_config(config: Config) -> str:
    # JSON strings are valid YAML scalars: any model name is quoted safely.
    return template(LITELLM_CONFIG).substitute(
        served_model_name=json.dumps(config.served_model_name, ensure_ascii=False),
        backend_model=json.dumps("hosted_vllm/" + config.served_model_name, ensure_ascii=False),
        engine_url=json.dumps(engine_base_url(config) + "/v1"),
        request_timeout=REQUEST_TIMEOUT,
    )


def render_supervisord_config(config: Config, python: str, run_dir: Path) -> str:
    return template(SUPERVISORD_CONFIG).substitute(
        run_dir=str(run_dir).replace("%", "%%"),
        engine_command=supervisor_command_line(launcher_command(python, run_dir / ENGINE_LAUNCH)),
        proxy_command=supervisor_command_line(launcher_command(python, run_dir / PROXY_LAUNCH)),
        stop_wait=max(1, int(config.timing.grace_period)),
    )


def render_run_files(config: Config, python: str, run_dir: Path) -> list[RenderedFile]:
    """Every file the run folder holds before supervisord starts."""
    return [
        RenderedFile(SUPERVISORD_CONFIG, render_supervisord_config(config, python, run_dir)),
        RenderedFile(LITELLM_CONFIG, render_litellm_config(config)),
        RenderedFile(ENGINE_LAUNCH, engine_launch(config).to_json()),
        RenderedFile(PROXY_LAUNCH, proxy_launch(config, python, run_dir).to_json()),
        RenderedFile(PROXY_LOGGING, template(PROXY_LOGGING).template),
        RenderedFile(AUTH_MODULE + ".py", template(AUTH_MODULE + ".py.tmpl").template),
    ]


def dry_run_text(config: Config, python: str, run_dir: Path) -> str:
    """What --dry-run prints: the plan and every rendered file, and no key."""
    lines = [
        f"# {config.gpus_reason}",
        f"# {config.parallel.reason}",
        "# engine command:",
        shlex.join(engine_command(config)),
        "# engine settings: " + (" ".join(f"{n}={v}" for n, v in config.engine_env) or "none")
        + " (VLLM_API_KEY is generated at every start)",
        f"# {config.proxy_workers_reason}",
        "# proxy command:",
        shlex.join(proxy_command(config, python, run_dir)),
    ]
    for file in render_run_files(config, python, run_dir)[:2]:
        lines += [f"# {file.name}:", file.content.rstrip("\n")]
    return "\n".join(lines) + "\n"
