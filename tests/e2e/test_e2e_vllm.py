"""End to end with the real engine: llm-entry, supervisord, LiteLLM and the
real vLLM (CPU build) serving the demo model built offline, driven with the
official openai client (issue: real engine end to end).

No skip: a missing vLLM is an error here, so CI cannot pass without this tier.
The tests that share the module's one engine start run in file order; the
SIGTERM test stops that instance, so it comes last among them.
"""

import json
import os
import signal
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import alive, descendants, pgid_of, wait_for

from harness import MASTER_KEY, WRONG_KEY, Entry
from repo_paths import REPO

VLLM_START_DEADLINE = 600.0   # cold start on 2 busy cores, compile included
LOOPBACK = {"0100007F", "00000000000000000000000001000000"}   # 127.0.0.1, ::1 as /proc/net writes them
TCP_LISTEN = "0A"


def demo_entry(tmp) -> Entry:
    import vllm  # noqa: F401  (fails loudly, never skips)

    from entrypoint.engine_options import default_engine_cmd
    return Entry(tmp, model="demo", engine_cmd=" ".join(default_engine_cmd()),
                 args=["--cache-dir", str(tmp / "cache")], env={"HF_HUB_OFFLINE": "1"})


def wait_ready(entry: Entry) -> None:
    """Wait for the verdict Kubernetes would get: the real probes/startup script.

    Entry.wait_ready alone is not enough: it can see the placeholder heartbeat
    that llm-entry writes before its first not-ready, and return before
    anything started.
    """
    def check():
        if entry.process.poll() is not None:
            raise AssertionError(f"llm-entry exited with {entry.process.returncode}\n{entry.output()}")
        probe = subprocess.run(["sh", str(REPO / "probes" / "startup"), str(entry.probe_dir)],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        return probe.returncode == 0
    wait_for(check, VLLM_START_DEADLINE, "probes/startup to pass", poll=0.2)
    entry.record_tree()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    entry = demo_entry(tmp_path_factory.mktemp("e2e")).start()
    entry.served_model_name = "demo"
    try:
        wait_ready(entry)
        yield entry
    finally:
        entry.kill_everything()


@pytest.fixture(scope="module")
def engine_key(live) -> str:
    """The internal key llm-entry gave vLLM (read from its environment while it runs)."""
    key = live.engine_key()
    assert key and key not in (MASTER_KEY, WRONG_KEY)
    return key


def client(entry, key=MASTER_KEY, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=entry.url("/v1"), api_key=key, max_retries=0, timeout=120, **kwargs)


# -- the public port, through LiteLLM ------------------------------------------

def test_models_lists_the_demo_model(live):
    assert [m.id for m in client(live).models.list()] == ["demo"]


def test_chat_completion_answers(live):
    reply = client(live).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
    assert reply.choices[0].message.content is not None
    assert reply.usage.completion_tokens >= 1


def test_streaming_chat_completion_arrives_in_chunks(live):
    stream = client(live).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=12,
        stream=True, extra_body={"ignore_eos": True})
    chunks = [chunk for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert len(chunks) >= 2


def test_text_completion_answers(live):
    reply = client(live).completions.create(model="demo", prompt="The quick brown", max_tokens=5)
    assert reply.choices[0].text is not None


ROUTES = {
    "models": ("GET", "/v1/models", None),
    "chat": ("POST", "/v1/chat/completions",
             {"model": "demo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}),
    "chat-stream": ("POST", "/v1/chat/completions",
                    {"model": "demo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2,
                     "stream": True}),
    "completion": ("POST", "/v1/completions", {"model": "demo", "prompt": "x", "max_tokens": 2}),
}

PUBLIC_BAD_CREDENTIALS = {
    "no key": {},
    "wrong key": {"Authorization": f"Bearer {WRONG_KEY}"},
    "basic scheme": {"Authorization": f"Basic {MASTER_KEY}"},
}


# Routes vLLM serves at the root, outside the /v1 its own key check guards:
# llm-entry's engine guard closes them too.
ENGINE_ROOT_ROUTES = {
    "invocations": ("POST", "/invocations", {"model": "demo", "prompt": "x", "max_tokens": 2}),
    "tokenize": ("POST", "/tokenize", {"model": "demo", "prompt": "x"}),
}


def call(base_url: str, route: str, headers: dict[str, str]) -> requests.Response:
    method, path, body = {**ROUTES, **ENGINE_ROOT_ROUTES}[route]
    return requests.request(method, base_url + path, json=body, headers=headers, timeout=60)


def assert_openai_style_401(response: requests.Response, *secrets: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert isinstance(error, dict) and error["message"] and str(error["code"]) == "401", response.text
    for secret in secrets:
        assert secret not in response.text


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("variant", sorted(PUBLIC_BAD_CREDENTIALS))
def test_requests_without_a_valid_key_get_an_openai_style_401(live, route, variant):
    response = call(live.url(""), route, PUBLIC_BAD_CREDENTIALS[variant])
    assert_openai_style_401(response, MASTER_KEY, WRONG_KEY)


def test_the_openai_client_with_a_wrong_key_gets_an_authentication_error(live):
    with pytest.raises(openai.AuthenticationError) as refused:
        client(live, key=WRONG_KEY).models.list()
    assert refused.value.status_code == 401
    body = refused.value.body   # the client's view of the body's "error" object
    assert isinstance(body, dict) and body["message"], body
    assert WRONG_KEY not in str(body) and MASTER_KEY not in str(body)


def test_sixteen_concurrent_requests_all_succeed(live):
    api = client(live)

    def ask(i):
        return api.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": f"request {i}"}], max_tokens=4)

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(ask, range(16)))
    assert len(replies) == 16 and all(r.choices for r in replies)


# -- the real engine's exposure and keys ----------------------------------------

def listening_tcp_sockets() -> list[tuple[str, int, str]]:
    """(address as /proc/net writes it, port, socket inode) of every listening TCP socket."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].rsplit(":", 1)
            if fields[3] == TCP_LISTEN:
                found.append((address, int(port, 16), fields[9]))
    return found


def engine_group(entry) -> list[int]:
    """Every process in the engine's process group: API server, EngineCore, workers."""
    leader = entry.program_pid("engine")
    members = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and pgid_of(int(p.name)) == leader]
    titles = " ".join(cmdline(pid) for pid in members)
    assert leader in members and "VLLM::EngineCore" in titles and "VLLM::Worker" in titles, titles
    return members


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue   # closed while we looked
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_engine_port_listens_on_loopback_only(live):
    addresses = [address for address, port, _ in listening_tcp_sockets() if port == live.engine_port]
    assert addresses == ["0100007F"], addresses   # 127.0.0.1 only: not 0.0.0.0, not ::


def test_every_socket_the_engine_group_listens_on_is_loopback(live):
    """vLLM's workers open more TCP listeners (torch.distributed) than the HTTP port."""
    inodes = set().union(*map(socket_inodes, engine_group(live)))
    held = [(address, port) for address, port, inode in listening_tcp_sockets() if inode in inodes]
    assert ("0100007F", live.engine_port) in held, held   # proves the inode matching sees the port
    assert all(address in LOOPBACK for address, _ in held), held


@pytest.mark.parametrize("route", ["models", "chat", "completion", "invocations", "tokenize"])
@pytest.mark.parametrize("variant", ["no key", "wrong key", "master key"])
def test_engine_refuses_everything_but_the_internal_key(live, engine_key, route, variant):
    """Even a process inside the pod needs the internal key; the master key is not it."""
    headers = {"no key": {}, "wrong key": {"Authorization": f"Bearer {WRONG_KEY}"},
               "master key": {"Authorization": f"Bearer {MASTER_KEY}"}}[variant]
    response = call(f"http://127.0.0.1:{live.engine_port}", route, headers)
    assert response.status_code == 401, response.text
    # vLLM answers {"error": "Unauthorized"}: JSON, but not OpenAI's error object.
    assert response.json()["error"], response.text
    assert engine_key not in response.text and MASTER_KEY not in response.text


@pytest.mark.parametrize("route", ["models", "chat", "completion", "invocations", "tokenize"])
def test_engine_answers_the_internal_key(live, engine_key, route):
    """...and the routes refused above exist: the 401 is the guard, not a missing route."""
    response = call(f"http://127.0.0.1:{live.engine_port}", route, {"Authorization": f"Bearer {engine_key}"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer.get("object") in ("list", "chat.completion", "text_completion") or answer.get("tokens"), answer


def test_engine_health_stays_open_without_a_key(live):
    response = requests.get(f"http://127.0.0.1:{live.engine_port}/health", timeout=30)
    assert response.status_code == 200, response.text


def test_no_key_on_the_command_line_of_any_engine_process(live, engine_key):
    pids = set(engine_group(live)) | descendants(live.pid) | {live.pid}
    for pid in pids:
        line = cmdline(pid)
        for name, secret in (("master", MASTER_KEY), ("internal", engine_key)):
            assert secret not in line, f"the {name} key is on the command line of pid {pid}: {line[:80]}"


def test_no_engine_process_holds_the_master_key(live):
    for pid in engine_group(live):
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert MASTER_KEY.encode() not in environ, f"pid {pid} ({cmdline(pid)[:40]}) has the master key"


def test_no_key_in_the_captured_output(live, engine_key):
    client(live).chat.completions.create(model="demo", messages=[{"role": "user", "content": "log"}],
                                         max_tokens=2)
    call(live.url(""), "models", {"Authorization": f"Bearer {WRONG_KEY}"})
    text = live.output()
    assert "engine" in text and "proxy" in text   # both programs' output is in there
    for name, secret in (("master", MASTER_KEY), ("internal", engine_key), ("wrong", WRONG_KEY)):
        assert secret not in text, f"the {name} key is in llm-entry's output"


# -- the model routes relay the engine's answers ---------------------------------

ODD_REQUESTS = {
    # Bodies LiteLLM's own chat route answered with 500 where vLLM answers 4xx or 200.
    "chat: a JSON array": ("/v1/chat/completions", b'[{"role": "user", "content": "hi"}]'),
    "chat: a message whose content is a number": (
        "/v1/chat/completions", b'{"model": "demo", "messages": [{"role": "user", "content": 5}], "max_tokens": 2}'),
    "completion: a body that also carries messages": (
        "/v1/completions", b'{"model": "demo", "prompt": "hi", "messages": [{"role": "user", "content": "x"}], '
                           b'"max_tokens": 2}'),
    "completion: a prompt of token ids": (
        "/v1/completions", b'{"model": "demo", "prompt": [1, 2, 3], "max_tokens": 2}'),
    "completion: a batch of token-id prompts": (
        "/v1/completions", b'{"model": "demo", "prompt": [[1, 2], [3, 4, 5]], "max_tokens": 2}'),
    "chat: not JSON": ("/v1/chat/completions", b"{not json"),
    "chat: an empty body": ("/v1/chat/completions", b""),
    "chat: an unknown model": (
        "/v1/chat/completions", b'{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}'),
    "chat: no messages": ("/v1/chat/completions", b'{"model": "demo"}'),
    "chat: a temperature that is a word": (
        "/v1/chat/completions",
        b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}'),
    "chat: a negative max_tokens": (
        "/v1/chat/completions", b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}'),
    "completion: no prompt": ("/v1/completions", b'{"model": "demo", "max_tokens": 2}'),
    "embeddings on a generative model": ("/v1/embeddings", b'{"model": "demo", "input": "x"}'),
}


@pytest.mark.parametrize("name", sorted(ODD_REQUESTS))
def test_an_odd_request_gets_the_engines_status_through_the_proxy_and_never_a_5xx(live, engine_key, name):
    path, body = ODD_REQUESTS[name]
    headers = {"Content-Type": "application/json"}
    direct = requests.post(f"http://127.0.0.1:{live.engine_port}{path}", data=body, timeout=120,
                           headers={**headers, "Authorization": f"Bearer {engine_key}"})
    proxied = requests.post(live.url(path), data=body, timeout=120, headers={**headers, **live.headers()})
    assert proxied.status_code == direct.status_code, (proxied.text[:300], direct.text[:300])
    assert proxied.status_code < 500, proxied.text[:300]
    if proxied.status_code >= 400:
        assert proxied.json() == direct.json()   # the engine's own words


def test_a_token_id_prompt_gets_a_completion_through_the_proxy(live):
    reply = client(live).completions.create(model="demo", prompt=[5, 6, 7, 8], max_tokens=3)
    assert reply.usage.prompt_tokens == 4 and reply.choices[0].text is not None


def test_vllm_parameters_reach_the_engine_through_the_proxy(live):
    reply = client(live).completions.create(
        model="demo", prompt="The quick brown", max_tokens=4, n=2, logprobs=2, echo=True,
        extra_body={"prompt_logprobs": 1, "min_tokens": 4, "ignore_eos": True})
    assert len(reply.choices) == 2
    for choice in reply.choices:
        assert choice.text.startswith("The quick brown")          # echo
        assert len(choice.logprobs.top_logprobs[-1]) >= 2        # logprobs
        assert choice.model_extra.get("prompt_logprobs")         # vLLM's own extra
    assert reply.usage.completion_tokens == 8                    # 2 x 4: min_tokens and ignore_eos


def test_chat_logprobs_and_n_reach_the_engine_through_the_proxy(live):
    reply = client(live).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=3, n=2, logprobs=True,
        top_logprobs=2, extra_body={"min_tokens": 3, "ignore_eos": True})
    assert len(reply.choices) == 2
    assert all(len(choice.logprobs.content) == 3 for choice in reply.choices)
    assert all(len(choice.logprobs.content[0].top_logprobs) == 2 for choice in reply.choices)


def test_a_stream_through_the_proxy_has_the_engines_chunks(live):
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "min_tokens": 12,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    response = requests.post(live.url("/v1/chat/completions"), json=body, headers=live.headers(), timeout=120)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [part.removeprefix("data: ") for part in response.text.split("\n\n") if part.strip()]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 12           # vLLM's usage chunk, unchanged
    assert sum(1 for chunk in chunks for choice in chunk["choices"] if choice["delta"].get("content")) <= 12


def token_counters(entry) -> tuple[float, float]:
    """The master key's prompt and completion tokens in /metrics."""
    page = requests.get(entry.url("/metrics"), headers=entry.headers(), timeout=60)
    assert page.status_code == 200, page.text
    found = {"llm_entry_prompt_tokens_total": 0.0, "llm_entry_completion_tokens_total": 0.0}
    for family in text_string_to_metric_families(page.text):
        for sample in family.samples:
            if sample.name in found and sample.labels == {"key": "master", "model": "demo"}:
                found[sample.name] = sample.value
    return found["llm_entry_prompt_tokens_total"], found["llm_entry_completion_tokens_total"]


def test_token_counters_match_the_usage_the_engine_reported(live):
    messages = [{"role": "user", "content": "Count these tokens, please"}]
    prompt_before, completion_before = token_counters(live)
    reply = client(live).chat.completions.create(model="demo", messages=messages, max_tokens=7,
                                                 extra_body={"ignore_eos": True, "min_tokens": 7})
    # A stream that did not ask for usage: counted all the same, and its client sees no usage.
    body = {"model": "demo", "messages": messages, "max_tokens": 5, "min_tokens": 5, "ignore_eos": True,
            "stream": True}
    stream = requests.post(live.url("/v1/chat/completions"), json=body, headers=live.headers(), timeout=120)
    assert stream.status_code == 200 and '"usage"' not in stream.text
    assert stream.text.rstrip().endswith("data: [DONE]")
    prompt_after, completion_after = token_counters(live)
    assert reply.usage.completion_tokens == 7
    assert prompt_after - prompt_before == 2 * reply.usage.prompt_tokens
    assert completion_after - completion_before == 7 + 5


def test_the_metrics_page_holds_the_engines_metrics_renamed_apart(live):
    page = requests.get(live.url("/metrics"), headers=live.headers(), timeout=60).text
    families = [family.name for family in text_string_to_metric_families(page)]
    assert len(families) == len(set(families)), "a metric family is on the page twice"
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                 "llm_entry_requests", "llm_entry_ready", "llm_entry_engine_metrics_up"):
        assert name in families, name
    assert not [name for name in families if name.startswith(("process_", "python_"))]


# -- the engine's other client routes, relayed ------------------------------------

SAY_HI = [{"role": "user", "content": "hi"}]
ENGINE_ROUTE_REQUESTS = {
    "responses": ("/v1/responses", {"model": "demo", "input": "hi", "max_output_tokens": 4}),
    "responses-stream": ("/v1/responses", {"model": "demo", "input": "hi", "max_output_tokens": 4, "stream": True}),
    "messages": ("/v1/messages", {"model": "demo", "messages": SAY_HI, "max_tokens": 4}),
    "messages-stream": ("/v1/messages", {"model": "demo", "messages": SAY_HI, "max_tokens": 4, "stream": True}),
    "count_tokens": ("/v1/messages/count_tokens", {"model": "demo", "messages": SAY_HI}),
    "tokenize": ("/tokenize", {"model": "demo", "prompt": "hello there"}),
    "detokenize": ("/detokenize", {"model": "demo", "tokens": [5, 6, 7]}),
}


def top_level_keys(response: requests.Response) -> object:
    """A JSON answer's keys; a stream's event names and its last event's keys."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return sorted(response.json())
    events = [part.split("\n", 1) for part in response.text.split("\n\n") if part.strip()]
    return sorted({name for name, _ in events}), sorted(json.loads(events[-1][1].removeprefix("data: ")))


@pytest.mark.parametrize("name", sorted(ENGINE_ROUTE_REQUESTS))
def test_the_engines_other_routes_answer_through_the_proxy_as_directly(live, engine_key, name):
    path, body = ENGINE_ROUTE_REQUESTS[name]
    # Anthropic's clients send their key in x-api-key.
    key = {"x-api-key": MASTER_KEY} if path.startswith("/v1/messages") else live.headers()
    direct = requests.post(f"http://127.0.0.1:{live.engine_port}{path}", json=body, timeout=120,
                           headers={"Authorization": f"Bearer {engine_key}"})
    proxied = requests.post(live.url(path), json=body, timeout=120, headers=key)
    assert proxied.status_code == direct.status_code == 200, (proxied.text[:300], direct.text[:300])
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    assert top_level_keys(proxied) == top_level_keys(direct)
    assert requests.post(live.url(path), json=body, timeout=120).status_code == 401


def test_a_response_by_id_gets_the_engines_answer_through_the_proxy(live, engine_key):
    for method, path in (("GET", "/v1/responses/resp_0a1b2c"), ("POST", "/v1/responses/resp_0a1b2c/cancel")):
        direct = requests.request(method, f"http://127.0.0.1:{live.engine_port}{path}", timeout=120,
                                  headers={"Authorization": f"Bearer {engine_key}"})
        proxied = requests.request(method, live.url(path), headers=live.headers(), timeout=120)
        assert proxied.status_code == direct.status_code and proxied.json() == direct.json()
        assert requests.request(method, live.url(path), timeout=120).status_code == 401


def test_tokens_of_responses_and_messages_are_counted_as_the_engine_reported(live):
    prompt_before, completion_before = token_counters(live)
    used = [0, 0]
    for name in ("responses", "responses-stream", "messages", "messages-stream"):
        path, body = ENGINE_ROUTE_REQUESTS[name]
        answer = requests.post(live.url(path), json=body, headers=live.headers(), timeout=120)
        assert answer.status_code == 200, answer.text[:300]
        if body.get("stream"):
            payloads = [json.loads(part.split("data: ", 1)[1]) for part in answer.text.split("\n\n") if part.strip()]
            usage = (payloads[-1]["response"]["usage"] if name.startswith("responses")
                     else next(p for p in payloads if p["type"] == "message_delta")["usage"])
        else:
            usage = answer.json()["usage"]
        used[0] += usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)
        used[1] += usage["output_tokens"]
    prompt_after, completion_after = token_counters(live)
    assert (prompt_after - prompt_before, completion_after - completion_before) == tuple(used)


# -- shutdown (stops the shared instance: keep it last among the `live` tests) ----

STREAM_TOKENS = 600   # 4-6 s through the proxy on 2 busy cores; the proxy may drain for about 11 s
SIGTERM_AT_CHUNK = 5


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_sigterm_with_a_stream_in_flight_finishes_it_and_leaves_nothing(live, engine_key):
    """Last test of the module: it stops the shared instance.

    The stream's own thread sends SIGTERM at its fifth chunk, so the count at
    that moment is exact: sent from the main thread, the signal went out 14 to
    89 chunks after the first one here, and once only after the whole stream.
    """
    live.record_tree()   # the tree is complete now: nothing starts during a stream
    engine = live.program_pid("engine")
    assert "entrypoint.inside.engine_cli serve" in cmdline(engine)   # the real engine, vllm serve
    got: dict = {"chunks": 0}
    signalled = threading.Event()

    def stream():
        try:
            for chunk in client(live).chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": "Tell me"}], max_tokens=STREAM_TOKENS,
                    stream=True, extra_body={"ignore_eos": True}):
                if chunk.choices and chunk.choices[0].delta.content:
                    got["chunks"] += 1
                    if got["chunks"] == SIGTERM_AT_CHUNK:
                        os.kill(live.pid, signal.SIGTERM)
                        got["at_sigterm"] = got["chunks"]
                        signalled.set()
                if chunk.choices and chunk.choices[0].finish_reason:
                    got["finish"] = chunk.choices[0].finish_reason
        except Exception as error:  # reported below
            got["error"] = repr(error)
        signalled.set()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    assert signalled.wait(120) and "at_sigterm" in got, f"SIGTERM was never sent: {got}"
    # The proxy closes its listener when its drain begins: the stream must outlive that.
    wait_for(lambda: not port_open(live.port), 30, "the proxy to stop listening", poll=0.05)
    at_drain = got["chunks"]
    assert live.wait_exit(120) == 0, live.output()
    thread.join(60)
    assert not thread.is_alive(), "the stream never ended"
    assert "error" not in got, got
    # In flight at SIGTERM and completed after it. The listener may close only
    # after the last chunk on a fast run (457 of 457 seen once), so the count
    # at the drain's start is a lower bound, not a strict one.
    assert got["chunks"] >= at_drain >= got["at_sigterm"] > 0, (at_drain, got)
    assert got["chunks"] > got["at_sigterm"], got
    assert got.get("finish") == "length", got   # ignore_eos: every requested token came
    output = live.output()
    assert "proxy stopped in" in output and "engine stopped in" in output, output[-3000:]
    for secret in (MASTER_KEY, engine_key):
        assert secret not in output
    assert live.has("not-ready") and not live.has("not-healthy")
    live.assert_nothing_left()
    assert not [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and pgid_of(int(p.name)) == engine]


def test_engine_sigkill_fails_the_container_and_leaves_no_worker(tmp_path):
    entry = demo_entry(tmp_path).start()
    entry.served_model_name = "demo"
    try:
        wait_ready(entry)
        engine = entry.program_pid("engine")
        workers = [pid for pid in entry.record_tree() if pid != engine and pgid_of(pid) == engine]
        assert workers, "vLLM's EngineCore should run in the engine's process group"
        os.kill(engine, signal.SIGKILL)
        assert entry.wait_exit(120) == 3, entry.output()
        assert entry.has("not-healthy") and entry.has("not-ready")
        assert "SIGKILL" in entry.stderr()
        wait_for(lambda: not any(map(alive, workers)), 30, "the orphaned EngineCore to be gone")
        entry.assert_nothing_left()
    finally:
        entry.kill_everything()
