"""The public port under hostile traffic (issue: the public port under hostile
traffic): without a key nothing but the health routes answers and no body is
read; every client is bounded in head, body and time; a client's bytes never
start a log line; a client's mistake is never a 5xx; a dead worker's places
and a gone client's request are freed.

The real llm-entry with two proxy workers (so the keys' limits live in the
private redis-server), the engine test double, and bounds made small so that
each test takes seconds. Raw sockets where the test must control every byte.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from bench.procs import children_of, wait_for
from entrypoint.inside.ui_page import PAGE_ROUTES

from harness import MASTER_KEY, Entry

TEAM_KEY = "team-a-" + "6b2d9f1e4c8a0d3f7e5b9c1a"
ONE_AT_A_TIME_KEY = "solo-" + "3c9e1a7d5b2f8e0c4a6d9b1f"
WRONG_KEY = "sk-wrong-" + "9f8e7d6c5b4a39281706f5e4"
HEADER_TIMEOUT, BODY_TIMEOUT, KEEP_ALIVE = 2.0, 2.0, 2.0
MAX_BODY = 1024 * 1024
MAX_HEADER = 16 * 1024
MARGIN = 8.0     # seconds of slack on a busy 2-core machine, on top of a bound

# LiteLLM's pages and routes that answered without a key, and the model routes.
ROUTES = ["/", "/docs", "/openapi.json", "/redoc", "/ui/", "/ui", "/public/litellm_model_cost_map",
          "/sso/key/generate", "/.well-known/litellm-ui-config", "/v1/responses", "/v1/responses/resp_1",
          "/v1/messages", "/v1/messages/count_tokens", "/key/generate", "/metrics", "/v1/models", "/health",
          "/v1/chat/completions", "/chat/completions", "/v1/completions", "/v1/embeddings",
          "/v1/audio/transcriptions", "/tokenize", "/v1/realtime", "/model/new", "/config/update",
          "/health/liveliness/../../openapi.json", "//openapi.json", "/HEALTH/readiness", "/llm-entry/key",
          "/llm-entry/ui/app.js", "/llm-entry/ui/../key"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    keys = tmp / "api-keys"
    keys.write_text(f"{TEAM_KEY} name=team-a\n{ONE_AT_A_TIME_KEY} name=solo max_parallel=1\n")
    hold = tmp / "hold"
    running = Entry(tmp, args=[
        "--api-keys-file", str(keys), "--proxy-workers", "2",
        "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
        "--keep-alive-timeout", str(KEEP_ALIVE), "--max-body-size", "1MiB", "--max-header-size", "16KiB",
    ], env={"ENGINE_DOUBLE_HOLD_FILE": str(hold), "ENGINE_DOUBLE_LOG_REQUESTS": "1"}).start()
    try:
        running.wait_ready()
        running.hold = hold
        yield running
    finally:
        hold.unlink(missing_ok=True)
        running.kill_everything()


# -- a client that controls every byte ------------------------------------------

def connect(entry: Entry, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", entry.port), timeout=timeout)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer: (status, headers, body); the body is read by its Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed before an answer: {data!r}")
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (whatever it sends first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat_body(entry: Entry, content: str = "hello", **extra) -> dict:
    return {"model": entry.served_model_name, "messages": [{"role": "user", "content": content}], **extra}


# -- 1. without a key, nothing past the front -------------------------------------

def test_without_a_known_key_every_route_and_method_gets_a_small_401(entry):
    session = requests.Session()
    for path in ROUTES:
        for method in METHODS:
            if method == "GET" and path in PAGE_ROUTES:
                continue                 # the page's files answer anyone (test_page_and_own_key)
            for headers in ({}, bearer(WRONG_KEY), {"x-api-key": WRONG_KEY}):
                answer = session.request(method, entry.url(path), headers=headers, timeout=30)
                assert answer.status_code == 401, (method, path, headers, answer.status_code, answer.text[:200])
                assert len(answer.content) < 1024
                assert answer.json()["error"]["type"] == "auth_error"


def test_the_health_routes_and_a_cors_preflight_answer_without_a_key(entry):
    for path in ("/health/liveliness", "/health/liveness", "/health/readiness"):
        assert requests.get(entry.url(path), timeout=30).status_code == 200
    preflight = requests.options(entry.url("/v1/chat/completions"), timeout=30, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200


def test_a_websocket_without_a_key_is_refused_before_it_opens(entry):
    with connect(entry) as sock:
        sock.sendall(head("GET", "/v1/realtime?model=x", {
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}))
        status, _, _ = read_answer(sock, 30)
        assert status == 403


@pytest.mark.parametrize("path, content_type", [
    ("/v1/responses", "application/json"), ("/v1/chat/completions", "application/json"),
    ("/v1/messages", "application/json"), ("/v1/audio/transcriptions", "multipart/form-data; boundary=x"),
    ("/key/generate", "application/json"),
])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_anonymous_body_is_never_read_and_its_connection_is_closed(entry, path, content_type, framing):
    framing_header = ({"Content-Length": str(1 << 30)} if framing == "length"
                      else {"Transfer-Encoding": "chunked"})
    with connect(entry) as sock:
        sock.sendall(head("POST", path, {"Content-Type": content_type, **framing_header}))
        first = b"x" * 65536
        sock.sendall(first if framing == "length" else b"%x\r\n%s\r\n" % (len(first), first))
        status, headers, _ = read_answer(sock, 30)
        assert status == 401 and headers.get("connection") == "close"
        assert closed_within(sock, MARGIN), "the server kept the connection to read the rest of the body"


# -- 2. the size of a body ---------------------------------------------------------

@pytest.mark.parametrize("method, path", [("POST", "/v1/chat/completions"), ("POST", "/v1/responses"),
                                          ("GET", "/v1/models"), ("POST", "/v1/embeddings")])
def test_a_body_declared_over_the_limit_gets_413_before_a_byte_of_it_is_sent(entry, method, path):
    with connect(entry) as sock:
        sock.sendall(head(method, path, {**bearer(TEAM_KEY), "Content-Type": "application/json",
                                         "Content-Length": str(MAX_BODY + 1)}))
        status, headers, body = read_answer(sock, 30)
        assert status == 413 and headers.get("connection") == "close"
        assert "--max-body-size" in json.loads(body)["error"]["message"]
        assert closed_within(sock, MARGIN)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_an_endless_chunked_body_gets_413_once_it_passes_the_limit(entry, path):
    with connect(entry) as sock:
        sock.sendall(head("POST", path, {**bearer(TEAM_KEY), "Content-Type": "application/json",
                                         "Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        sent = 0
        sock.settimeout(0.05)
        answer = b""
        while not answer and sent < 8 * MAX_BODY:
            try:
                sock.sendall(chunk)
                sent += 65536
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert sent <= MAX_BODY + 4 * 65536 + 1024 * 1024   # some bytes were in flight when it decided
        data = answer
        sock.settimeout(10)
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more, "closed without an answer"
            data += more
        assert data.startswith(b"HTTP/1.1 413")


def test_a_body_just_under_the_limit_is_served(entry):
    body = chat_body(entry, "x " * ((MAX_BODY - 2048) // 2))
    answer = requests.post(entry.url("/v1/chat/completions"), json=body, headers=bearer(TEAM_KEY), timeout=60)
    assert answer.status_code == 200, answer.text[:300]
    assert len(json.dumps(body)) < MAX_BODY


# -- 3. slow clients --------------------------------------------------------------

def test_connections_that_never_send_a_byte_are_closed_after_the_header_timeout(entry):
    sockets = [connect(entry) for _ in range(40)]
    try:
        started = time.monotonic()
        assert all(closed_within(sock, HEADER_TIMEOUT + MARGIN - (time.monotonic() - started)) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_a_head_sent_a_byte_at_a_time_gets_408_and_is_closed(entry):
    with connect(entry) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        status = None
        while time.monotonic() - started < HEADER_TIMEOUT + MARGIN:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.25)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if data:
                status = int(data.split()[1])
            break
        assert status == 408
        assert closed_within(sock, MARGIN)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_a_body_that_stalls_gets_408(entry, path):
    with connect(entry) as sock:
        sock.sendall(head("POST", path, {**bearer(TEAM_KEY), "Content-Type": "application/json",
                                         "Content-Length": "1000"}) + b'{"model":')
        status, headers, body = read_answer(sock, BODY_TIMEOUT + MARGIN)
        assert status == 408 and headers.get("connection") == "close"
        assert "--body-timeout" in json.loads(body)["error"]["message"]


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(entry):
    with connect(entry) as sock:
        sock.sendall(head("GET", "/v1/models", bearer(TEAM_KEY)))
        status, headers, _ = read_answer(sock, 30)
        assert status == 200 and headers.get("connection") != "close"
        assert closed_within(sock, KEEP_ALIVE + MARGIN)


def test_a_head_over_the_size_limit_gets_431(entry):
    with connect(entry) as sock:
        sock.sendall(head("GET", "/v1/models", {**bearer(TEAM_KEY), "X-Padding": "p" * MAX_HEADER}))
        status, headers, _ = read_answer(sock, 30)
        assert status == 431 and headers.get("connection") == "close"


# -- 4. log lines are data -----------------------------------------------------------

FORGED = "INFO entrypoint.access: access 2026-01-01T00:00:00.000Z key=team-b model=demo forged={tag}"


def proxy_lines(entry: Entry) -> list[str]:
    return [line.partition("| ")[2] for line in entry.output().splitlines() if line.startswith("proxy ")]


def assert_not_forged(entry: Entry, tag: str) -> None:
    """The request's own line came (it holds the tag), and no line begins with the forged text."""
    wait_for(lambda: any(f"forged={tag}" in line for line in proxy_lines(entry)), 30, "the request's log line")
    forged = FORGED.format(tag=tag)
    lines = proxy_lines(entry)
    assert not any(line.startswith(forged) or line.startswith(forged[:40]) for line in lines), \
        [line for line in lines if tag in line]


@pytest.mark.parametrize("method, path, key", [
    ("GET", "/v1/responses/%0A{forged}", None),
    ("POST", "/v1/chat/completions%0D%0A{forged}", None),
    ("GET", "/v1/x%E2%80%A8{forged}", None),
    ("POST", "/v1/responses/%0A{forged}", TEAM_KEY),
    ("GET", "/key/info%0A{forged}", TEAM_KEY),
    ("DELETE", "/v1/models%0A%0A%0A{forged}", TEAM_KEY),
])
def test_a_forged_line_in_a_request_stays_inside_its_own_line(entry, method, path, key):
    tag = f"{method.lower()}{time.monotonic_ns()}"
    path = path.format(forged=FORGED.format(tag=tag).replace(" ", "%20"))
    with connect(entry) as sock:
        sock.sendall(head(method, path, bearer(key) if key else {}))
        status, _, _ = read_answer(sock, 30)
        assert 400 <= status < 500
    assert_not_forged(entry, tag)


def test_a_model_name_with_a_newline_stays_in_its_access_line(entry):
    tag = f"model{time.monotonic_ns()}"
    body = chat_body(entry, "hi")
    body["model"] = "demo\n" + FORGED.format(tag=tag)
    answer = requests.post(entry.url("/v1/chat/completions"), json=body, headers=bearer(TEAM_KEY), timeout=60)
    assert answer.status_code == 404
    # The engine's 404 names the model: the engine's log line carries the tag, the proxy's access line
    # says model=- (only a served model is named), so look at every line of the output.
    wait_for(lambda: sum("key=team-a" in line and "status=404" in line for line in proxy_lines(entry)), 30,
             "the access line")
    forged = FORGED.format(tag=tag)
    assert not any(line.partition("| ")[2].startswith(forged[:40]) for line in entry.output().splitlines())


# -- 5. a client's mistake is never a 5xx ---------------------------------------------

@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"])
@pytest.mark.parametrize("stream", [True, False])
def test_json_nested_too_deep_gets_a_4xx(entry, path, stream):
    deep = b"[" * 100_000 + b"]" * 100_000
    body = b'{"model":"' + entry.served_model_name.encode() + b'","stream":' + (b"true" if stream else b"false") \
        + b',"prompt":"x","input":"x","messages":' + deep + b"}"
    answer = requests.post(entry.url(path), data=body, timeout=60,
                           headers={**bearer(TEAM_KEY), "Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])


@pytest.mark.parametrize("body", [b"\xff\xfe not utf-8", b'{"stream": true, "n": ' + b"9" * 5000 + b"}",
                                  b'{"stream": true, "stream_options": 5}', b"[1, 2]", b'{"stream": true'])
def test_unreadable_bodies_get_a_4xx(entry, body):
    answer = requests.post(entry.url("/v1/chat/completions"), data=body, timeout=60,
                           headers={**bearer(TEAM_KEY), "Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])


# -- 7. a dead worker's max_parallel places ----------------------------------------

def test_a_killed_workers_max_parallel_place_comes_back_within_seconds(entry):
    entry.hold.touch()
    held: list[requests.Response] = []
    try:
        stream = requests.post(entry.url("/v1/chat/completions"), json=chat_body(entry, "hold on", stream=True),
                               headers=bearer(ONE_AT_A_TIME_KEY), stream=True, timeout=60)
        held.append(stream)
        assert stream.status_code == 200
        # The first token: the request is in flight. The reader is kept: dropping it would close the connection.
        reader = stream.iter_content(chunk_size=None)
        next(reader)
        second = requests.post(entry.url("/v1/chat/completions"), json=chat_body(entry),
                               headers=bearer(ONE_AT_A_TIME_KEY), timeout=60)
        assert second.status_code == 429
        proxy = entry.program_pid("proxy")
        workers = children_of(proxy)
        assert workers, "the proxy has no worker processes"
        for worker in workers:
            os.kill(worker, signal.SIGKILL)             # whichever worker held the place
        killed = time.monotonic()

        def admitted() -> bool:
            try:
                return requests.post(entry.url("/v1/chat/completions"), json=chat_body(entry),
                                     headers=bearer(ONE_AT_A_TIME_KEY), timeout=10).status_code == 200
            except requests.RequestException:
                return False      # the workers are starting again
        wait_for(admitted, 120, "the key's place to come back after its worker died", poll=0.5)
        # The workers take most of that to start again (LiteLLM's import); the lease only seconds.
        assert time.monotonic() - killed < 120
    finally:
        entry.hold.unlink(missing_ok=True)
        for stream in held:
            stream.close()
    entry.wait_ready()


# -- 8. a client gone is a request aborted --------------------------------------------

def test_a_client_gone_before_a_plain_answer_aborts_the_engines_request(entry):
    entry.hold.touch()
    try:
        before = entry.output().count("engine-double: holding")
        body = json.dumps(chat_body(entry, "hold it")).encode()
        sock = connect(entry)
        sock.sendall(head("POST", "/v1/chat/completions", {**bearer(TEAM_KEY), "Content-Type": "application/json",
                                                           "Content-Length": str(len(body))}) + body)
        wait_for(lambda: entry.output().count("engine-double: holding") > before, 30, "the engine to hold it")
        aborted_before = entry.output().count("engine-double: aborted")
        sock.close()
        wait_for(lambda: entry.output().count("engine-double: aborted") > aborted_before, 15,
                 "the engine to see its request aborted while the hold file still exists")
        assert entry.hold.exists()
    finally:
        entry.hold.unlink(missing_ok=True)


def test_many_slow_clients_at_once_do_not_stop_a_key_holder(entry):
    """Slowloris: 200 connections trickling heads, while a key holder is served."""
    sockets = []
    for _ in range(200):
        sock = connect(entry)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    try:
        for _ in range(5):
            answer = requests.post(entry.url("/v1/chat/completions"), json=chat_body(entry),
                                   headers=bearer(TEAM_KEY), timeout=30)
            assert answer.status_code == 200
        assert all(closed_within(sock, HEADER_TIMEOUT + MARGIN) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_the_bounds_are_in_the_dry_run_and_refused_when_absurd(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"num_attention_heads": 8, "num_key_value_heads": 8}')
    done = subprocess.run([sys.executable, "-m", "entrypoint.cli", "--model", str(model), "--max-body-size", "12",
                "--dry-run"], env={**os.environ, "LLM_ENTRY_MASTER_KEY": MASTER_KEY}, capture_output=True, text=True)
    assert done.returncode == 2 and "--max-body-size 12 is too small" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([sys.executable, "-m", "entrypoint.cli", "--model", str(model), "--max-body-size", "lots",
                "--dry-run"], env={**os.environ, "LLM_ENTRY_MASTER_KEY": MASTER_KEY}, capture_output=True, text=True)
    assert done.returncode == 2 and "is not a size" in done.stderr

