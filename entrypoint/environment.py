"""The environment supervisord gets, which every program it starts inherits
(each program's launch spec then drops what it must not see: see render)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .config import Config
from .inside import names
from .keys import Secret
from .shutdown_plan import shutdown_plan


def child_environment(config: Config, env: Mapping[str, str], internal_key: Secret,
                      reload_marker: Path | None = None) -> dict[str, str]:
    """supervisord's environment, which both programs inherit (the engine's
    command drops the proxy's keys from it)."""
    child = dict(env)
    child.pop(names.LITELLM_MASTER_KEY_VARIABLE, None)
    # It may hold a password; the proxy gets the URL it needs from its launch spec.
    child.pop(names.REDIS_URL_VARIABLE, None)
    child.update({
        names.MASTER_KEY_VARIABLE: config.master_key.reveal(),
        names.ENGINE_KEY_VARIABLE: internal_key.reveal(),
        names.ENGINE_API_KEY_VARIABLE: internal_key.reveal(),
        # No fetches from the internet at start (the cost map): both spellings,
        # LiteLLM 1.103 reads the second.
        "LITELLM_OFFLINE_MODE": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONUNBUFFERED": "1",
        # The proxy's own drain must end before ours gives up on it.
        names.PROXY_DRAIN_VARIABLE: str(int(shutdown_plan(config.timing).proxy_drain)),
    })
    # A proxy variable meant for the container's outbound traffic must never
    # carry the proxy's calls to the engine (prompts and the internal key).
    exempt = loopback_exempt(env.get("NO_PROXY"), env.get("no_proxy"))
    child["NO_PROXY"] = child["no_proxy"] = exempt
    if config.api_keys_file is not None:
        # absolute(), not resolve(): a Kubernetes Secret volume swaps a symlink
        # on update, and the proxy must follow the name, not today's target.
        child[names.API_KEYS_FILE_VARIABLE] = str(config.api_keys_file.absolute())
        if reload_marker is not None:
            child[names.KEYS_RELOAD_MARKER_VARIABLE] = str(reload_marker)
    return child


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def loopback_exempt(*no_proxy: str | None) -> str:
    """The NO_PROXY list given (both spellings merged), plus loopback."""
    hosts: list[str] = []
    for value in no_proxy:
        for host in (value or "").split(","):
            if host.strip() and host.strip() not in hosts:
                hosts.append(host.strip())
    return ",".join(hosts + [host for host in LOOPBACK_HOSTS if host not in hosts])
