"""The ASGI app every proxy worker serves: the model relay in front of LiteLLM's app.

uvicorn imports it by name in each worker (entrypoint.proxy_server points
LiteLLM's launcher at it). Importing it imports LiteLLM's proxy and reads the
worker's environment: it is for the proxy's interpreter only.
"""

from __future__ import annotations

import os

from litellm.proxy.proxy_server import app as litellm_app

from entrypoint.proxy_auth import shared_key_ring
from entrypoint.proxy_relay import relay_app

app = relay_app(litellm_app, os.environ, shared_key_ring)
