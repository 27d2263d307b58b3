"""The one frozen Config that everything acting receives.

`build_config` turns the parsed options, the environment and what the node
reports into a Config, validating as it goes: every problem becomes one
EntryError before anything starts. Nothing else reads os.environ or argv.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .demo import model as demo_model
from .demo import recipe as demo_recipe
from .engine_options import (
    check_pass_through,
    default_engine_cmd,
    demo_args,
    engine_cmd,
    engine_env,
    hub_id_note,
    resolve_model,
)
from .errors import EntryError
from .gpus import NodeGpus, describe_gpus, visible_gpu_count
from .inside import names
from .inside.client_limits import KIB, ClientLimits, spell_size
from .inside.keys_file import KeyEntry
from .keys import Secret, check_keys_file, new_internal_key, resolve_master_key
from .limiter_store import LimitsPlan, RedisUrl, check_redis_url, plan_limits, quota_needs_a_store
from .node_group import DEFAULT_RENDEZVOUS_PORT, NodeGroup, plan_node_group
from .parallel import HeadCounts, ParallelPlan, choose_tensor_parallel, load_head_counts, spread_over_nodes
from .workers import choose_proxy_workers, read_usable_cpus

WORKSPACE_PORT = 8080
PRODUCTION_PORT = 80
DEFAULT_ENGINE_PORT = 3000
RESTART_POLICIES = ("never", "always")


@dataclass(frozen=True)
class Options:
    """The command line as parsed, before validation (cli fills it).

    Its defaults are the command line's: cli reads them from here."""

    model: str
    master_key: str | None = field(default=None, repr=False)
    master_key_on_command_line: bool = False   # not from a variable: it shows in `ps`
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
    engine_python: str | None = None   # None: this Python
    engine_args: tuple[str, ...] = ()
    proxy_workers: int | None = None   # None: auto (entrypoint.workers)
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
    redis_url: str | None = field(default=None, repr=False)   # may hold a password
    state_dir: Path | None = None
    max_body_size: int = ClientLimits.max_body_size
    max_header_size: int = ClientLimits.max_header_size
    header_timeout: float = ClientLimits.header_timeout
    body_timeout: float = ClientLimits.body_timeout
    keep_alive_timeout: float = ClientLimits.keep_alive_timeout
    ui: bool = True    # the chat page at / (entrypoint.inside.ui_page)
    nodes: int | None = None            # None: LWS_GROUP_SIZE, else 1 (entrypoint.node_group)
    node_rank: int | None = None        # None: LWS_WORKER_INDEX, else 0
    leader_address: str | None = None   # None: LWS_LEADER_ADDRESS
    rendezvous_port: int = DEFAULT_RENDEZVOUS_PORT
    node_parallelism: str = "pipeline"
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
    proxy_workers_reason: str
    timing: Timing
    engine_restart: str
    max_restarts: int
    restart_window: float
    demo: bool
    dry_run: bool
    api_keys: tuple[KeyEntry, ...] = ()   # --api-keys-file's lines at start (no key in their repr)
    warnings: tuple[str, ...] = ()    # said once at start; nothing is wrong enough to stop
    gpus_reason: str = ""             # one line for the log: the GPUs the engine gets, and who said so
    redis_url: RedisUrl | None = None   # --redis-url, checked; its password never shows
    client: ClientLimits = ClientLimits()   # what a client of the public port may send
    state_dir: Path | None = None     # --state-dir: the private redis-server's files
    engine_python: str | None = None   # --engine-python: the Python of the default engine command
    ui: bool = True                   # the chat page at /
    group: NodeGroup = NodeGroup()    # this node's place in a multi-node group; one node by default

    @property
    def limits(self) -> LimitsPlan:
        """Who keeps the keys' limit counters (entrypoint.limiter_store)."""
        return plan_limits(self.redis_url, self.api_keys_file, self.proxy_workers, self.state_dir)

    @property
    def on_cpu(self) -> bool:
        return self.visible_gpus == 0

    @property
    def engine_guarded(self) -> bool:
        """Whether the engine is the default command, in this interpreter or in
        --engine-python's (which has llm-entry too), so it can import the
        middleware that puts every model route behind the internal key
        (entrypoint.inside.engine_guard). Another --engine-cmd may not have it."""
        return self.engine_cmd == default_engine_cmd(self.engine_python)

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


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 << 30


def _positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise EntryError(f"{name} must be {'0 or more' if allow_zero else 'more than 0'}, not {value}.")


def _check_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise EntryError(f"{name} {port} is not a TCP port: use a number from 1 to 65535.")


# The monitor refreshes the heartbeat every tick; a tick waits at most about
# 1 s for supervisord, so a heartbeat is never older than ~1.5 s.
MIN_HEARTBEAT_TTL = 2.0


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
    noticed = opts.unready_after * (opts.check_interval + opts.check_timeout)
    if opts.hang_timeout < noticed:
        raise EntryError(
            f"--hang-timeout {opts.hang_timeout:g} s is shorter than it takes to notice failing checks "
            f"(--unready-after {opts.unready_after} x (--check-interval {opts.check_interval:g} s + "
            f"--check-timeout {opts.check_timeout:g} s) = {noticed:g} s): raise --hang-timeout or check more often."
        )
    if opts.heartbeat_ttl < MIN_HEARTBEAT_TTL:
        raise EntryError(
            f"--heartbeat-ttl {opts.heartbeat_ttl:g} s is shorter than llm-entry may take between two heartbeats "
            f"(up to about 1.5 s while supervisord is slow): use at least {MIN_HEARTBEAT_TTL:g} s."
        )
    return Timing(
        startup_timeout=opts.startup_timeout, check_interval=opts.check_interval,
        check_timeout=opts.check_timeout, unready_after=opts.unready_after,
        hang_timeout=opts.hang_timeout, heartbeat_ttl=opts.heartbeat_ttl,
        grace_period=opts.grace_period, drain_delay=drain,
    )


MASTER_KEY_ON_COMMAND_LINE = (
    "--master-key on the command line is visible to anyone who can list processes (ps, /proc/PID/cmdline): "
    "set LLM_ENTRY_MASTER_KEY or LITELLM_MASTER_KEY, or use --master-key-file, instead."
)
MASTER_KEY_VARIABLES = (names.MASTER_KEY_VARIABLE, names.LITELLM_MASTER_KEY_VARIABLE)   # cli reads them in this order


def master_key_source(opts: Options, env: Mapping[str, str]) -> str:
    """Where --master-key's value came from: the flag, or the first variable
    that is set and not empty (click's rule for a list of variables)."""
    if not opts.master_key_on_command_line:
        for name in MASTER_KEY_VARIABLES:
            if env.get(name):
                return name
    return "--master-key"


def master_key_variable_ignored(variable: str) -> str:
    return (f"the master key comes from --master-key-file; the one in {variable} is ignored: "
            f"unset {variable} to silence this warning.")


def keys_file_empty(path: Path) -> str:
    return (f"--api-keys-file {path} holds no key yet, so only the master key opens the proxy: "
            "add keys there, one a line as '<key> [name=<name>] [rpm=<n>] [tpm=<n>] [max_parallel=<n>]', "
            "and they apply within about a second, without a restart.")


def _warnings(opts: Options, env: Mapping[str, str], model_dir: Path | None, demo: bool,
              api_keys: tuple[KeyEntry, ...]) -> tuple[str, ...]:
    said = []
    if opts.master_key_on_command_line:
        said.append(MASTER_KEY_ON_COMMAND_LINE)
    elif opts.master_key and opts.master_key_file is not None:
        said.append(master_key_variable_ignored(master_key_source(opts, env)))
    if model_dir is None and not demo:
        # models/llama, mistyped, reads like a hub id: say which one vLLM gets.
        said.append(hub_id_note(opts.model, env))
    if opts.api_keys_file is not None and not api_keys:
        said.append(keys_file_empty(opts.api_keys_file))
    if opts.state_dir is not None and opts.api_keys_file is None:
        said.append(f"--state-dir {opts.state_dir} is not used without --api-keys-file: only keys have counts.")
    return tuple(said)


def _check_numbers(opts: Options, port: int) -> None:
    _check_port("--port", port)
    _check_port("--engine-port", opts.engine_port)
    if port == opts.engine_port:
        raise EntryError(f"--port and --engine-port are both {port}: give the engine another port.")
    if opts.gpu_memory_utilization is not None and not 0 < opts.gpu_memory_utilization <= 1:
        raise EntryError(
            f"--gpu-memory-utilization {opts.gpu_memory_utilization} must be a fraction in (0, 1], e.g. 0.9."
        )
    _positive("--max-model-len", opts.max_model_len)
    if opts.proxy_workers is not None:
        _positive("--proxy-workers", opts.proxy_workers)
    _positive("--max-restarts", opts.max_restarts, allow_zero=True)
    _positive("--restart-window", opts.restart_window)
    if opts.engine_restart not in RESTART_POLICIES:
        raise EntryError(f"--engine-restart {opts.engine_restart} is unknown: "
                         f"use one of {', '.join(RESTART_POLICIES)}.")


def _node_group(opts: Options, env: Mapping[str, str]) -> NodeGroup:
    group = plan_node_group(opts.nodes, opts.node_rank, opts.leader_address, opts.rendezvous_port,
                            opts.node_parallelism, env)
    if group.multi_node and opts.engine_restart != "never":
        raise EntryError(f"--engine-restart {opts.engine_restart} cannot restart one node of a group of "
                         f"{group.nodes}: the others' engines belong to the old group. Leave it at never; "
                         "the node exits and its LeaderWorkerSet (RecreateGroupOnPodRestart) restarts the group.")
    return group


# Below these a request head or body cannot carry an ordinary request.
MIN_HEADER_SIZE = 8 * KIB
MIN_BODY_SIZE = 1 * KIB


def client_limits(opts: Options) -> ClientLimits:
    for name, value in (("--header-timeout", opts.header_timeout), ("--body-timeout", opts.body_timeout),
                        ("--keep-alive-timeout", opts.keep_alive_timeout)):
        _positive(name, value)
    for name, size, least in (("--max-body-size", opts.max_body_size, MIN_BODY_SIZE),
                              ("--max-header-size", opts.max_header_size, MIN_HEADER_SIZE)):
        if size < least:
            raise EntryError(f"{name} {spell_size(size)} is too small for an ordinary request: "
                             f"use at least {spell_size(least)}.")
    return ClientLimits(max_body_size=opts.max_body_size, max_header_size=opts.max_header_size,
                        header_timeout=opts.header_timeout, body_timeout=opts.body_timeout,
                        keep_alive_timeout=opts.keep_alive_timeout)


def _parallel_plan(opts: Options, env: Mapping[str, str], node: NodeGpus, model_dir: Path | None,
                   demo: bool, group: NodeGroup) -> tuple[int, ParallelPlan]:
    visible = visible_gpu_count(env, node.count)
    heads: HeadCounts | None
    if demo:
        heads = HeadCounts(demo_recipe.NUM_HEADS, demo_recipe.NUM_KV_HEADS)
    else:
        heads = load_head_counts(model_dir) if model_dir is not None else None
    plan = choose_tensor_parallel(visible, heads, opts.tensor_parallel_size)
    if not group.multi_node:
        return visible, plan
    return visible, spread_over_nodes(plan, heads, group.nodes, group.parallelism)


def _master_key(opts: Options, env: Mapping[str, str], group: NodeGroup) -> Secret:
    """The key clients must present. A worker serves nothing, so it needs none
    (one given is still checked): a random one stands in, used by nothing."""
    if group.is_worker and opts.master_key is None and opts.master_key_file is None:
        return new_internal_key()
    return resolve_master_key(opts.master_key, opts.master_key_file, opts.master_key_on_command_line,
                              master_key_source(opts, env))


def build_config(
    opts: Options,
    env: Mapping[str, str],
    query_node_gpus: Callable[[], NodeGpus],
    total_memory: Callable[[], int] = _total_memory,
    usable_cpus: Callable[[], int] = read_usable_cpus,
) -> Config:
    """Validate everything the user gave; raise EntryError on the first problem."""
    model, model_dir, demo = resolve_model(opts.model, opts.cache_dir, env)
    group = _node_group(opts, env)
    master_key = _master_key(opts, env, group)
    # Read now: a missing file or a bad line fails here, not in the proxy.
    api_keys = check_keys_file(opts.api_keys_file) if opts.api_keys_file is not None else ()
    port = default_port(env) if opts.port is None else opts.port
    _check_numbers(opts, port)
    redis_url, state_dir = _counts_store(opts, api_keys)
    passed_through = check_pass_through(tuple(opts.engine_args))
    timing = _timing(opts, env)
    client = client_limits(opts)
    node = query_node_gpus()
    visible, plan = _parallel_plan(opts, env, node, model_dir, demo, group)
    workers = choose_proxy_workers(opts.proxy_workers, usable_cpus(), visible)
    served = opts.served_model_name or (
        demo_model.DEMO_MODEL_NAME if demo else (model_dir.name if model_dir is not None else model)
    )
    return Config(
        model=model, model_dir=model_dir, served_model_name=served, master_key=master_key,
        api_keys_file=opts.api_keys_file, api_keys=api_keys, group=group,
        host=opts.host, port=port, engine_port=opts.engine_port,
        probe_dir=opts.probe_dir, gpus=node, visible_gpus=visible, parallel=plan,
        max_model_len=opts.max_model_len, gpu_memory_utilization=opts.gpu_memory_utilization,
        engine_cmd=engine_cmd(opts.engine_cmd, opts.engine_python), engine_python=opts.engine_python,
        engine_args=(demo_args(opts.max_model_len, group.multi_node) if demo else ()) + passed_through,
        engine_env=engine_env(env, visible == 0, demo, total_memory), proxy_workers=workers.workers,
        proxy_workers_reason=workers.reason, timing=timing, engine_restart=opts.engine_restart,
        max_restarts=opts.max_restarts, restart_window=opts.restart_window,
        demo=demo, dry_run=opts.dry_run, ui=opts.ui,
        warnings=_warnings(opts, env, model_dir, demo, api_keys),
        gpus_reason=describe_gpus(node, visible, env), redis_url=redis_url, client=client, state_dir=state_dir,
    )


def _counts_store(opts: Options, api_keys: tuple[KeyEntry, ...]) -> tuple[RedisUrl | None, Path | None]:
    """--redis-url, checked, and --state-dir, absolute (the private redis-server
    runs in the run folder, not here). A quota's count must outlive the
    container: --state-dir or --redis-url, not both."""
    redis_url = check_redis_url(opts.redis_url) if opts.redis_url else None
    if opts.state_dir is not None and redis_url is not None:
        raise EntryError("--state-dir and --redis-url are both set: the counts live in the Redis of --redis-url, "
                         "so leave --state-dir out.")
    if opts.state_dir is None and redis_url is None:
        with_quota = [entry.line for entry in api_keys if entry.limits.quotas]
        if with_quota and opts.api_keys_file is not None:
            raise EntryError(quota_needs_a_store(with_quota[0], opts.api_keys_file))
    return redis_url, opts.state_dir.absolute() if opts.state_dir is not None else None
