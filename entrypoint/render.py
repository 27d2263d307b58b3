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

from .config import Config
from .inside import engine_guard, names
from .inside.names import ENGINE, LIMITER, PROXY
from .limiter_store import private_socket
from .shutdown_plan import shutdown_plan

AUTH_MODULE = "llm_entry_auth"
LITELLM_CONFIG = "litellm.yaml"
SUPERVISORD_CONFIG = "supervisord.conf"
SUPERVISORD_LIMITER = "supervisord-limiter.conf"
SUPERVISORD_PROXY = "supervisord-proxy.conf"
REDIS_CONFIG = "redis.conf"
PROXY_LOGGING = "proxy-logging.json"
ENGINE_LAUNCH = "engine.launch.json"
PROXY_LAUNCH = "proxy.launch.json"
LIMITER_LAUNCH = "limiter.launch.json"

# Variables that carry keys. The engine never sees the master key or the
# extra keys: its command strips them from the environment it inherits.
KEY_VARS_HIDDEN_FROM_ENGINE = (names.MASTER_KEY_VARIABLE, names.LITELLM_MASTER_KEY_VARIABLE,
                               names.API_KEYS_FILE_VARIABLE)
# redis-server needs none of them.
KEY_VARS_HIDDEN_FROM_LIMITER = (*KEY_VARS_HIDDEN_FROM_ENGINE, names.ENGINE_KEY_VARIABLE,
                                names.ENGINE_API_KEY_VARIABLE)


@dataclass(frozen=True)
class RenderedFile:
    name: str
    content: str


def template(name: str) -> Template:
    return Template(resources.files("entrypoint.templates").joinpath(name).read_text())


def engine_command(config: Config) -> list[str]:
    """The vLLM command line. No key is on it: vLLM reads VLLM_API_KEY. A
    worker of a multi-node group serves no HTTP: no address, no port."""
    worker = config.group.is_worker
    args = [*config.engine_cmd, "--model", config.model, "--served-model-name", config.served_model_name]
    if not worker:
        args += ["--host", "127.0.0.1", "--port", str(config.engine_port)]
    args += [
        "--tensor-parallel-size", str(config.parallel.tensor_parallel_size),
        "--shutdown-timeout", str(shutdown_plan(config.timing).engine_drain),
    ]
    if not worker:
        # Every health check would otherwise write an access log line.
        args += ["--disable-uvicorn-access-log"]
        if config.engine_guarded:
            # vLLM's own key check leaves /invocations, /tokenize, ... open.
            args += ["--middleware", engine_guard.IMPORT_PATH]
    if config.group.multi_node:
        args += group_flags(config)
    if config.max_model_len is not None:
        args += ["--max-model-len", str(config.max_model_len)]
    if config.gpu_memory_utilization is not None and not config.on_cpu:
        args += ["--gpu-memory-utilization", f"{config.gpu_memory_utilization:g}"]
    return args + list(config.engine_args)


def group_flags(config: Config) -> list[str]:
    """vLLM's native multi-node flags (no Ray: the CPU build has none, and the
    mp backend is what --nnodes needs); a worker runs headless, with no API
    server and no port of its own."""
    group = config.group
    flags = [
        "--pipeline-parallel-size", str(config.parallel.pipeline_parallel_size),
        "--distributed-executor-backend", "mp",
        "--nnodes", str(group.nodes),
        "--node-rank", str(group.rank),
        "--master-addr", str(group.leader_address),
        "--master-port", str(group.rendezvous_port),
    ]
    return flags + (["--headless"] if group.is_worker else [])


@dataclass(frozen=True)
class LaunchSpec:
    """A program as entrypoint.inside.launch starts it: argv plus environment changes."""

    argv: list[str]
    unset: tuple[str, ...] = ()
    set: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> str:
        return json.dumps({"argv": self.argv, "unset": list(self.unset), "set": dict(self.set)}, indent=1) + "\n"


def engine_launch(config: Config) -> LaunchSpec:
    """The engine drops the proxy's keys from the environment it inherits."""
    return LaunchSpec(engine_command(config), KEY_VARS_HIDDEN_FROM_ENGINE, config.engine_env)


def proxy_launch(config: Config, python: str, run_dir: Path) -> LaunchSpec:
    """The proxy learns where the engine is (the relay calls it directly),
    where the keys' limit counters live, and where its metrics go. The spec
    is a private file of the run folder, never printed: a password in
    --redis-url reaches the proxy this way and no other program sees it."""
    return LaunchSpec(proxy_command(config, python, run_dir), set=(
        (names.ENGINE_URL_VARIABLE, engine_base_url(config)),
        (names.REQUEST_TIMEOUT_VARIABLE, str(names.DEFAULT_REQUEST_TIMEOUT)),
        # LiteLLM's own switch for the box of links it prints at every start.
        ("LITELLM_DONT_SHOW_FEEDBACK_BOX", "true"),
        (names.LIMITS_STORAGE_VARIABLE, config.limits.storage_uri(run_dir)),
        (names.METRICS_DIR_VARIABLE, str(run_dir / names.METRICS_DIR)),
        (names.OWN_METRICS_VARIABLE, str(run_dir / names.OWN_METRICS_FILE)),
        (names.LIMITS_PREFIX_VARIABLE, limits_prefix(config)),
        *(((names.QUOTAS_DURABLE_VARIABLE, "1"),) if config.limits.durable else ()),
        *config.client.to_environment(),
        (names.UI_VARIABLE, "1" if config.ui else "0"),
    ))


def limits_prefix(config: Config) -> str:
    """Replicas of one model share their keys' counts in a shared Redis; another model's are apart."""
    return "llm-entry/" + config.served_model_name


def supervised_programs(config: Config) -> tuple[str, ...]:
    """The programs supervisord runs, in the order the monitor follows them. A
    worker of a multi-node group runs its engine only: the leader serves."""
    if config.group.is_worker:
        return (ENGINE,)
    return (ENGINE, PROXY, LIMITER) if config.limits.private else (ENGINE, PROXY)


def limiter_launch(run_dir: Path) -> LaunchSpec:
    """The private redis-server, found on PATH (the start checked that it is there)."""
    return LaunchSpec(["redis-server", str(run_dir / REDIS_CONFIG)], KEY_VARS_HIDDEN_FROM_LIMITER)


def redis_quoted(text: str) -> str:
    """A value as redis.conf reads it back exactly, spaces and quotes included."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# With --state-dir: the append-only file, written to disk every second (so a
# crash loses at most about a second of counts), and no snapshots besides it.
PERSISTENCE = "appendonly yes\nappendfsync everysec\nappendfilename \"llm-entry.aof\"\n"
NO_PERSISTENCE = "appendonly no\n"


def render_redis_config(run_dir: Path, state_dir: Path | None = None) -> str:
    return template(REDIS_CONFIG).substitute(
        socket=redis_quoted(str(private_socket(run_dir))),
        dir=redis_quoted(str(state_dir or run_dir)),
        persistence=PERSISTENCE if state_dir is not None else NO_PERSISTENCE,
    )


def engine_base_url(config: Config) -> str:
    return f"http://127.0.0.1:{config.engine_port}"


def launcher_command(python: str, spec_path: Path) -> list[str]:
    return [python, "-m", "entrypoint.inside.launch", str(spec_path)]


def proxy_command(config: Config, python: str, run_dir: Path) -> list[str]:
    # LiteLLM's own launcher with the model relay in front of its app.
    return [
        python, "-m", "entrypoint.inside.proxy_server",
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
        request_timeout=names.DEFAULT_REQUEST_TIMEOUT,
    )


def render_supervisord_config(config: Config, python: str, run_dir: Path) -> str:
    values = dict(
        run_dir=str(run_dir).replace("%", "%%"),
        engine_command=supervisor_command_line(launcher_command(python, run_dir / ENGINE_LAUNCH)),
        proxy_command=supervisor_command_line(launcher_command(python, run_dir / PROXY_LAUNCH)),
        limiter_command=supervisor_command_line(launcher_command(python, run_dir / LIMITER_LAUNCH)),
        stop_wait=shutdown_plan(config.timing).supervisord_stop_wait,
    )
    programs = supervised_programs(config)
    limiter = template(SUPERVISORD_LIMITER).substitute(values) if LIMITER in programs else ""
    proxy = template(SUPERVISORD_PROXY).substitute(values) if PROXY in programs else ""
    return template(SUPERVISORD_CONFIG).substitute(values, proxy_program=proxy, limiter_program=limiter)


def render_run_files(config: Config, python: str, run_dir: Path) -> list[RenderedFile]:
    """Every file the run folder holds before supervisord starts."""
    proxy = PROXY in supervised_programs(config)
    return [
        RenderedFile(SUPERVISORD_CONFIG, render_supervisord_config(config, python, run_dir)),
        *([RenderedFile(LITELLM_CONFIG, render_litellm_config(config))] if proxy else []),
        RenderedFile(ENGINE_LAUNCH, engine_launch(config).to_json()),
        *(proxy_files(config, python, run_dir) if proxy else []),
    ] + limiter_files(config, run_dir)


def proxy_files(config: Config, python: str, run_dir: Path) -> list[RenderedFile]:
    return [
        RenderedFile(PROXY_LAUNCH, proxy_launch(config, python, run_dir).to_json()),
        RenderedFile(PROXY_LOGGING, template(PROXY_LOGGING).template),
        RenderedFile(AUTH_MODULE + ".py", template(AUTH_MODULE + ".py.tmpl").template),
    ]


def limiter_files(config: Config, run_dir: Path) -> list[RenderedFile]:
    if LIMITER not in supervised_programs(config):
        return []
    return [RenderedFile(REDIS_CONFIG, render_redis_config(run_dir, config.limits.state_dir)),
            RenderedFile(LIMITER_LAUNCH, limiter_launch(run_dir).to_json())]


def dry_run_text(config: Config, python: str, run_dir: Path) -> str:
    """What --dry-run prints: the plan and every rendered file, and no key."""
    lines = [
        f"# {config.gpus_reason}",
        f"# {config.parallel.reason}",
        *([f"# {config.group.reason}"] if config.group.multi_node else []),
        "# engine command:",
        shlex.join(engine_command(config)),
        "# engine settings: " + (" ".join(f"{n}={v}" for n, v in config.engine_env) or "none")
        + " (VLLM_API_KEY is generated at every start)",
    ]
    if PROXY in supervised_programs(config):
        lines += [
            f"# {config.proxy_workers_reason}",
            f"# {config.limits.reason}",
            "# proxy command:",
            shlex.join(proxy_command(config, python, run_dir)),
        ]
    shown = (SUPERVISORD_CONFIG, LITELLM_CONFIG, REDIS_CONFIG)
    for file in render_run_files(config, python, run_dir):
        if file.name in shown:
            lines += [f"# {file.name}:", file.content.rstrip("\n")]
    return "\n".join(lines) + "\n"
