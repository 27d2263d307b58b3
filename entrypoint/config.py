"""The one frozen Config that everything acting receives.

`build_config` turns the parsed options, the environment and what the node
reports into a Config, validating as it goes: every problem becomes one
EntryError before anything starts. Nothing else reads os.environ or argv.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from . import demo_model
from .errors import EntryError
from .gpus import NodeGpus, visible_gpu_count
from .keys import Secret, check_keys_file, resolve_master_key
from .parallel import HeadCounts, ParallelPlan, choose_tensor_parallel, load_head_counts

WORKSPACE_PORT = 8080
PRODUCTION_PORT = 80
DEFAULT_ENGINE_PORT = 3000
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RESTART_POLICIES = ("never", "always")


@dataclass(frozen=True)
class Options:
    """The command line as parsed, before validation (cli fills it)."""

    model: str
    master_key: str | None = field(default=None, repr=False)
    master_key_file: Path | None = None
    api_keys_file: Path | None = None
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int | None = None
    engine_port: int = DEFAULT_ENGINE_PORT
    probe_dir: Path = Path("/etc/probe")
    tensor_parallel_size: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    engine_cmd: str | None = None
    engine_args: tuple[str, ...] = ()
    proxy_workers: int = 1
    cache_dir: Path | None = None
    startup_timeout: float = 1800.0
    check_interval: float = 2.0
    check_timeout: float = 3.0
    unready_after: int = 2
    hang_timeout: float = 30.0
    heartbeat_ttl: float = 15.0
    grace_period: float = 25.0
    drain_delay: float | None = None
    engine_restart: str = "never"
    max_restarts: int = 3
    restart_window: float = 300.0
    dry_run: bool = False


@dataclass(frozen=True)
class Timing:
    """How often and how patiently the monitor checks, and the shutdown budget."""

    startup_timeout: float
    check_interval: float
    check_timeout: float
    unready_after: int
    hang_timeout: float
    heartbeat_ttl: float
    grace_period: float
    drain_delay: float


@dataclass(frozen=True)
class Config:
    model: str                        # what vLLM gets as --model
    model_dir: Path | None            # the local folder, None for a hub id
    served_model_name: str
    master_key: Secret = field(repr=False)
    api_keys_file: Path | None
    host: str
    port: int
    engine_port: int
    probe_dir: Path
    gpus: NodeGpus
    visible_gpus: int
    parallel: ParallelPlan
    max_model_len: int | None
    gpu_memory_utilization: float | None
    engine_cmd: tuple[str, ...]
    engine_args: tuple[str, ...]      # extra arguments after `--`, passed unchanged
    engine_env: tuple[tuple[str, str], ...]
    proxy_workers: int
    timing: Timing
    engine_restart: str
    max_restarts: int
    restart_window: float
    demo: bool
    dry_run: bool

    @property
    def on_cpu(self) -> bool:
        return self.visible_gpus == 0

    @property
    def local_url(self) -> str:
        """Where this container reaches its own proxy (and where the checks go)."""
        if self.host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif self.host == "::":
            host = "[::1]"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def default_port(env: Mapping[str, str]) -> int:
    """80 in OpenBayes serving deployments, 8080 in workspaces and elsewhere."""
    return PRODUCTION_PORT if env.get("OPENBAYES_SERVING_PRODUCTION", "").strip() else WORKSPACE_PORT


def default_drain_delay(env: Mapping[str, str]) -> float:
    """In Kubernetes, give endpoint controllers a moment to stop routing to us."""
    return 2.0 if env.get("KUBERNETES_SERVICE_HOST") else 0.0


def cpu_kv_cache_gib(total_memory_bytes: int) -> int:
    """vLLM's CPU KV cache otherwise claims most of the machine: take a quarter, 1..8 GiB."""
    return max(1, min(8, total_memory_bytes // (4 << 30)))


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 << 30


def default_cache_dir() -> Path:
    return Path("~/.cache/llm-entry").expanduser()


def default_engine_cmd() -> tuple[str, ...]:
    # The module path works for both the CUDA and the CPU build; the CPU
    # build's `vllm` console script crashes at start.
    return (sys.executable, "-m", "vllm.entrypoints.openai.api_server")


def resolve_model(raw: str, cache_dir: Path | None) -> tuple[str, Path | None, bool]:
    """(what vLLM gets, local folder or None, is the demo model)."""
    if raw == demo_model.DEMO_MODEL_NAME:
        folder = demo_model.demo_model_dir(cache_dir or default_cache_dir())
        return str(folder), folder, True
    path = Path(raw).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EntryError(
                f"model directory {path} has no config.json: is --model the folder that holds the weights?"
            )
        return str(path.resolve()), path.resolve(), False
    if path.exists():
        raise EntryError(f"--model {raw} is a file, not a folder: point it at the folder that holds config.json.")
    if HUB_ID.match(raw) and not raw.startswith((".", "/", "~")):
        return raw, None, False
    raise EntryError(
        f"model directory {raw} does not exist: mount the model there, or give a hub id like org/name, "
        f"or use --model {demo_model.DEMO_MODEL_NAME} to try the built-in demo model."
    )


def _positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise EntryError(f"{name} must be {'0 or more' if allow_zero else 'more than 0'}, not {value}.")


def _check_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise EntryError(f"{name} {port} is not a TCP port: use a number from 1 to 65535.")


def _engine_cmd(raw: str | None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return default_engine_cmd()
    try:
        parts = tuple(shlex.split(raw))
    except ValueError as error:
        raise EntryError(f"--engine-cmd cannot be split like a shell command line ({error}): check its quotes.")
    return parts


def _timing(opts: Options, env: Mapping[str, str]) -> Timing:
    for name, value in (
        ("--startup-timeout", opts.startup_timeout), ("--check-interval", opts.check_interval),
        ("--check-timeout", opts.check_timeout), ("--hang-timeout", opts.hang_timeout),
        ("--heartbeat-ttl", opts.heartbeat_ttl), ("--grace-period", opts.grace_period),
        ("--unready-after", opts.unready_after),
    ):
        _positive(name, value)
    _positive("--drain-delay", opts.drain_delay, allow_zero=True)
    drain = default_drain_delay(env) if opts.drain_delay is None else opts.drain_delay
    if drain >= opts.grace_period:
        raise EntryError(
            f"--drain-delay {drain:g} s leaves nothing of --grace-period {opts.grace_period:g} s "
            "to stop the processes: make the delay shorter than the grace period."
        )
    if opts.hang_timeout <= opts.check_timeout:
        raise EntryError(
            f"--hang-timeout {opts.hang_timeout:g} s must be longer than --check-timeout "
            f"{opts.check_timeout:g} s, or a single slow check would kill the container."
        )
    return Timing(
        startup_timeout=opts.startup_timeout, check_interval=opts.check_interval,
        check_timeout=opts.check_timeout, unready_after=opts.unready_after,
        hang_timeout=opts.hang_timeout, heartbeat_ttl=opts.heartbeat_ttl,
        grace_period=opts.grace_period, drain_delay=drain,
    )


def build_config(
    opts: Options,
    env: Mapping[str, str],
    query_node_gpus: Callable[[], NodeGpus],
    total_memory: Callable[[], int] = _total_memory,
) -> Config:
    """Validate everything the user gave; raise EntryError on the first problem."""
    model, model_dir, demo = resolve_model(opts.model, opts.cache_dir)
    master_key = resolve_master_key(opts.master_key, opts.master_key_file)
    if opts.api_keys_file is not None:
        check_keys_file(opts.api_keys_file)  # fail now, not in the proxy
    port = default_port(env) if opts.port is None else opts.port
    _check_port("--port", port)
    _check_port("--engine-port", opts.engine_port)
    if port == opts.engine_port:
        raise EntryError(f"--port and --engine-port are both {port}: give the engine another port.")
    if opts.gpu_memory_utilization is not None and not 0 < opts.gpu_memory_utilization <= 1:
        raise EntryError(
            f"--gpu-memory-utilization {opts.gpu_memory_utilization} must be a fraction in (0, 1], e.g. 0.9."
        )
    _positive("--max-model-len", opts.max_model_len)
    _positive("--proxy-workers", opts.proxy_workers)
    _positive("--max-restarts", opts.max_restarts, allow_zero=True)
    _positive("--restart-window", opts.restart_window)
    if opts.engine_restart not in RESTART_POLICIES:
        raise EntryError(f"--engine-restart {opts.engine_restart} is unknown: use one of {', '.join(RESTART_POLICIES)}.")

    timing = _timing(opts, env)
    node = query_node_gpus()
    visible = visible_gpu_count(env, node.count)
    heads = load_head_counts(model_dir) if model_dir is not None and not demo else None
    if demo:
        heads = HeadCounts(demo_model.NUM_HEADS, demo_model.NUM_KV_HEADS)
    plan = choose_tensor_parallel(visible, heads, opts.tensor_parallel_size)

    engine_env: dict[str, str] = {}
    if visible == 0 and "VLLM_CPU_KVCACHE_SPACE" not in env:
        engine_env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib(total_memory()))
    if demo:
        engine_env.update(demo_model.DEMO_ENGINE_ENV)

    served = opts.served_model_name or (
        demo_model.DEMO_MODEL_NAME if demo else (model_dir.name if model_dir is not None else model)
    )
    extra = tuple(demo_model.DEMO_ENGINE_ARGS) if demo else ()
    return Config(
        model=model, model_dir=model_dir, served_model_name=served, master_key=master_key,
        api_keys_file=opts.api_keys_file, host=opts.host, port=port, engine_port=opts.engine_port,
        probe_dir=opts.probe_dir, gpus=node, visible_gpus=visible, parallel=plan,
        max_model_len=opts.max_model_len, gpu_memory_utilization=opts.gpu_memory_utilization,
        engine_cmd=_engine_cmd(opts.engine_cmd), engine_args=extra + tuple(opts.engine_args),
        engine_env=tuple(sorted(engine_env.items())), proxy_workers=opts.proxy_workers,
        timing=timing, engine_restart=opts.engine_restart,
        max_restarts=opts.max_restarts, restart_window=opts.restart_window,
        demo=demo, dry_run=opts.dry_run,
    )
