"""The engine's other client routes through the public port: Responses,
Anthropic's Messages and count_tokens, tokenize and detokenize, a response
by its id. Each answers as the engine does, with the key check, the key's
limits and its usage like the chat route (issue: every route the engine
serves, relayed). Real llm-entry, real supervisord, real LiteLLM, the engine
double speaking vLLM's shapes."""

from __future__ import annotations

import json
import secrets

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import wait_for

from harness import MASTER_KEY, Entry

TEAM_KEY = "sk-" + secrets.token_hex(16)
LIMITED_KEY = "sk-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routes")
    keys_file = tmp / "keys"
    keys_file.write_text(f"{TEAM_KEY} name=team\n{LIMITED_KEY} name=limited rpm=2\n")
    entry = Entry(tmp, args=["--api-keys-file", str(keys_file)]).start()
    try:
        entry.wait_ready()
        yield entry
    finally:
        entry.kill_everything()


def request_both_ways(entry: Entry, method: str, path: str, body: dict | None,
                      headers: dict) -> tuple[requests.Response, requests.Response]:
    """(through the public port, straight to the engine)."""
    data = json.dumps(body).encode() if body is not None else None
    kinds = {"Content-Type": "application/json"} if data is not None else {}
    proxied = requests.request(method, entry.url(path), data=data, headers={**kinds, **headers}, timeout=60)
    direct = requests.request(method, f"http://127.0.0.1:{entry.engine_port}{path}", data=data, timeout=60,
                              headers={**kinds, "Authorization": f"Bearer {entry.engine_key()}"})
    return proxied, direct


def named_events(text: str) -> list[tuple[str, dict]]:
    """(event name, payload) of a stream of named events, which ends without [DONE]."""
    found = []
    for part in text.split("\n\n"):
        if part.strip():
            name, data = part.split("\n", 1)
            found.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


def bearer(key: str = MASTER_KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def responses_body(entry: Entry, **extra) -> dict:
    return {"model": entry.served_model_name, "input": "one two three", **extra}


def messages_body(entry: Entry, **extra) -> dict:
    return {"model": entry.served_model_name, "max_tokens": 16,
            "messages": [{"role": "user", "content": "one two three"}], **extra}


def test_responses_answer_as_the_engine_does(served) -> None:
    proxied, direct = request_both_ways(served, "POST", "/v1/responses", responses_body(served), bearer())
    assert proxied.status_code == direct.status_code == 200
    assert proxied.json().keys() == direct.json().keys()
    assert proxied.json()["usage"] == direct.json()["usage"]


def test_a_responses_stream_arrives_with_the_engines_events_and_its_usage(served) -> None:
    proxied, direct = request_both_ways(served, "POST", "/v1/responses", responses_body(served, stream=True),
                                        bearer())
    assert proxied.status_code == 200 and proxied.headers["content-type"].startswith("text/event-stream")
    got, expected = named_events(proxied.text), named_events(direct.text)
    assert [name for name, _ in got] == [name for name, _ in expected]
    assert got[-1][1]["response"]["usage"] == expected[-1][1]["response"]["usage"]
    # Without /v1 too, as LiteLLM answered it.
    short = requests.post(served.url("/responses"), json=responses_body(served, stream=True), headers=bearer(),
                          timeout=60)
    assert [name for name, _ in named_events(short.text)] == [name for name, _ in expected]


def test_messages_take_the_key_in_x_api_key_as_anthropic_clients_send_it(served) -> None:
    headers = {"x-api-key": TEAM_KEY, "anthropic-version": "2023-06-01"}
    proxied, direct = request_both_ways(served, "POST", "/v1/messages", messages_body(served), headers)
    assert proxied.status_code == direct.status_code == 200
    assert proxied.json().keys() == direct.json().keys() and proxied.json()["type"] == "message"
    proxied, direct = request_both_ways(served, "POST", "/v1/messages", messages_body(served, stream=True), headers)
    got = named_events(proxied.text)
    assert [name for name, _ in got] == [name for name, _ in named_events(direct.text)]
    assert got[-2] == ("message_delta", named_events(direct.text)[-2][1])


@pytest.mark.parametrize("path, body", [
    ("/v1/messages/count_tokens", {"messages": [{"role": "user", "content": "one two three"}]}),
    ("/tokenize", {"prompt": "one two three"}),
    ("/detokenize", {"tokens": [1, 2, 3]}),
])
def test_token_routes_answer_the_engines_body(served, path, body) -> None:
    body = {"model": served.served_model_name, **body}
    proxied, direct = request_both_ways(served, "POST", path, body, bearer(TEAM_KEY))
    assert proxied.status_code == direct.status_code == 200
    assert proxied.json() == direct.json()


def test_a_response_by_id_gets_the_engines_own_answer(served) -> None:
    for method, path in (("GET", "/v1/responses/resp_0a1b2c"), ("POST", "/v1/responses/resp_0a1b2c/cancel")):
        proxied, direct = request_both_ways(served, method, path, None, bearer(TEAM_KEY))
        assert proxied.status_code == direct.status_code == 404
        assert proxied.json() == direct.json()


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/responses"), ("GET", "/v1/responses/resp_1"), ("POST", "/v1/responses/resp_1/cancel"),
    ("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"), ("POST", "/tokenize"),
    ("POST", "/detokenize"), ("POST", "/v1/rerank"), ("POST", "/pooling"),
])
def test_every_relayed_route_wants_a_key(served, method, path) -> None:
    for headers in ({}, {"x-api-key": "sk-" + secrets.token_hex(16)}):
        assert requests.request(method, served.url(path), headers=headers, timeout=30).status_code == 401


def test_a_route_the_model_lacks_gets_the_engines_404(served) -> None:
    proxied, direct = request_both_ways(served, "POST", "/v1/rerank", {"query": "q", "documents": ["d"]},
                                        bearer(TEAM_KEY))
    assert proxied.status_code == direct.status_code == 404 and proxied.json() == direct.json()


def test_the_keys_limits_hold_on_the_new_routes(served) -> None:
    headers = {"x-api-key": LIMITED_KEY}
    statuses = [request_both_ways(served, "POST", path, body, headers)[0].status_code
                for path, body in (("/tokenize", {"prompt": "a"}), ("/v1/messages", messages_body(served)),
                                   ("/v1/responses", responses_body(served)))]
    assert statuses == [200, 200, 429]


def test_tokens_of_responses_and_messages_are_counted_per_key(served) -> None:
    def counted() -> dict:
        page = requests.get(served.url("/metrics"), headers=bearer(), timeout=30).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(page) for s in family.samples}
    model = served.served_model_name
    prompt = ("llm_entry_prompt_tokens_total", (("key", "team"), ("model", model)))
    completion = ("llm_entry_completion_tokens_total", (("key", "team"), ("model", model)))
    before = counted()
    used = [0, 0]
    for path, body, stream in (("/v1/responses", responses_body(served), False),
                               ("/v1/responses", responses_body(served, stream=True), True),
                               ("/v1/messages", messages_body(served), False),
                               ("/v1/messages", messages_body(served, stream=True), True)):
        answer = request_both_ways(served, "POST", path, body, bearer(TEAM_KEY))[0]
        assert answer.status_code == 200, answer.text
        usage = (named_events(answer.text)[-1][1]["response"]["usage"] if path == "/v1/responses" and stream
                 else named_events(answer.text)[-2][1]["usage"] if stream else answer.json()["usage"])
        used[0] += usage["input_tokens"]
        used[1] += usage["output_tokens"]
    after = counted()
    assert after[prompt] - before.get(prompt, 0) == used[0]
    assert after[completion] - before.get(completion, 0) == used[1]
    assert after[("llm_entry_requests_total", (("key", "team"), ("model", model), ("route", "/v1/messages"),
                                               ("status", "200")))] >= 2
    wait_for(lambda: "key=team model=" in served.output() and "route=/v1/responses status=200 prompt_tokens="
             in served.output(), 10, "the access line of a Responses request", poll=0.1)
