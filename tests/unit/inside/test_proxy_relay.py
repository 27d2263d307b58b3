"""Unit tests of the front and the model relay that run inside the proxy: which
requests they take, the headers each side gets, refusals and errors, driven
as an ASGI app in this process (the integration tier, tests/integration/test_relay.py, runs it
inside the real LiteLLM proxy)."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench.procs import free_port
from entrypoint.inside.key_ring import KeyRing
from entrypoint.inside.proxy_front import ProxyFront
from entrypoint.inside.proxy_relay import (
    ENGINE_KEY_VARIABLE,
    ENGINE_URL_VARIABLE,
    EngineRelay,
    RelaySettings,
    client_response_headers,
    engine_request_headers,
)
from entrypoint.inside.proxy_server import LITELLM_APP, RELAY_APP, serving_the_relay

MASTER = "sk-master-0123456789abcdef"
ENGINE_KEY = "sk-internal-0123456789abcdef"


def test_the_engine_gets_the_clients_headers_less_credentials_and_hop_by_hop_ones() -> None:
    headers = [(b"host", b"public:8080"), (b"authorization", b"Bearer " + MASTER.encode()),
               (b"x-api-key", MASTER.encode()), (b"api-key", MASTER.encode()), (b"cookie", b"a=b"),
               (b"connection", b"keep-alive"), (b"content-length", b"12"), (b"transfer-encoding", b"chunked"),
               (b"content-type", b"application/json"), (b"x-request-id", b"r-1"), (b"accept", b"*/*")]
    assert engine_request_headers(headers, ENGINE_KEY) == {
        "content-type": "application/json", "x-request-id": "r-1", "accept": "*/*",
        "Authorization": f"Bearer {ENGINE_KEY}",
    }


def test_the_client_gets_the_engines_headers_less_framing_date_and_server() -> None:
    raw = [(b"Content-Type", b"text/event-stream; charset=utf-8"), (b"Transfer-Encoding", b"chunked"),
           (b"Date", b"Tue"), (b"Server", b"uvicorn"), (b"Connection", b"keep-alive"),
           (b"x-request-id", b"r-1"), (b"content-length", b"10")]
    assert client_response_headers(raw) == [(b"content-type", b"text/event-stream; charset=utf-8"),
                                            (b"x-request-id", b"r-1"), (b"content-length", b"10")]


def test_settings_come_from_the_environment_and_say_what_is_missing() -> None:
    settings = RelaySettings.from_environment({ENGINE_URL_VARIABLE: "http://127.0.0.1:3000/",
                                               ENGINE_KEY_VARIABLE: ENGINE_KEY})
    assert settings == RelaySettings("http://127.0.0.1:3000", ENGINE_KEY, 600.0)
    with pytest.raises(RuntimeError, match="LLM_ENTRY_ENGINE_URL and LLM_ENTRY_ENGINE_KEY not set"):
        RelaySettings.from_environment({})


class Inner:
    """LiteLLM's app, as far as the relay can tell: records what reached it."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, str]] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append((scope.get("method", ""), scope.get("path", "")))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"inner", "more_body": False})


def call(relay: ProxyFront, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"{}"):
    """Drives one HTTP request through the ASGI app: (status, headers, body)."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)   # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b"",
             "client": ("203.0.113.9", 5555)}
    async def request_then_close() -> None:
        await relay(scope, receive, send)
        await relay.close()

    asyncio.run(request_then_close())
    start, *bodies = sent
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in bodies)


@pytest.fixture
def relay_to_nowhere() -> tuple[ProxyFront, Inner]:
    inner = Inner()
    ring = KeyRing(MASTER)
    # A port nothing listens on: the engine is down (starting, restarting).
    return ProxyFront(inner, EngineRelay(RelaySettings(f"http://127.0.0.1:{free_port()}", ENGINE_KEY)),
                      lambda: ring), inner


OTHER_ROUTES = [("GET", "/v1/models"), ("POST", "/v1/images/generations"), ("GET", "/v1/chat/completions"),
                ("POST", "/v1/chat/completions/"), ("POST", "/key/generate"), ("POST", "/"), ("GET", "/openapi.json"),
                ("GET", "/ui/"), ("GET", "/public/litellm_model_cost_map"), ("DELETE", "/v1/files/x"),
                ("PUT", "/config/update"), ("GET", "/health")]


def test_other_routes_and_methods_go_to_litellm_with_a_known_key(relay_to_nowhere) -> None:
    relay, inner = relay_to_nowhere
    for method, path in OTHER_ROUTES:
        assert call(relay, method, path, [(b"authorization", b"Bearer " + MASTER.encode())])[0] == 299
    assert len(inner.paths) == len(OTHER_ROUTES)


def test_without_a_known_key_only_the_open_routes_reach_litellm(relay_to_nowhere) -> None:
    relay, inner = relay_to_nowhere
    for method, path in OTHER_ROUTES:
        assert call(relay, method, path, [])[0] == 401
        assert call(relay, method, path, [(b"x-api-key", b"sk-not-a-key-this-server-knows")])[0] == 401
    assert inner.paths == []
    for path in ("/health/liveliness", "/health/liveness", "/health/readiness"):
        assert call(relay, "GET", path, [])[0] == 299
    preflight = [(b"origin", b"https://app.example"), (b"access-control-request-method", b"POST")]
    assert call(relay, "OPTIONS", "/v1/chat/completions", preflight)[0] == 299
    assert len(inner.paths) == 4


def test_no_key_gets_litellm_shaped_401_and_never_reaches_litellm(relay_to_nowhere, caplog) -> None:
    relay, inner = relay_to_nowhere
    status, headers, body = call(relay, "POST", "/v1/chat/completions", [])
    assert status == 401 and headers[b"www-authenticate"] == b"Bearer"
    error = json.loads(body)["error"]
    assert error["code"] == "401" and error["type"] == "auth_error" and error["message"].startswith("No API key")
    assert inner.paths == []
    assert [r.getMessage() for r in caplog.records] == [
        "refused POST /v1/chat/completions from 203.0.113.9: no key"]


def test_a_wrong_key_gets_401_and_is_not_logged(relay_to_nowhere, caplog) -> None:
    relay, _ = relay_to_nowhere
    wrong = "sk-wrong-0123456789abcdef"
    status, _, body = call(relay, "POST", "/completions", [(b"authorization", f"Bearer {wrong}".encode())])
    assert status == 401 and b"Invalid API key" in body and wrong.encode() not in body
    assert wrong not in caplog.text
    assert caplog.text.rstrip().endswith("refused POST /completions from 203.0.113.9: wrong key")


def test_an_engine_that_does_not_answer_gets_a_502_json_error(relay_to_nowhere) -> None:
    relay, _ = relay_to_nowhere
    status, headers, body = call(relay, "POST", "/v1/embeddings", [(b"authorization", f"Bearer {MASTER}".encode())])
    assert status == 502 and headers[b"content-type"] == b"application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "502" and "not reachable" in error["message"]


def test_litellms_launcher_is_pointed_at_the_relay_app() -> None:
    def litellm_init_args(host, port, log_config=None):
        return {"app": LITELLM_APP, "host": host, "port": port, "server_header": False}

    environ = {"LLM_ENTRY_KEEP_ALIVE_TIMEOUT": "7.5"}
    args = serving_the_relay(litellm_init_args, environ)("0.0.0.0", 8080, log_config="x.json")
    assert args == {"app": RELAY_APP, "host": "0.0.0.0", "port": 8080, "server_header": False,
                    "http": "entrypoint.inside.proxy_protocol:BoundedHttpToolsProtocol", "timeout_keep_alive": 7.5}


def test_a_litellm_that_serves_another_app_stops_the_start() -> None:
    with pytest.raises(RuntimeError, match="not one llm-entry supports"):
        serving_the_relay(lambda: {"app": "litellm.proxy.other:app"})()


def test_metric_labels_name_only_what_was_served() -> None:
    from entrypoint.inside.proxy_front import series_labels

    assert series_labels("/v1/chat/completions", lambda: "tiny", 200) == ("tiny", "/v1/chat/completions")
    assert series_labels("/v1/chat/completions", lambda: "made-up", 404) == ("-", "/v1/chat/completions")
    assert series_labels("/v1/made-up-1", lambda: "tiny", 404) == ("-", "other")
    assert series_labels("/v1/responses", lambda: None, 200) == ("-", "/v1/responses")
    assert series_labels("/v1/responses", lambda: "tiny", 429) == ("-", "/v1/responses")
    assert series_labels("/v1/threads/abc/runs", lambda: "tiny", 429) == ("-", "other")
    assert series_labels("/v1/responses/{response_id}", lambda: None, 404) == ("-", "/v1/responses/{response_id}")



def test_the_engines_other_client_routes_are_relayed_not_sent_to_litellm(relay_to_nowhere) -> None:
    relay, inner = relay_to_nowhere
    bearer = [(b"authorization", f"Bearer {MASTER}".encode())]
    for method, path, headers in [("POST", "/v1/responses", bearer), ("GET", "/v1/responses/resp_1", bearer),
                                  ("POST", "/v1/responses/resp_1/cancel", bearer), ("POST", "/tokenize", bearer),
                                  ("POST", "/v1/messages", [(b"x-api-key", MASTER.encode())]),
                                  ("POST", "/v1/messages/count_tokens", [(b"x-api-key", MASTER.encode())])]:
        assert call(relay, method, path, headers)[0] == 502, path    # the engine (down here) was asked
        assert call(relay, method, path, [])[0] == 401
    assert inner.paths == []
