"""The ASGI app every proxy worker serves: llm-entry's front (keys, limits, usage,
metrics, the model relay) in front of LiteLLM's app.

uvicorn imports it by name in each worker (entrypoint.inside.proxy_server points
LiteLLM's launcher at it). Importing it imports LiteLLM's proxy and reads the
worker's environment: it is for the proxy's interpreter only.
"""

from __future__ import annotations

import functools
import logging
import os

from litellm.proxy.auth.route_checks import RouteChecks
from litellm.proxy.proxy_server import app as litellm_app
from starlette.middleware.cors import CORSMiddleware

from entrypoint.inside.key_ring import shared_key_ring
from entrypoint.inside.log_lines import keep_on_one_line
from entrypoint.inside.proxy_front import front_app

# LiteLLM's own loggers print through handlers of their own: the same one-line rule
# as llm-entry's (a request's bytes never start a line of the container's log).
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Proxy", "LiteLLM Router")


def litellm_cors_options(app) -> dict:
    """The CORS settings LiteLLM gave its app (LITELLM_CORS_ORIGINS and so on),
    so that a browser sees the same answers on the model routes as on the others."""
    for middleware in app.user_middleware:
        if middleware.cls is CORSMiddleware:
            return dict(middleware.kwargs)
    raise RuntimeError("LiteLLM's app has no CORS middleware: this LiteLLM release is not one llm-entry supports.")


for name in LITELLM_LOGGERS:
    keep_on_one_line(logging.getLogger(name))

app = front_app(litellm_app, os.environ, shared_key_ring,
                wrap=functools.partial(CORSMiddleware, **litellm_cors_options(litellm_app)),
                reaches_model=RouteChecks.is_llm_api_route)
