"""Starts the LiteLLM proxy with its own launcher, serving entrypoint.inside.proxy_app.

`python -m entrypoint.inside.proxy_server ARGS` is LiteLLM's `litellm ARGS`
(`run_server`: config, workers, event loop, logging, shutdown, all LiteLLM's),
except that uvicorn loads entrypoint.inside.proxy_app:app, which puts the model
relay (entrypoint.inside.proxy_relay) in front of LiteLLM's app, speaks HTTP
through entrypoint.inside.proxy_protocol (bounds on the request head) and
closes idle keep-alive connections after the time llm-entry was given. LiteLLM offers no
setting for the app its launcher serves; it names it in one helper, which is
wrapped here. If a LiteLLM release renames that helper or the app, the proxy
refuses to start with a line that says so, rather than serving without the relay.

Runs in the proxy's interpreter; imports LiteLLM.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from entrypoint.inside.client_limits import ClientLimits

LITELLM_APP = "litellm.proxy.proxy_server:app"
RELAY_APP = "entrypoint.inside.proxy_app:app"
# The method of LiteLLM's launcher that gives uvicorn its arguments (its spelling).
LAUNCHER_ARGS = "_get_default_unvicorn_init_args"
# uvicorn's `http` setting takes an import path; the module reads its limits when a worker imports it.
BOUNDED_PROTOCOL = "entrypoint.inside.proxy_protocol:BoundedHttpToolsProtocol"


def serving_the_relay(init_args: Callable[..., dict[str, Any]],
                      environ: Mapping[str, str] = os.environ) -> Callable[..., dict[str, Any]]:
    """LiteLLM's uvicorn arguments with the relay's app in place of LiteLLM's,
    the bounded HTTP protocol and llm-entry's keep-alive timeout."""
    keep_alive = ClientLimits.from_environment(environ).keep_alive_timeout

    def with_relay(*args: Any, **kwargs: Any) -> dict[str, Any]:
        uvicorn_args = dict(init_args(*args, **kwargs))
        if uvicorn_args.get("app") != LITELLM_APP:
            raise RuntimeError(f"LiteLLM's launcher serves {uvicorn_args.get('app')!r}, not {LITELLM_APP!r}: "
                               "this LiteLLM release is not one llm-entry supports (see pyproject.toml).")
        uvicorn_args["app"] = RELAY_APP
        uvicorn_args["http"] = BOUNDED_PROTOCOL
        uvicorn_args["timeout_keep_alive"] = keep_alive
        return uvicorn_args

    return with_relay


def main() -> None:
    from litellm.proxy import proxy_cli

    helpers = proxy_cli.ProxyInitializationHelpers
    # A deliberate patch of LiteLLM's launcher (see serving_the_relay): it offers no option for the app.
    setattr(helpers, LAUNCHER_ARGS, staticmethod(serving_the_relay(getattr(helpers, LAUNCHER_ARGS))))
    proxy_cli.run_server()


if __name__ == "__main__":
    main()
