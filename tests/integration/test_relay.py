"""The model routes through the public port give what the engine gives: its
status, its body, its stream chunk by chunk, and the engine gets the
client's request as sent, with the internal key in place of the client's
(issue: the proxy at engine speed). Real llm-entry, real supervisord, real
LiteLLM, the engine double answering with what it received (ENGINE_DOUBLE_ECHO)."""

from __future__ import annotations

import json
import socket

import pytest
import requests

from bench.procs import wait_for

from harness import MASTER_KEY, Entry

LONG_STREAM_TOKENS = 2100


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("relay")
    entry = Entry(tmp, env={"ENGINE_DOUBLE_ECHO": "1", "ENGINE_DOUBLE_LOG_REQUESTS": "1",
                            "ENGINE_DOUBLE_TOKENS": str(LONG_STREAM_TOKENS)}).start()
    try:
        entry.wait_ready()
        yield entry
    finally:
        entry.kill_everything()


def through_proxy(entry: Entry, path: str, data: bytes, headers: dict | None = None, **kwargs):
    return requests.post(entry.url(path), data=data, timeout=60,
                         headers={"Content-Type": "application/json", **entry.headers(), **(headers or {})},
                         **kwargs)


def direct(entry: Entry, path: str, data: bytes):
    return requests.post(f"http://127.0.0.1:{entry.engine_port}{path}", data=data, timeout=60,
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {entry.engine_key()}"})


def events(text: str) -> list[dict]:
    """The JSON payloads of a server-sent event stream, up to [DONE] (which must be there)."""
    payloads = [part.removeprefix("data: ") for part in text.split("\n\n") if part.strip()]
    assert payloads[-1] == "data: [DONE]".removeprefix("data: "), payloads[-1][:200]
    return [json.loads(payload) for payload in payloads[:-1]]


def streamed_contents(text: str) -> list[str]:
    return [choice["delta"].get("content", "") for event in events(text) for choice in event["choices"]
            if choice["delta"].get("content")]


def chat_body(entry: Entry, content: str, **extra) -> bytes:
    return json.dumps({"model": entry.served_model_name, "messages": [{"role": "user", "content": content}],
                       **extra}).encode()


def test_a_stream_of_200_identical_chunks_arrives_whole(relay):
    # LiteLLM's own chat route cuts a stream whose chunks repeat 100 times.
    response = through_proxy(relay, "/v1/chat/completions", chat_body(relay, "hi", stream=True, max_tokens=210))
    assert response.status_code == 200, response.text
    contents = streamed_contents(response.text)
    assert contents[:3] == ["double", " says:", " hi"]
    assert contents[3:] == [" tok"] * 207
    assert events(response.text)[-1]["choices"][0]["finish_reason"] == "length"


def test_a_stream_of_2000_chunks_arrives_whole_and_in_order(relay):
    words = [f"w{i}" for i in range(2000)]
    response = through_proxy(relay, "/chat/completions", chat_body(relay, " ".join(words), stream=True))
    assert response.status_code == 200, response.text
    contents = streamed_contents(response.text)
    assert len(contents) == LONG_STREAM_TOKENS
    assert [c.strip() for c in contents[2:2002]] == words
    assert "".join(contents) == "double says: " + " ".join(words) + " tok" * (LONG_STREAM_TOKENS - 2002)


def test_the_stream_keeps_the_engines_headers(relay):
    response = through_proxy(relay, "/v1/chat/completions", chat_body(relay, "hi", stream=True, max_tokens=3))
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert "engine-double" not in response.headers.get("server", "")


EXTRAS = {
    # vLLM's own sampling and structured-output parameters, and standard ones
    # LiteLLM would check or drop.
    "ignore_eos": True, "min_tokens": 2, "guided_json": {"type": "object"}, "n": 2, "logprobs": True,
    "top_logprobs": 3, "repetition_penalty": 1.1, "skip_special_tokens": False, "seed": 7,
    "vendor_field_nobody_knows": [1, {"a": None}],
}


def test_the_engine_gets_the_chat_body_unchanged(relay):
    body = chat_body(relay, "hi", max_tokens=4, **EXTRAS)
    response = through_proxy(relay, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.json()["echo"]["body"] == json.loads(body)


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2], [3, 4]], "text", ["a", "b"]])
def test_the_engine_gets_any_prompt_form_unchanged(relay, prompt):
    body = json.dumps({"model": relay.served_model_name, "prompt": prompt, "max_tokens": 3, "echo": False}).encode()
    response = through_proxy(relay, "/v1/completions", body)
    assert response.status_code == 200, response.text
    assert response.json()["echo"]["body"] == json.loads(body)


def test_the_engine_gets_the_internal_key_and_none_of_the_clients_credentials(relay):
    response = through_proxy(relay, "/v1/chat/completions", chat_body(relay, "hi"),
                             headers={"x-api-key": MASTER_KEY, "Cookie": "session=abc",
                                      "X-Request-Id": "req-42", "User-Agent": "a-client/1.0"})
    assert response.status_code == 200, response.text
    seen = response.json()["echo"]["headers"]
    assert seen["authorization"] == "the engine's key"
    assert not {"x-api-key", "api-key", "cookie"} & set(seen)
    assert seen["x-request-id"] == "req-42" and seen["user-agent"] == "a-client/1.0"
    assert MASTER_KEY not in response.text and relay.engine_key() not in response.text


ODD_REQUESTS = {
    "a JSON array": b'[{"role": "user", "content": "hi"}]',
    "not JSON": b"{not json",
    "an empty body": b"",
    "an unknown model": b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}',
    "no messages": b'{"model": "MODEL"}',
    "messages that are not a list": b'{"model": "MODEL", "messages": "hi"}',
}


@pytest.mark.parametrize("name", sorted(ODD_REQUESTS))
def test_an_odd_chat_request_gets_exactly_the_engines_answer(relay, name):
    body = ODD_REQUESTS[name].replace(b"MODEL", relay.served_model_name.encode())
    expected = direct(relay, "/v1/chat/completions", body)
    got = through_proxy(relay, "/v1/chat/completions", body)
    assert 400 <= expected.status_code < 500, expected.text
    assert (got.status_code, got.content) == (expected.status_code, expected.content)
    assert got.headers["content-type"] == expected.headers["content-type"]


def test_a_client_that_goes_away_mid_stream_stops_the_engines_stream(entry_factory):
    # 100,000 tokens 10 ms apart: the stream would run for 1,000 s. The engine
    # double logs a request when it ends; it ends early only if the relay closes
    # the engine's connection once the client is gone.
    entry = entry_factory(env={"ENGINE_DOUBLE_TOKENS": "100000", "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.01",
                               "ENGINE_DOUBLE_LOG_REQUESTS": "1"}).start()
    entry.wait_ready()
    body = chat_body(entry, "hi", stream=True)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    ended = '"POST /v1/chat/completions" 200'
    with socket.create_connection(("127.0.0.1", entry.port), timeout=30) as client:
        client.sendall(head + body)
        received = b""
        while received.count(b"data: ") < 5:
            received += client.recv(65536)
    assert ended not in entry.output()
    wait_for(lambda: ended in entry.output(), 30, "the engine to end the abandoned stream", poll=0.2)


def test_a_browser_origin_gets_the_same_cors_answer_on_the_model_routes_as_on_litellms(relay):
    origin = {"Origin": "https://app.example"}
    relayed = through_proxy(relay, "/v1/chat/completions", chat_body(relay, "hi"), headers=origin)
    litellms = requests.get(relay.url("/v1/models"), headers={**relay.headers(), **origin}, timeout=30)
    assert relayed.status_code == litellms.status_code == 200

    def cors(response):
        return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
    assert cors(relayed) == cors(litellms) and cors(relayed).get("access-control-allow-origin") == "*"
