"""Usage per key: the tokens each answer used, counted as metrics and written
as one access-log line per model request, whichever path served it.

Runs inside each proxy worker. The tokens come from the answer itself: the
`usage` object the engine (or LiteLLM) puts in a JSON answer, or in the last
events of a stream, in OpenAI's shape (prompt_tokens, completion_tokens) or
in the Responses and Anthropic APIs' (input_tokens, output_tokens). A chat or
completions stream carries usage only when the client asked for it
(`stream_options.include_usage`), so when a client did not, the relay asks
the engine for it (`ask_for_usage`) and takes that one event out of the
stream again (`Meter(strip_usage=True)`): the client gets the stream it asked
for, and every token is counted, also for a client that would rather not be.
Responses and Messages streams always end with their usage (in
`response.completed`, in `message_delta`): nothing is asked or taken out.

Finding the usage costs little per chunk: a chunk is only looked into when
it holds the bytes `"usage"`, which, outside a JSON string (where quotes are
escaped), only the usage key itself can be.

Import rules: standard library and prometheus_client only (and entrypoint.inside.log_lines).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram

from entrypoint.inside.log_lines import field

USAGE = b'"usage"'
_EVENT_END = b"\n\n"
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')
_decoder = json.JSONDecoder()

# Seconds: from well under a second (embeddings, short answers) to the
# request timeout (long generations).
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

access_log = logging.getLogger("entrypoint.access")


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Anthropic's input_tokens leave out the prompt tokens read from or written to its cache.
_ANTHROPIC_CACHE = ("cache_read_input_tokens", "cache_creation_input_tokens")


def usage_from(found: Any) -> Usage | None:
    """A usage object in any of the shapes the routes answer: OpenAI's
    (prompt/completion tokens), the Responses and Anthropic APIs' (input/output)."""
    if not isinstance(found, dict):
        return None
    prompt = found.get("prompt_tokens", found.get("input_tokens"))
    completion = found.get("completion_tokens", found.get("output_tokens", 0))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    for cached in _ANTHROPIC_CACHE:
        if isinstance(found.get(cached), int):
            prompt += found[cached]
    return Usage(prompt, completion)


def usage_in_json(body: bytes) -> Usage | None:
    """The last usage object in a JSON text (or an event of a stream)."""
    text = body.decode("utf-8", "replace")
    at = text.rfind('"usage"')
    while at >= 0:
        colon = text.find(":", at + len('"usage"'))
        if colon >= 0:
            start = colon + 1
            while start < len(text) and text[start] in " \t\r\n":
                start += 1
            try:
                found, _ = _decoder.raw_decode(text, start)
            except (ValueError, RecursionError):
                found = None
            usage = usage_from(found)
            if usage is not None:
                return usage
        at = text.rfind('"usage"', 0, at)
    return None


def requested_model(body: bytes | bytearray) -> str | None:
    """The model a request asks for (its first "model" key), without parsing the whole body."""
    found = _MODEL.search(body)
    return found.group(1).decode("utf-8", "replace") if found else None


def ask_for_usage(body: bytes | bytearray) -> bytes | None:
    """The request with `stream_options.include_usage` set, when it asks for a
    stream without it; None when it needs nothing (not a stream, usage already
    asked for, or not a JSON object: the engine answers that as it would).

    A body this cannot read (not JSON, not UTF-8, nested deeper than Python's
    parser goes, a number too long to convert) goes to the engine as it came,
    and the engine answers it with its 400: a client's mistake is never a 500."""
    if b'"stream"' not in body:
        return None
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    if options is not None and not isinstance(options, dict):
        return None      # malformed: the engine refuses it as it would have
    if "stream_options" not in request:
        # The usual case: the client's own bytes, with the option put first.
        # Serialising the request again held the body twice more at once (a
        # str, then bytes): 4.0 bytes of proxy memory per body byte at peak,
        # 3.0 this way, as a plain request (bench.body_memory, 48 MiB).
        del request
        start = body.index(b"{") + 1
        return b'{"stream_options":{"include_usage":true},' + memoryview(body)[start:]
    request["stream_options"] = {**(options or {}), "include_usage": True}
    try:
        return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (ValueError, RecursionError):
        return None


class Meter:
    """Watches one answer as it is sent: its status, when it ended, its usage.

    `strip_usage`: the engine's usage event is taken out of the stream (the
    client did not ask for it). Then the stream is passed on in whole events
    (a read that ends inside an event keeps that part until the rest comes),
    so the usage event can always be found whole. Otherwise each read is
    sent as it came, and only a read that ends inside an event, or holds
    the bytes `"usage"`, is looked into.
    """

    def __init__(self, send: Callable, strip_usage: bool = False) -> None:
        self._send = send
        self.strip_usage = strip_usage
        self.status = 0
        self.usage: Usage | None = None
        self._stream = False
        self._pending = b""
        self._body: list[bytes] = []
        # Called with the usage once it is known, before the chunk that holds
        # it goes on: a key's tokens are charged before its client can see
        # the end of the answer and send the next request.
        self.on_usage: Callable[[Usage], Awaitable[None]] | None = None
        self.charged = False
        # Called before the answer's last message goes on (a place in flight
        # given back before the client can send its next request).
        self.on_end: Callable[[], Awaitable[None]] | None = None
        # Headers added to the answer's (the key's quota headers).
        self.headers: tuple[tuple[str, str], ...] = ()

    async def charge_once(self) -> None:
        if self.usage is not None and not self.charged and self.on_usage is not None:
            self.charged = True
            await self.on_usage(self.usage)

    async def _end(self) -> None:
        await self.charge_once()
        if self.on_end is not None:
            end, self.on_end = self.on_end, None
            await end()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.headers:
                message = {**message, "headers": [*message.get("headers", ()), *(
                    (name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers)]}
            self._stream = any(name == b"content-type" and value.startswith(b"text/event-stream")
                               for name, value in message.get("headers", ()))
            await self._send(message)
            return
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if not self._stream:
            if body:
                self._body.append(body)
            if not more and self._body:
                self.usage = usage_in_json(b"".join(self._body)) or self.usage
                self._body = []
                await self.charge_once()
            if not more:
                await self._end()
            await self._send(message)
            return
        if self.strip_usage:
            body = self._whole_events(body, more)
        elif self._pending or not body.endswith(_EVENT_END) or USAGE in body:
            self._whole_events(body, more)     # looked into, sent as it came
        await (self.charge_once() if more else self._end())
        if body or not more:
            await self._send({"type": "http.response.body", "body": body, "more_body": more})

    def _whole_events(self, body: bytes, more: bool) -> bytes:
        body, self._pending = self._pending + body, b""
        if more and not body.endswith(_EVENT_END):
            end = body.rfind(_EVENT_END)
            cut = end + len(_EVENT_END) if end >= 0 else 0
            body, self._pending = body[:cut], body[cut:]
        if USAGE in body:
            body = self._read_events(body)
        return body

    def _read_events(self, body: bytes) -> bytes:
        """Take the usage from the events in `body`; returns `body` less the
        usage event when it is to be stripped."""
        kept = []
        for event in body.split(_EVENT_END):
            # OpenAI's events are one data line; the Responses and Anthropic
            # APIs' start with an `event:` line.
            if USAGE in event and (event.startswith(b"data:") or b"\ndata:" in event):
                usage = usage_in_json(event)
                if usage is not None:
                    self.usage = usage
                    if self.strip_usage and b'"choices":[]' in event:
                        continue
            kept.append(event)
        return _EVENT_END.join(kept)


class AnsweredRequest(NamedTuple):
    """One model request, once its answer ended: who asked (the key's name,
    never the key), what for, how it went. A tuple: the cheapest immutable
    record to build, and one is built per request."""

    key: str
    model: str                       # model and route as labelled: they may say less
    route: str                       # than was asked (see proxy_front.series_labels)
    status: int
    usage: Usage | None
    seconds: float
    logged_route: str | None = None  # the path as asked, for the log line
    refused: str | None = None       # the limit that refused it ("rpm", "quota-month")


class UsageBook:
    """The metrics and the access log of one proxy worker. With
    PROMETHEUS_MULTIPROC_DIR set, prometheus_client writes every worker's
    values to files there, which /metrics adds up (entrypoint.inside.metrics_page).

    `clock` dates the access lines; `timer` measures a request's seconds."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time, timer: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.timer = timer
        self.requests = Counter("llm_entry_requests", "Model requests answered, by key name, model, route and "
                                "status (429s from the key's limits included).",
                                ("key", "model", "route", "status"), registry=registry)
        self.prompt_tokens = Counter("llm_entry_prompt_tokens", "Prompt tokens the engine reported, by key name "
                                     "and model.", ("key", "model"), registry=registry)
        self.completion_tokens = Counter("llm_entry_completion_tokens", "Completion tokens the engine reported, "
                                         "by key name and model.", ("key", "model"), registry=registry)
        self.latency = Histogram("llm_entry_request_seconds", "Seconds from a model request's arrival to the end "
                                 "of its answer, by key name, model and route.", ("key", "model", "route"),
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.limited = Counter("llm_entry_limited_requests", "Requests refused with 429 by a key's limit, by key "
                               "name and limit (rpm, tpm, max_parallel).", ("key", "limit"), registry=registry)
        self.fallbacks = Counter("llm_entry_limiter_fallbacks", "Limit decisions made in one proxy worker's memory "
                                 "because the limiter's Redis did not answer.", registry=registry)

    def record(self, answered: AnsweredRequest) -> None:
        key, model, route, status, usage, seconds, *_ = answered
        self.requests.labels(key, model, route, str(status)).inc()
        self.latency.labels(key, model, route).observe(seconds)
        if usage is not None:
            self.prompt_tokens.labels(key, model).inc(usage.prompt_tokens)
            self.completion_tokens.labels(key, model).inc(usage.completion_tokens)
        access_log.info(access_line(self._clock(), answered))


def access_line(at: float, answered: AnsweredRequest) -> str:
    """One model request: when it ended, who (the key's name, never the key), what, how it went."""
    key, model, route, status, usage, seconds, logged_route, refused = answered
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
    tokens = (f"prompt_tokens={usage.prompt_tokens} completion_tokens={usage.completion_tokens}"
              if usage is not None else "prompt_tokens=- completion_tokens=-")
    return (f"access {when} key={field(key)} model={field(model)} route={field(logged_route or route)} "
            f"status={status} {tokens} "
            f"ms={seconds * 1000:.1f}" + (f" refused={refused}" if refused else ""))
