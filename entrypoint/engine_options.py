"""What the engine is given, decided from the options: the model it loads,
its command, the arguments after `--` (refused when they would override a
flag llm-entry manages: they come last, and the last one wins in vLLM's
parser), the demo model's arguments, and the environment for vLLM's CPU build.
config calls these while it validates; none of them starts anything.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from .demo import model as demo_model
from .errors import EntryError

CPU_KV_CACHE = "VLLM_CPU_KVCACHE_SPACE"
# The default engine command runs vLLM's supported CLI, `vllm serve`, through
# a launcher of ours that makes it work with the CPU build too (see the module).
ENGINE_CLI_MODULE = "entrypoint.inside.engine_cli"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# The flags llm-entry puts on the engine's command line (or, for --api-key,
# deliberately keeps off it), with what to do instead of passing them after `--`.
MANAGED_FLAGS: dict[str, str] = {
    "--host": "the engine listens on 127.0.0.1 only, behind the proxy; "
              "use llm-entry's --host for the proxy's public address",
    "--port": "use llm-entry's --engine-port for the engine's loopback port, or --port for the public one",
    "--api-key": "llm-entry makes the engine's key itself at every start and passes it by environment; "
                 "give clients keys with --master-key-file or --api-keys-file",
    "--model": "use llm-entry's --model",
    "--served-model-name": "use llm-entry's --served-model-name",
    "--tensor-parallel-size": "use llm-entry's --tensor-parallel-size, which is checked against the GPUs and heads",
    "--nnodes": "use llm-entry's --nodes",
    "--node-rank": "use llm-entry's --node-rank",
    "--master-addr": "use llm-entry's --leader-address",
    "--master-port": "use llm-entry's --rendezvous-port",
    "--headless": "llm-entry runs every node of rank 1 and up headless; set --node-rank",
}
SHORT_FLAGS = {"-tp": "--tensor-parallel-size", "-n": "--nnodes", "-r": "--node-rank"}


def default_cache_dir() -> Path:
    return Path("~/.cache/llm-entry").expanduser()


def resolve_model(raw: str, cache_dir: Path | None,
                  env: Mapping[str, str] | None = None) -> tuple[str, Path | None, bool]:
    """(what vLLM gets, local folder or None, is the demo model).

    A hub id `org/name` and a relative path `dir/name` look the same; what is
    no folder here is taken for a hub id only when nothing says it is a
    mistyped path (see check_hub_id)."""
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
        check_hub_id(raw, env or {})
        return raw, None, False
    raise EntryError(
        f"model directory {raw} does not exist: mount the model there, or give a hub id like org/name, "
        f"or use --model {demo_model.DEMO_MODEL_NAME} to try the built-in demo model."
    )


# huggingface_hub's own reading of its switches (constants._is_true).
HUB_TRUE = frozenset({"1", "ON", "YES", "TRUE"})
HUB_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline_variable(env: Mapping[str, str]) -> str | None:
    """The variable that keeps vLLM off the hub, or None (huggingface_hub reads
    HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE; vLLM's ModelScope mode downloads
    from elsewhere, so it does not count as offline)."""
    if env.get("VLLM_USE_MODELSCOPE", "").strip().lower() in ("1", "true"):
        return None
    name = next((name for name in HUB_OFFLINE_VARIABLES if env.get(name)), None)
    return name if name is not None and env[name].upper() in HUB_TRUE else None


def hub_cache_dir(env: Mapping[str, str]) -> Path:
    """Where huggingface_hub keeps downloaded models, as it decides it."""
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path("~/.cache").expanduser()
    return cache / "huggingface" / "hub"


def hub_cached(hub_id: str, env: Mapping[str, str]) -> bool:
    org, name = hub_id.split("/", 1)
    return (hub_cache_dir(env) / f"models--{org}--{name}" / "snapshots").is_dir()


def check_hub_id(raw: str, env: Mapping[str, str]) -> None:
    """Refuse an `org/name` that cannot be a hub id vLLM will find: its first
    part is a folder here (a mistyped path), or the hub is off limits and the
    hub cache does not hold it (vLLM would fail after minutes of start-up)."""
    first = raw.split("/", 1)[0]
    if Path(first).is_dir():
        raise EntryError(
            f"model directory {raw} does not exist, though the folder {first} does: fix the path "
            f"(llm-entry takes org/name for a hub id only when no folder named org is here)."
        )
    offline = hub_offline_variable(env)
    if offline is not None and not hub_cached(raw, env):
        raise EntryError(
            f"--model {raw} is no folder here and, as a hub id, not in the hub cache {hub_cache_dir(env)}, "
            f"and {offline}={env[offline]} forbids downloading it: fix the path, or download the model "
            f"into that cache, or unset {offline}."
        )


def hub_id_note(raw: str, env: Mapping[str, str]) -> str:
    """What happens to a model taken for a hub id, said once at start."""
    if hub_offline_variable(env) is not None:
        return (f"--model {raw} is not a folder here: vLLM loads it as a hub id from the hub cache "
                f"{hub_cache_dir(env)}, offline; if you meant a folder, fix the path.")
    return (f"--model {raw} is not a folder here: vLLM gets it as a hub id, from the hub cache or downloaded "
            "from the hub; if you meant a folder, fix the path.")


def default_engine_cmd(python: str | None = None) -> tuple[str, ...]:
    # Not the `vllm` console script: the CPU build's crashes at start. Another
    # Python (--engine-python: the GPU image's, whose packages llm-entry's may
    # not change) needs llm-entry installed too, for this launcher and the
    # guard the engine imports (entrypoint.inside.engine_guard).
    return (python or sys.executable, "-m", ENGINE_CLI_MODULE, "serve")


def engine_cmd(raw: str | None, python: str | None = None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return default_engine_cmd(python)   # --engine-cmd, when given, names its own Python
    try:
        return tuple(shlex.split(raw))
    except ValueError as error:
        raise EntryError(f"--engine-cmd cannot be split like a shell command line ({error}): "
                         "check its quotes.") from error


def managed_flag(arg: str) -> str | None:
    """The managed flag vLLM would read `arg` as, or None.

    vLLM's parser turns underscores into dashes, takes `--flag=value`, and (being
    argparse) accepts any unambiguous prefix: `--hos` is --host there.
    """
    name = arg.split("=", 1)[0]
    if name.startswith("--") and len(name) > 2:
        name = name.replace("_", "-")
        return next((flag for flag in MANAGED_FLAGS if flag.startswith(name)), None)
    if name.startswith("-") and len(name) > 1:
        return next((flag for short, flag in SHORT_FLAGS.items() if short.startswith(name)), None)
    return None


def check_pass_through(args: tuple[str, ...]) -> tuple[str, ...]:
    """The arguments after `--`, refused when one of them sets a managed flag,
    directly or through a vLLM `--config` file.

    The message names the flag, never the argument: `--api-key=...` holds a key.
    """
    for arg in args:
        flag = managed_flag(arg)
        if flag is not None:
            raise EntryError(
                f"an argument after -- sets the engine's {flag}, which llm-entry manages: {MANAGED_FLAGS[flag]}."
            )
    config_file = engine_config_file(args)
    if config_file is not None:
        for key in config_file_keys(config_file):
            flag = managed_flag(f"--{key}")
            if flag is not None:
                raise EntryError(
                    f"the engine config file {config_file} (after --) sets {key}, which llm-entry manages: "
                    f"{MANAGED_FLAGS[flag]}."
                )
    return args


def engine_config_file(args: tuple[str, ...]) -> str | None:
    """The file of vLLM's `--config FILE` (or `--config=FILE`) among `args`."""
    for at, arg in enumerate(args):
        if arg == "--config" and at + 1 < len(args):
            return args[at + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def config_file_keys(path: str) -> list[str]:
    """The top-level keys of a vLLM config file, each of which vLLM turns into
    `--key value` placed before the command line's own arguments. Those of
    llm-entry would still win, except --api-key, which it passes by
    environment and which vLLM reads only when no flag sets one: a key in the
    file would lock the proxy out of the engine."""
    import yaml  # LiteLLM's proxy extra brings it; only this rare path needs it

    try:
        text = Path(path).read_text()
    except OSError as error:
        raise EntryError(f"the engine config file {path} (after --) cannot be read ({error.strerror}): "
                         f"check the path.") from error
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        # The line number only: the file may hold a secret, the parser's message quotes it.
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise EntryError(f"the engine config file {path} (after --) is not valid YAML{where}: fix it, "
                         f"or pass the options after -- directly.") from error
    if not isinstance(config, dict):
        raise EntryError(f"the engine config file {path} (after --) is not a mapping of option: value: "
                         f"write one vLLM option per line, like `max-num-seqs: 64`.")
    return [str(key) for key in config]


def demo_args(max_model_len: int | None, multi_node: bool = False) -> tuple[str, ...]:
    """The demo's engine arguments, without its --max-model-len when the user
    chose one, and without --enforce-eager across nodes: vLLM 0.32's CPU
    worker of a later pipeline stage makes its buffer for the previous stage's
    activations only in the compile warm-up that --enforce-eager skips, and
    then fails its first request (AssertionError in
    sync_and_gather_intermediate_tensors; measured here, both nodes on one
    machine). Compiling costs about 30 s of the start."""
    args = list(demo_model.DEMO_ENGINE_ARGS)
    if multi_node and "--enforce-eager" in args:
        args.remove("--enforce-eager")
    if max_model_len is not None and "--max-model-len" in args:
        at = args.index("--max-model-len")
        del args[at:at + 2]
    return tuple(args)


def cpu_kv_cache_gib(total_memory_bytes: int) -> int:
    """vLLM's CPU KV cache otherwise claims most of the machine: take a quarter, 1..8 GiB."""
    return max(1, min(8, total_memory_bytes // (4 << 30)))


def engine_env(env: Mapping[str, str], on_cpu: bool, demo: bool,
               total_memory: Callable[[], int]) -> tuple[tuple[str, str], ...]:
    """Settings for the engine's environment; a variable the user set is never replaced."""
    settings: dict[str, str] = {}
    if on_cpu and CPU_KV_CACHE not in env:
        settings[CPU_KV_CACHE] = str(cpu_kv_cache_gib(total_memory()))
    if demo:
        settings.update(demo_model.DEMO_ENGINE_ENV)
    return tuple(sorted((name, value) for name, value in settings.items() if name not in env))
