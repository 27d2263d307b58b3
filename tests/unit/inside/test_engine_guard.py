"""The middleware that runs inside vLLM: every route that can run or show
the model needs the internal key, not only those under /v1 (vLLM 0.32 leaves
/invocations, /tokenize, ... open); health and status routes stay open."""

from __future__ import annotations

import asyncio
import json

import pytest

from entrypoint.inside.engine_guard import RequireInternalKey

KEY = "sk-internal-" + "q2w3e4r5t6y7u8i9o0p1a2s3"


class App:
    def __init__(self):
        self.called = False

    async def __call__(self, scope, receive, send):
        self.called = True
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"model output"})


def request(path: str, headers: dict[str, str] | None = None, method: str = "POST",
            kind: str = "http", key: str | None = KEY) -> tuple[bool, list[dict]]:
    app, sent = App(), []
    scope = {"type": kind, "method": method, "path": path, "root_path": "",
             "headers": [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]}

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(RequireInternalKey(app, key=key)(scope, receive, send))
    return app.called, sent


ROOT_MODEL_ROUTES = ["/invocations", "/tokenize", "/detokenize", "/pooling", "/classify", "/score",
                     "/rerank", "/v1/chat/completions", "/anything/new"]


@pytest.mark.parametrize("path", ROOT_MODEL_ROUTES)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong-0123456789abcdef"},
                                     {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer "},
                                     {"x-api-key": KEY}],
                         ids=["no key", "wrong key", "basic scheme", "empty bearer", "other header"])
def test_every_model_route_without_the_internal_key_gets_401_json(path, headers):
    called, sent = request(path, headers)
    assert not called
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"]) == {"error": "Unauthorized"}
    assert (b"content-type", b"application/json") in sent[0]["headers"]


@pytest.mark.parametrize("path", ["/invocations", "/tokenize", "/v1/models"])
def test_the_internal_key_opens_every_route(path):
    called, sent = request(path, {"Authorization": f"Bearer {KEY}"})
    assert called and sent[0]["status"] == 200


def test_two_authorization_headers_are_refused_even_if_one_is_right():
    app, sent = App(), []
    scope = {"type": "http", "method": "POST", "path": "/invocations", "root_path": "",
             "headers": [(b"authorization", f"Bearer {KEY}".encode()), (b"authorization", b"Bearer x")]}

    async def send(message):
        sent.append(message)

    asyncio.run(RequireInternalKey(app, key=KEY)(scope, None, send))
    assert not app.called and sent[0]["status"] == 401


@pytest.mark.parametrize("path", ["/health", "/ping", "/version", "/metrics", "/health/"])
def test_health_and_status_routes_stay_open(path):
    called, _ = request(path, method="GET")
    assert called


def test_cors_preflight_passes_without_a_key():
    called, _ = request("/invocations", method="OPTIONS")
    assert called


def test_a_websocket_without_the_key_is_closed():
    called, sent = request("/v1/realtime", kind="websocket", method="GET")
    assert not called and sent == [{"type": "websocket.close", "code": 1008}]


def test_without_an_internal_key_nothing_is_required():
    # The engine started by hand, outside llm-entry: vLLM's own rules apply.
    called, _ = request("/invocations", key="")
    assert called


def test_lifespan_events_pass_through():
    called, _ = request("", kind="lifespan", method="")
    assert called
