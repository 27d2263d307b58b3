"""Everything that can be wrong with the input and the machine, checked
before the first process starts: ports, the engine command, redis-server,
the Redis named by --redis-url."""

from __future__ import annotations

import os
import shutil
import sys

from . import limiter_store, ports
from .config import Config
from .errors import EntryError
from .inside.names import LIMITER
from .render import supervised_programs


def preflight(config: Config) -> None:
    """Everything that can be wrong with the input, checked before any start."""
    group = config.group
    if not group.is_worker:   # a worker listens on neither
        ports.check_free(config.host, config.port, "--port")
        ports.check_free("127.0.0.1", config.engine_port, "--engine-port")
    if group.multi_node and not group.is_worker:
        # Where every worker joins the group; vLLM would fail after loading otherwise.
        ports.check_free("0.0.0.0", group.rendezvous_port, "--rendezvous-port")
    if not shutil.which(config.engine_cmd[0]):
        raise EntryError(
            f"engine command {config.engine_cmd[0]!r} was not found: install vLLM "
            "(pip install 'llm-entry[gpu]' or scripts/install-cpu-engine.sh) or fix --engine-cmd."
        )
    if config.engine_guarded and not _has_module(config.engine_cmd[0], "vllm"):
        raise EntryError(
            "vLLM is not installed for " + config.engine_cmd[0] + ": install it with "
            "pip install 'llm-entry[gpu]' (CUDA) or scripts/install-cpu-engine.sh (CPU), "
            "or point --engine-cmd at another engine."
        )
    if LIMITER in supervised_programs(config) and not shutil.which("redis-server"):
        raise EntryError(limiter_store.missing_redis_server(config.proxy_workers))
    if group.is_worker:
        return   # the rest is the proxy's: a worker runs none
    if config.limits.state_dir is not None:
        limiter_store.check_state_dir(config.limits.state_dir)
    if config.redis_url is not None:
        why = limiter_store.ping(config.redis_url)
        if why:
            raise EntryError(limiter_store.unreachable(config.redis_url, why))


def _has_module(python: str, module: str) -> bool:
    if os.path.realpath(shutil.which(python) or python) == os.path.realpath(sys.executable):
        import importlib.util
        return importlib.util.find_spec(module) is not None
    return True  # another interpreter: let the engine's own error speak
