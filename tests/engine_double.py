"""A stand-in for vLLM's OpenAI API server, for llm-entry's tests and benchmarks.

It is started exactly like `python -m vllm.entrypoints.openai.api_server` and
reproduces the behaviour llm-entry depends on: the port stays closed while the
model "loads", `--api-key` protects /v1, the answers are in vLLM's shapes
(streams included): chat, completions, embeddings, Responses (a response by
its id is never found), Anthropic's Messages and count_tokens, tokenize and
detokenize, worker processes share the process group and outlive a
SIGKILL of the server, and `--shutdown-timeout` drains in-flight requests.
Standard library only, so that it starts in a fraction of a second.

Flags: --model, --served-model-name N [N ...], --host, --port, --api-key K [K ...]
(else VLLM_API_KEY), --shutdown-timeout S, --tensor-parallel-size/-tp,
--max-model-len, --enable-log-requests, --headless (no API server, as a
multi-node worker's engine); any other flag is accepted and ignored.

Environment (all optional):
  ENGINE_DOUBLE_STARTUP_DELAY=S        port closed for S seconds ("loading")
  ENGINE_DOUBLE_FAIL_AT_START=MSG      "ValueError: MSG" on stderr, exit 1, no bind
  ENGINE_DOUBLE_EXIT_AFTER=S           S seconds after ready: "engine core died",
  ENGINE_DOUBLE_EXIT_CODE=N              exit N (default 0, as vLLM does)
  ENGINE_DOUBLE_EXIT_FILE=F            the same, once file F exists (removed on use)
  ENGINE_DOUBLE_HEALTH_STATUS_FILE=F   /health answers the number in F, if any
  ENGINE_DOUBLE_IGNORE_SIGTERM_DURING_STARTUP=1
  ENGINE_DOUBLE_WORKERS=N              N worker processes, same group (default 1)
  ENGINE_DOUBLE_PID_FILE=F             own pid then worker pids, one a line
  ENGINE_DOUBLE_TOKENS=N               tokens per answer (default 8)
  ENGINE_DOUBLE_TOKEN_INTERVAL=S       pause before each streamed token
  ENGINE_DOUBLE_LOG_REQUESTS=1         one log line per request
  ENGINE_DOUBLE_HOLD_FILE=F            a chat stream whose last user message starts
                                         with "hold" waits after its first token
                                         while file F exists (a request in flight);
                                         a chat answer that is not streamed waits
                                         before it answers, and when its client
                                         closes the connection meanwhile it says
                                         "aborted <id>" (vLLM aborts such a request)
  ENGINE_DOUBLE_WEDGE_FILE=F           while file F exists no token is generated: answers
                                         and streams in flight wait, /health stays 200
                                         (a lost node of a multi-node engine looks so)
                                       A client that closes its connection mid-stream
                                         (during the hold, or between two tokens) makes
                                         the double say "aborted a stream after N tokens"
  ENGINE_DOUBLE_ECHO=1                 JSON answers of chat and completions carry
                                         "echo": the request's headers (the key shown
                                         only as "the engine's key" or "another key") and
                                         its body as the double received them
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import select
import shlex
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXIT_OK = 0                # clean shutdown, and vLLM's exit after its engine died
EXIT_FAILED = 1            # start-up error (ENGINE_DOUBLE_FAIL_AT_START, port taken)
EXIT_BAD_CONFIG = 2        # an ENGINE_DOUBLE_* variable is not usable

ANSWER_PREFIX = "double says: "
PAD_TOKEN = " tok"
EMBEDDING_SIZE = 8
WORKER_STOP_GRACE_S = 2.0
DEFAULT_MAX_MODEL_LEN = 4096
# Like vLLM's middleware: these prefixes need the key, everything else is open.
PROTECTED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")
OPEN_PATHS = frozenset({"/health", "/ping", "/version", "/metrics"})
ROUTES = {
    "/health": {"GET": "_health"},
    "/ping": {"GET": "_ping", "POST": "_ping"},
    "/version": {"GET": "_version"},
    "/metrics": {"GET": "_metrics"},
    "/v1/models": {"GET": "_models"},
    "/v1/chat/completions": {"POST": "_chat"},
    "/v1/completions": {"POST": "_completions"},
    "/v1/embeddings": {"POST": "_embeddings"},
    "/v1/responses": {"POST": "_responses"},
    "/v1/messages": {"POST": "_messages"},
    "/v1/messages/count_tokens": {"POST": "_count_tokens"},
    "/tokenize": {"POST": "_tokenize"},
    "/detokenize": {"POST": "_detokenize"},
}
# Responses by id: the double keeps none (as vLLM without its store), so each is not found.
RESPONSE_BY_ID = re.compile(r"/v1/responses/([^/]+)(/cancel)?")
# Workers only sleep; they never look at their parent, like vLLM's EngineCore
# and Worker processes that a SIGKILL of the API server leaves behind.
WORKER_CODE = (
    "import signal, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)


class ConfigError(Exception):
    """An ENGINE_DOUBLE_* variable or flag the double cannot use."""


def say(message: str) -> None:
    print(f"engine-double: {message}", flush=True)


def complain(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    model: str
    served_model_names: tuple[str, ...]
    host: str
    port: int
    api_keys: tuple[str, ...]
    tensor_parallel_size: int
    max_model_len: int
    shutdown_timeout: float
    log_requests: bool
    ignored_flags: tuple[str, ...]
    startup_delay: float = 0.0
    fail_at_start: str = ""
    exit_after: float | None = None
    exit_file: str = ""
    exit_code: int = 0
    health_status_file: str = ""
    ignore_sigterm_during_startup: bool = False
    workers: int = 1
    pid_file: str = ""
    tokens: int = 8
    token_interval: float = 0.0
    echo: bool = False
    hold_file: str = ""
    wedge_file: str = ""
    headless: bool = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine_double.py", allow_abbrev=False)
    parser.add_argument("--model", default=None)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", nargs="+", default=None)
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    parser.add_argument("--max-model-len", default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.92)
    parser.add_argument("--shutdown-timeout", type=float, default=0.0)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--enable-log-requests", action="store_true")
    parser.add_argument("--headless", action="store_true")
    return parser


def build_config(args: list[str], environ: dict[str, str]) -> Config:
    known, ignored = build_parser().parse_known_args(args)
    model = known.model or "engine-double"
    keys = known.api_key or ([environ["VLLM_API_KEY"]] if environ.get("VLLM_API_KEY") else [])
    return Config(
        model=model,
        served_model_names=tuple(known.served_model_name or [model]),
        host=known.host or "",
        port=known.port,
        api_keys=tuple(keys),
        tensor_parallel_size=known.tensor_parallel_size,
        max_model_len=_model_len(known.max_model_len),
        shutdown_timeout=known.shutdown_timeout,
        log_requests=known.enable_log_requests or _env_flag(environ, "ENGINE_DOUBLE_LOG_REQUESTS"),
        ignored_flags=tuple(ignored),
        startup_delay=_env_number(environ, "ENGINE_DOUBLE_STARTUP_DELAY", 0.0),
        fail_at_start=environ.get("ENGINE_DOUBLE_FAIL_AT_START", ""),
        exit_after=_env_number(environ, "ENGINE_DOUBLE_EXIT_AFTER", None),
        exit_file=environ.get("ENGINE_DOUBLE_EXIT_FILE", ""),
        exit_code=int(_env_number(environ, "ENGINE_DOUBLE_EXIT_CODE", 0, integer=True)),
        health_status_file=environ.get("ENGINE_DOUBLE_HEALTH_STATUS_FILE", ""),
        ignore_sigterm_during_startup=_env_flag(environ, "ENGINE_DOUBLE_IGNORE_SIGTERM_DURING_STARTUP"),
        workers=int(_env_number(environ, "ENGINE_DOUBLE_WORKERS", 1, integer=True)),
        pid_file=environ.get("ENGINE_DOUBLE_PID_FILE", ""),
        tokens=max(1, int(_env_number(environ, "ENGINE_DOUBLE_TOKENS", 8, integer=True))),
        token_interval=_env_number(environ, "ENGINE_DOUBLE_TOKEN_INTERVAL", 0.0),
        echo=_env_flag(environ, "ENGINE_DOUBLE_ECHO"),
        hold_file=environ.get("ENGINE_DOUBLE_HOLD_FILE", ""),
        wedge_file=environ.get("ENGINE_DOUBLE_WEDGE_FILE", ""),
        headless=known.headless,
    )


def _env_number(environ, name, default, integer=False):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number of seconds"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None


def _env_flag(environ, name) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _model_len(raw: str | None) -> int:
    # vLLM also takes "32k" (x1000) and "32K" (x1024).
    if not raw:
        return DEFAULT_MAX_MODEL_LEN
    scale = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}.get(raw[-1], 1)
    try:
        return int(float(raw[:-1] if scale > 1 else raw) * scale)
    except ValueError:
        return DEFAULT_MAX_MODEL_LEN


def redact_argv(argv: list[str]) -> list[str]:
    """argv with the values of --api-key replaced, for the log."""
    redacted, in_keys = [], False
    for arg in argv:
        if arg.startswith("--api-key="):
            redacted.append("--api-key=<redacted>")
            in_keys = False
        elif arg == "--api-key":
            redacted.append(arg)
            in_keys = True
        elif in_keys and not arg.startswith("-"):
            redacted.append("<redacted>")
        else:
            redacted.append(arg)
            in_keys = False
    return redacted


# ---------------------------------------------------------------- answers


def split_words(text: str) -> list[str]:
    """Words with their leading spaces: "".join(result) == text."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text) or [text]


def plan_tokens(answer: str, count: int, max_tokens) -> tuple[list[str], str]:
    """The tokens a stream sends and its finish reason.

    The answer is cut into `count` tokens (the last one takes the surplus
    words; PAD_TOKEN fills up a short answer); max_tokens only shortens.
    """
    words = split_words(answer)
    if len(words) > count:
        tokens = words[: count - 1] + ["".join(words[count - 1:])]
    else:
        tokens = words + [PAD_TOKEN] * (count - len(words))
    if isinstance(max_tokens, int) and 0 < max_tokens < len(tokens):
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def cut_text(answer: str, max_tokens) -> str:
    if isinstance(max_tokens, int) and max_tokens > 0:
        return "".join(split_words(answer)[:max_tokens])
    return answer


def content_text(content) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def messages_text(request: dict) -> str:
    """The last user message of a request's messages, if it has any."""
    messages = request.get("messages")
    return last_user_text(messages) if isinstance(messages, list) else ""


def as_texts(value) -> list[str]:
    """A prompt or embedding input (text, texts, token ids) as a list of texts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [json.dumps(value)]
    if isinstance(value, list):
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    return [json.dumps(value)]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()[:EMBEDDING_SIZE]
    raw = [(b - 127.5) / 127.5 for b in digest]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in raw]


def error_body(message: str, kind: str, code: int, param=None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class Reply:
    """What every completion of one request shares."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))


def chat_response(reply: Reply, text: str, finish: str, use: dict) -> dict:
    message = {"role": "assistant", "content": text, "tool_calls": []}
    return {
        "id": reply.id, "object": "chat.completion", "created": reply.created,
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish, "stop_reason": None}],
        "usage": use,
    }


def chat_chunks(reply: Reply, tokens: list[str], finish: str, use: dict | None):
    """(is_token, chunk) pairs of a chat stream, in order."""
    base = {"id": reply.id, "object": "chat.completion.chunk",
            "created": reply.created, "model": reply.model}

    def chunk(delta, finish_reason=None):
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    yield False, chunk({"role": "assistant", "content": ""})
    for token in tokens:
        yield True, chunk({"content": token})
    yield False, chunk({}, finish)
    if use is not None:
        yield False, {**base, "choices": [], "usage": use}


def completion_response(reply: Reply, texts: list[str], finish: str, use: dict) -> dict:
    choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": finish,
                "stop_reason": None} for i, t in enumerate(texts)]
    return {"id": reply.id, "object": "text_completion", "created": reply.created,
            "model": reply.model, "choices": choices, "usage": use}


def completion_chunks(reply: Reply, plans: list, use: dict | None):
    base = {"id": reply.id, "object": "text_completion",
            "created": reply.created, "model": reply.model}

    def chunk(index, text, finish_reason=None):
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    for index, (tokens, finish) in enumerate(plans):
        for token in tokens:
            yield True, chunk(index, token)
        yield False, chunk(index, "", finish)
    if use is not None:
        yield False, {**base, "choices": [], "usage": use}


def responses_response(reply: Reply, text: str, finish: str, use: dict) -> dict:
    """vLLM's Responses answer (its main keys)."""
    message = {"id": f"msg_{reply.id}", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": None}]}
    return {"id": reply.id, "created_at": reply.created, "incomplete_details":
            None if finish == "stop" else {"reason": "max_output_tokens"},
            "instructions": None, "metadata": None, "model": reply.model, "object": "response",
            "output": [message], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "status": "completed" if finish == "stop" else "incomplete",
            "usage": {"input_tokens": use["prompt_tokens"], "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": use["completion_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": use["total_tokens"]}}


def responses_events(reply: Reply, tokens: list[str], finish: str, use: dict):
    """(is_token, event) pairs of a Responses stream: usage only in response.completed."""
    done = responses_response(reply, "".join(tokens), finish, use)
    yield False, {"type": "response.created", "sequence_number": 0,
                  "response": {**done, "status": "in_progress", "output": [], "usage": None}}
    for number, token in enumerate(tokens, 1):
        yield True, {"type": "response.output_text.delta", "sequence_number": number, "item_id": f"msg_{reply.id}",
                     "output_index": 0, "content_index": 0, "delta": token, "logprobs": []}
    yield False, {"type": "response.completed", "sequence_number": len(tokens) + 1, "response": done}


def anthropic_usage(use: dict) -> dict:
    return {"input_tokens": use["prompt_tokens"], "output_tokens": use["completion_tokens"]}


def messages_response(reply: Reply, text: str, finish: str, use: dict) -> dict:
    """vLLM's Anthropic Messages answer (None values left out, as vLLM does)."""
    return {"id": reply.id, "type": "message", "role": "assistant", "content": [{"type": "text", "text": text}],
            "model": reply.model, "stop_reason": "end_turn" if finish == "stop" else "max_tokens",
            "usage": anthropic_usage(use)}


def messages_events(reply: Reply, tokens: list[str], finish: str, use: dict):
    """(is_token, event) pairs of an Anthropic stream: the input tokens in
    message_start, both counts in message_delta."""
    start = {"id": reply.id, "type": "message", "role": "assistant", "content": [], "model": reply.model,
             "stop_reason": None, "stop_sequence": None, "usage": {**anthropic_usage(use), "output_tokens": 0}}
    yield False, {"type": "message_start", "message": start}
    yield False, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    for token in tokens:
        yield True, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}
    yield False, {"type": "content_block_stop", "index": 0}
    stop = "end_turn" if finish == "stop" else "max_tokens"
    yield False, {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                  "usage": anthropic_usage(use)}
    yield False, {"type": "message_stop"}


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ---------------------------------------------------------------- HTTP


class EngineState:
    """What request threads and the main loop share."""

    def __init__(self, config: Config):
        self.config = config
        self.lock = threading.Lock()
        self.in_flight = 0
        self.draining = False
        self.prompt_tokens = 0       # vLLM's token counters, as /metrics shows them
        self.generation_tokens = 0

    def count(self, prompt: int = 0, generated: int = 0) -> None:
        with self.lock:
            self.prompt_tokens += prompt
            self.generation_tokens += generated

    def wait_while_wedged(self) -> None:
        deadline = time.monotonic() + 120
        while self.config.wedge_file and os.path.exists(self.config.wedge_file) and time.monotonic() < deadline:
            time.sleep(0.02)


class EngineServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128   # benchmarks open 32+ connections at once

    def __init__(self, config: Config, state: EngineState):
        self.state = state
        if ":" in config.host:
            self.address_family = socket.AF_INET6
        super().__init__((config.host, config.port), EngineHandler)

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup that can hang.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class EngineHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "engine-double"
    server: EngineServer

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, format, *args):
        pass  # _dispatch logs one line per request when asked to

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        started, self._status = time.monotonic(), 0
        with state.lock:
            state.in_flight += 1
        try:
            self._handle(method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with state.lock:
                state.in_flight -= 1
            if state.config.log_requests:
                say(f'{self.client_address[0]} "{method} {self.path}" {self._status} '
                    f"{time.monotonic() - started:.3f}s")

    def _handle(self, method: str) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True  # where the next request starts is unknown
            return self._json(400, error_body("Unreadable request body.", "BadRequestError", 400))
        self._route(method, self.path.partition("?")[0], body)

    def _route(self, method: str, path: str, body: bytes) -> None:
        state = self.server.state
        if path.startswith(PROTECTED_PREFIXES) and not self._authorized(state.config.api_keys):
            return self._json(401, {"error": "Unauthorized"})
        methods = ROUTES.get(path)
        if methods is None and RESPONSE_BY_ID.fullmatch(path):
            methods = {"POST" if path.endswith("/cancel") else "GET": "_response_by_id"}
            self._response_id = path.split("/")[3]
        if methods is None:
            return self._json(404, {"detail": "Not Found"})
        if method not in methods:
            return self._json(405, {"detail": "Method Not Allowed"})
        if state.draining and path not in OPEN_PATHS:
            return self._json(500, error_body("The server is shutting down.", "InternalServerError", 500))
        getattr(self, methods[method])(body)

    def _authorized(self, keys: tuple[str, ...]) -> bool:
        if not keys:
            return True
        given = self.headers.get("Authorization", "")
        return any(given == f"Bearer {key}" for key in keys)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- writing

    def _respond(self, status: int, body: bytes, content_type: str | None) -> None:
        self._status = status
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        head = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(body)}"]
        if content_type:
            head.append(f"content-type: {content_type}")
        if self.close_connection:
            head.append("connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _json(self, status: int, obj) -> None:
        self._respond(status, dumps(obj), "application/json")

    def _stream(self, events, hold: bool = False, named: bool = False) -> None:
        """Server-sent events, one chunk of the HTTP response per event. Named:
        each event says its type first and the stream ends without [DONE]
        (the Responses and Anthropic APIs)."""
        self._status = 200
        chunked = self.request_version != "HTTP/1.0"
        head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
        head += "transfer-encoding: chunked\r\n\r\n" if chunked else "connection: close\r\n\r\n"
        self.close_connection = self.close_connection or not chunked
        self.wfile.write(head.encode())
        interval = self.server.state.config.token_interval
        payloads = ((is_token, (b"event: %s\n" % chunk["type"].encode() if named else b"")
                     + b"data: " + dumps(chunk) + b"\n\n") for is_token, chunk in events)
        sent = 0
        for is_token, payload in payloads:
            if is_token and interval > 0:
                time.sleep(interval)
            if is_token:
                self.server.state.wait_while_wedged()
            if self._client_gone(0):
                return self._aborted_stream(sent)
            try:
                self._write_event(payload, chunked)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return self._aborted_stream(sent)
            if is_token:
                self.server.state.count(generated=1)
            sent += is_token
            if hold and is_token:
                hold = False
                deadline = time.monotonic() + 120
                while os.path.exists(self.server.state.config.hold_file) and time.monotonic() < deadline:
                    if self._client_gone(0.02):
                        return self._aborted_stream(sent)
        if not named:
            self._write_event(b"data: [DONE]\n\n", chunked)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _client_gone(self, wait: float) -> bool:
        """Whether the client closed its connection (vLLM notices it and aborts the request)."""
        readable, _, _ = select.select([self.connection], [], [], wait)
        try:
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def _aborted_stream(self, tokens_sent: int) -> None:
        say(f"aborted a stream after {tokens_sent} tokens: the client closed the connection")
        self.close_connection = True

    def _write_event(self, payload: bytes, chunked: bool) -> None:
        if chunked:
            payload = b"%x\r\n%s\r\n" % (len(payload), payload)
        self.wfile.write(payload)

    # -- reading requests

    def _request(self, body: bytes) -> dict | None:
        """The JSON request, or None once an error has been answered."""
        config = self.server.state.config
        try:
            request = json.loads(body or b"{}")
        except (ValueError, RecursionError) as error:
            # vLLM answers 400 to a body its parser cannot read, one nested too deep included.
            self._json(400, error_body(f"Invalid JSON body: {error}", "BadRequestError", 400))
            return None
        if not isinstance(request, dict):
            self._json(400, error_body("The body must be a JSON object.", "BadRequestError", 400))
            return None
        model = request.get("model")
        if model and model not in config.served_model_names:
            self._json(404, error_body(f"The model `{model}` does not exist.", "NotFoundError", 404, "model"))
            return None
        request["model"] = model or config.served_model_names[0]
        return request

    def _echoed(self, answer: dict, body: bytes) -> dict:
        """The answer, with what the request looked like here when asked to."""
        if not self.server.state.config.echo:
            return answer
        keys = self.server.state.config.api_keys
        headers = {}
        for name, value in self.headers.items():
            if name.lower() == "authorization":
                value = "the engine's key" if any(value == f"Bearer {key}" for key in keys) else "another key"
            headers[name.lower()] = value
        return {**answer, "echo": {"headers": headers, "body": json.loads(body)}}

    def _reply(self, request: dict, prefix: str) -> Reply:
        """Every generation starts here: its prompt is counted, and it waits while wedged."""
        self.server.state.count(prompt=1)
        self.server.state.wait_while_wedged()
        return Reply(id=f"{prefix}-{uuid.uuid4().hex}", model=request["model"])

    # -- routes

    def _health(self, body: bytes) -> None:
        self._respond(health_status(self.server.state.config.health_status_file), b"", None)

    def _ping(self, body: bytes) -> None:
        self._respond(200, b"", None)

    def _version(self, body: bytes) -> None:
        self._json(200, {"version": "0.0.0+engine-double"})

    def _metrics(self, body: bytes) -> None:
        state = self.server.state
        name = state.config.served_model_names[0]
        text = (f'vllm:num_requests_running{{model_name="{name}"}} {max(state.in_flight - 1, 0)}\n'
                f'vllm:prompt_tokens_total{{model_name="{name}"}} {state.prompt_tokens:.1f}\n'
                f'vllm:generation_tokens_total{{model_name="{name}"}} {state.generation_tokens:.1f}\n')
        self._respond(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _models(self, body: bytes) -> None:
        config = self.server.state.config
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "vllm",
                 "root": config.model, "parent": None, "max_model_len": config.max_model_len,
                 "permission": []} for name in config.served_model_names]
        self._json(200, {"object": "list", "data": data})

    def _chat(self, body: bytes) -> None:
        request = self._request(body)
        if request is None:
            return
        messages = request.get("messages")
        if not isinstance(messages, list):
            return self._json(400, error_body("'messages' must be a list.", "BadRequestError", 400, "messages"))
        config = self.server.state.config
        answer = ANSWER_PREFIX + last_user_text(messages)
        max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
        tokens, finish = plan_tokens(answer, config.tokens, max_tokens)
        prompt_words = sum(len(content_text(m.get("content")).split())
                           for m in messages if isinstance(m, dict))
        use = usage(max(prompt_words, 1), len(tokens))
        reply = self._reply(request, "chatcmpl")
        if request.get("stream"):
            hold = bool(config.hold_file) and last_user_text(messages).startswith("hold")
            self._stream(chat_chunks(reply, tokens, finish, _stream_usage(request, use)), hold)
        else:
            if config.hold_file and last_user_text(messages).startswith("hold") and not self._held(reply.id):
                return
            text = answer if finish == "stop" else cut_text(answer, max_tokens)
            self._json(200, self._echoed(chat_response(reply, text, finish, use), body))

    def _held(self, request_id: str) -> bool:
        """Wait while the hold file exists; False when the client went away meanwhile."""
        deadline = time.monotonic() + 120
        say(f"holding {request_id}")
        while os.path.exists(self.server.state.config.hold_file) and time.monotonic() < deadline:
            if self._client_gone(0.02):
                say(f"aborted {request_id}: the client closed the connection")
                self.close_connection = True
                return False
        return True

    def _completions(self, body: bytes) -> None:
        request = self._request(body)
        if request is None:
            return
        config = self.server.state.config
        prompts = as_texts(request.get("prompt", ""))
        max_tokens = request.get("max_tokens")
        answers = [ANSWER_PREFIX + prompt for prompt in prompts]
        plans = [plan_tokens(answer, config.tokens, max_tokens) for answer in answers]
        prompt_words = sum(max(len(p.split()), 1) for p in prompts)
        use = usage(prompt_words, sum(len(tokens) for tokens, _ in plans))
        reply = self._reply(request, "cmpl")
        if request.get("stream"):
            self._stream(completion_chunks(reply, plans, _stream_usage(request, use)))
        else:
            finish = plans[0][1] if plans else "stop"
            texts = [a if f == "stop" else cut_text(a, max_tokens) for a, (_, f) in zip(answers, plans, strict=False)]
            self._json(200, self._echoed(completion_response(reply, texts, finish, use), body))

    def _embeddings(self, body: bytes) -> None:
        request = self._request(body)
        if request is None:
            return
        texts = as_texts(request.get("input", ""))
        data = []
        for index, text in enumerate(texts):
            vector = embedding(text)
            if request.get("encoding_format") == "base64":  # the openai client's default
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        words = sum(max(len(t.split()), 1) for t in texts)
        self._json(200, {"id": f"embd-{uuid.uuid4().hex}", "object": "list",
                         "created": int(time.time()), "model": request["model"],
                         "data": data, "usage": usage(words, 0)})

    def _generation(self, request: dict, text: str, max_tokens) -> tuple[Reply, list[str], str, dict]:
        """One answer to `text`: its reply, tokens, finish reason and usage."""
        tokens, finish = plan_tokens(ANSWER_PREFIX + text, self.server.state.config.tokens, max_tokens)
        return self._reply(request, "resp"), tokens, finish, usage(max(len(text.split()), 1), len(tokens))

    def _responses(self, body: bytes) -> None:
        request = self._request(body)
        if request is None:
            return
        given = request.get("input")
        text = given if isinstance(given, str) else last_user_text(given if isinstance(given, list) else [])
        reply, tokens, finish, use = self._generation(request, text, request.get("max_output_tokens"))
        if request.get("stream"):
            self._stream(responses_events(reply, tokens, finish, use), named=True)
        else:
            self._json(200, responses_response(reply, "".join(tokens), finish, use))

    def _response_by_id(self, body: bytes) -> None:
        self._json(404, error_body(f"Response with id '{self._response_id}' not found.",
                                   "invalid_request_error", 404, "response_id"))

    def _messages(self, body: bytes) -> None:
        request = self._request(body)
        if request is None:
            return
        messages = request.get("messages")
        if not isinstance(messages, list) or not isinstance(request.get("max_tokens"), int):
            return self._json(400, error_body("'messages' and 'max_tokens' are required.", "BadRequestError", 400))
        reply, tokens, finish, use = self._generation(request, last_user_text(messages), request["max_tokens"])
        reply = Reply(id=reply.id.replace("resp-", "msg-"), model=reply.model)
        if request.get("stream"):
            self._stream(messages_events(reply, tokens, finish, use), named=True)
        else:
            self._json(200, messages_response(reply, "".join(tokens), finish, use))

    def _count_tokens(self, body: bytes) -> None:
        request = self._request(body)
        if request is None:
            return
        self._json(200, {"input_tokens": max(len(messages_text(request).split()), 1)})

    def _tokenize(self, body: bytes) -> None:
        request = self._request(body)
        if request is None:
            return
        text = request.get("prompt")
        text = text if isinstance(text, str) else messages_text(request)
        tokens = [len(word) for word in split_words(text)] if text else []
        self._json(200, {"count": len(tokens), "max_model_len": self.server.state.config.max_model_len,
                         "tokens": tokens, "token_strs": None})

    def _detokenize(self, body: bytes) -> None:
        request = self._request(body)
        if request is None:
            return
        tokens = request.get("tokens") if isinstance(request.get("tokens"), list) else []
        self._json(200, {"prompt": " ".join(f"t{token}" for token in tokens)})


def _stream_usage(request: dict, use: dict) -> dict | None:
    options = request.get("stream_options")
    return use if isinstance(options, dict) and options.get("include_usage") else None


def health_status(path: str) -> int:
    """200, or the number written in ENGINE_DOUBLE_HEALTH_STATUS_FILE."""
    if not path:
        return 200
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return 200


# ---------------------------------------------------------------- processes


class Signals:
    """Records SIGTERM/SIGINT; the main loop decides what they mean."""

    def __init__(self):
        self._received: list[int] = []
        self._wake_read, wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._record)

    def _record(self, signum, frame):
        self._received.append(signum)

    def take(self) -> list[int]:
        taken = self._received[:]
        del self._received[: len(taken)]
        return taken

    def wait(self, timeout: float | None) -> None:
        """Sleep until a signal arrives or the timeout passes."""
        if timeout is not None and timeout <= 0:
            return
        select.select([self._wake_read], [], [], timeout)
        try:
            os.read(self._wake_read, 4096)
        except BlockingIOError:
            pass


class Workers:
    """Stand-ins for VLLM::EngineCore and VLLM::Worker: same process group."""

    def __init__(self, count: int):
        names = ["VLLM::EngineCore"] + [f"VLLM::Worker_TP{i}" for i in range(count - 1)]
        self.processes = [
            # argv[0] is the name, so `ps` shows VLLM::EngineCore like vLLM's setproctitle.
            subprocess.Popen([name, "-I", "-S", "-c", WORKER_CODE],
                             executable=sys.executable, stdin=subprocess.DEVNULL)
            for name in names[:count]
        ]

    def write_pid_file(self, path: str) -> None:
        pids = [os.getpid()] + [p.pid for p in self.processes]
        temporary = f"{path}.tmp.{os.getpid()}"
        with open(temporary, "w") as handle:
            handle.write("".join(f"{pid}\n" for pid in pids))
        os.replace(temporary, path)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + WORKER_STOP_GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in self.processes):
            time.sleep(0.01)
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def load(config: Config, signals: Signals) -> bool:
    """Pretend to load the model; False when asked to stop meanwhile."""
    deadline = time.monotonic() + config.startup_delay
    next_progress = time.monotonic()
    while True:
        for signum in signals.take():
            if signum == signal.SIGTERM and config.ignore_sigterm_during_startup:
                say("SIGTERM ignored while loading (as vLLM's CPU build did)")
                continue
            say(f"shutting down during start-up ({signal.Signals(signum).name})")
            return False
        now = time.monotonic()
        if now >= next_progress:
            say(f"loading model {config.model}: {config.startup_delay - max(deadline - now, 0):.1f}s "
                f"of {config.startup_delay:g}s")
            next_progress += 1.0
        if now >= deadline:
            return True
        signals.wait(min(deadline, next_progress) - now)


def serve(config: Config, state: EngineState, signals: Signals) -> int:
    """Run until a signal or ENGINE_DOUBLE_EXIT_AFTER; returns the exit code."""
    exit_at = None if config.exit_after is None else time.monotonic() + config.exit_after
    while True:
        if signals.take():
            return drain(config, state, signals)
        now = time.monotonic()
        cause = ""
        if exit_at is not None and now >= exit_at:
            cause = f"ENGINE_DOUBLE_EXIT_AFTER={config.exit_after:g}"
        elif config.exit_file and os.path.exists(config.exit_file):
            os.unlink(config.exit_file)  # one order, one exit: a restarted double keeps running
            cause = f"ENGINE_DOUBLE_EXIT_FILE={config.exit_file}"
        if cause:
            complain(f"ERROR engine-double: engine core died ({cause}); exiting with code {config.exit_code}")
            return config.exit_code
        wait = None if exit_at is None else exit_at - now
        if config.exit_file:
            wait = 0.1 if wait is None else min(wait, 0.1)
        signals.wait(wait)


def drain(config: Config, state: EngineState, signals: Signals) -> int:
    timeout = config.shutdown_timeout
    if timeout <= 0:
        say(f"shutting down now (--shutdown-timeout 0), {state.in_flight} request(s) cut")
        return EXIT_OK
    state.draining = True
    say(f"shutting down: waiting up to {timeout:g}s for {state.in_flight} request(s) in flight")
    deadline = time.monotonic() + timeout
    while state.in_flight > 0 and time.monotonic() < deadline:
        if signals.take():
            say("shutting down now (second signal)")
            return EXIT_OK
        signals.wait(min(0.02, deadline - time.monotonic()))
    if state.in_flight:
        say(f"shutting down: {timeout:g}s passed, {state.in_flight} request(s) in flight are cut")
    else:
        say("shutting down: every request in flight finished")
    return EXIT_OK


def run(config: Config) -> int:
    signals = Signals()
    workers = Workers(config.workers)
    try:
        if config.pid_file:
            workers.write_pid_file(config.pid_file)
        if not load(config, signals):
            return EXIT_OK
        state = EngineState(config)
        if config.headless:   # a multi-node worker's engine: no API server, it only runs
            say("headless: no API server (a multi-node worker's engine)")
            return serve(config, state, signals)
        try:
            server = EngineServer(config, state)
        except OSError as error:
            complain(f"OSError: {error} (binding {config.host or '0.0.0.0'}:{config.port})")
            return EXIT_FAILED
        threading.Thread(target=server.serve_forever, daemon=True).start()
        say(f"ready on http://{config.host or '0.0.0.0'}:{config.port}, serving "
            f"{', '.join(config.served_model_names)}")
        print("INFO:     Application startup complete.", flush=True)
        return serve(config, state, signals)
    finally:
        workers.stop()


def main(argv: list[str]) -> int:
    say("argv " + shlex.join(redact_argv(argv)))
    try:
        config = build_config(argv[1:], dict(os.environ))
    except ConfigError as error:
        complain(f"engine-double: {error}")
        return EXIT_BAD_CONFIG
    if config.ignored_flags:
        say("flags the double does not model: " + shlex.join(config.ignored_flags))
    if config.fail_at_start:
        complain("Traceback (most recent call last):")
        complain('  File "engine_double.py", in <module>')
        complain(f"ValueError: {config.fail_at_start}")
        return EXIT_FAILED
    say(f"model {config.model}, tensor parallel size {config.tensor_parallel_size}, "
        f"api key {'required' if config.api_keys else 'not required'}")
    return run(config)


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: request threads may still be writing; in-flight streams are cut.
    os._exit(code)
