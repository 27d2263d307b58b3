"""Runs inside the engine, as vLLM's `--middleware`: the internal key for
every route that can run or show the model, not only those under /v1.

vLLM's own key check (VLLM_API_KEY) guards only paths under /v1, /v2,
/inference and /cohere. vLLM 0.32 also serves /invocations (SageMaker: chat
and completions), /tokenize, /detokenize and, for pooling models, /pooling,
/classify, /score and /rerank at the root, to anyone who reaches the port.
The port is on 127.0.0.1, but every container of a pod shares that address,
so a sidecar could use the model without a key. This closes those routes.

Open without a key: the health and status routes that run nothing
(/health, /ping, /version, /metrics) and CORS pre-flight requests (OPTIONS,
which carry no credentials by design and never reach a handler).

Standard library only, pure ASGI: it must import in the engine's interpreter
without anything of llm-entry's dependencies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from entrypoint.inside.names import ENGINE_API_KEY_VARIABLE as KEY_VARIABLE

OPEN_PATHS = frozenset({"/health", "/ping", "/version", "/metrics"})
# What `--middleware` names; render puts it on the engine's command line.
IMPORT_PATH = "entrypoint.inside.engine_guard.RequireInternalKey"

_UNAUTHORIZED = json.dumps({"error": "Unauthorized"}).encode()


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class RequireInternalKey:
    def __init__(self, app, key: str | None = None):
        self.app = app
        key = os.environ.get(KEY_VARIABLE, "") if key is None else key
        # Without a key (the engine started by hand) there is nothing to require.
        self._expected = _digest(key) if key else None

    async def __call__(self, scope, receive, send) -> None:
        if self._let_through(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                                    (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})

    def _let_through(self, scope) -> bool:
        if scope["type"] not in ("http", "websocket") or self._expected is None:
            return True
        if scope.get("method") == "OPTIONS":
            return True
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if path.rstrip("/") in OPEN_PATHS:
            return True
        return self._presented_key_matches(scope.get("headers", []))

    def _presented_key_matches(self, headers) -> bool:
        values = [value for name, value in headers if name.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, token = values[0].decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return self._expected is not None and hmac.compare_digest(_digest(token), self._expected)
