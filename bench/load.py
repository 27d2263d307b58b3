"""A small closed-loop load generator for chat completions.

A hand-rolled HTTP/1.1 client on asyncio (uvloop when present), with
keep-alive: the client shares the machine's 2 cores with the servers it
measures, so it has to cost far less than they do (aiohttp or requests would
spend more CPU per request than the engine double does).

`run_load`: `concurrency` clients, each sending its next request as soon as
the last one is answered, for `duration` seconds after a warm-up.
`run_streams`: the same with streaming; it times the first token and the
gaps between tokens as the client sees them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

try:
    import uvloop
except ImportError:  # pragma: no cover - the venv has it (LiteLLM needs it)
    uvloop = None

CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0


class HttpError(Exception):
    pass


# What makes a request fail (the client then opens a new connection).
FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, HttpError, ValueError)
BACK_OFF = 0.05   # seconds after a failure: a refusing server must not become a busy loop


class Errors:
    """Failed requests counted, and what the first one said: for the results'
    dataclasses, which declare `errors` and `error_sample` as fields."""

    errors: int
    error_sample: str

    def count_error(self, detail: str) -> None:
        self.errors += 1
        self.error_sample = self.error_sample or detail

    def add_errors_of(self, other: Errors) -> None:
        self.errors += other.errors
        self.error_sample = self.error_sample or other.error_sample


@dataclass
class LoadResult(Errors):
    concurrency: int
    duration: float                                   # measured window, seconds
    latencies: list[float] = field(default_factory=list)  # seconds, requests finished in the window
    errors: int = 0
    error_sample: str = ""

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.duration if self.duration else 0.0


@dataclass
class StreamResult(Errors):
    concurrency: int
    duration: float
    ttft: list[float] = field(default_factory=list)   # seconds to the first content token
    itl: list[float] = field(default_factory=list)    # seconds between content tokens
    tokens_per_stream: list[int] = field(default_factory=list)
    errors: int = 0
    error_sample: str = ""


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), CONNECT_TIMEOUT)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, head: bytes, body: bytes) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            await self.open()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed by the server")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return b"".join([chunk async for chunk in self.chunks()])
        length = int(headers.get("content-length", "0"))
        return await self.reader.readexactly(length) if length else b""

    async def chunks(self):
        """The pieces of a chunked body, as they arrive."""
        while True:
            size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await self.reader.readline()
                return
            data = await self.reader.readexactly(size)
            await self.reader.readline()
            yield data

    def reusable(self, headers: dict[str, str]) -> bool:
        return headers.get("connection", "").lower() != "close"


CHAT_PATH = "/v1/chat/completions"


def request_bytes(port: int, key: str, body: dict, path: str = CHAT_PATH) -> tuple[bytes, bytes]:
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    return head, payload


async def _one_request(conn: Connection, head: bytes, payload: bytes) -> tuple[int, bytes]:
    status, headers = await conn.send(head, payload)
    data = await conn.body(headers)
    if not conn.reusable(headers):
        conn.close()
    return status, data


def _window(warmup: float, duration: float) -> tuple[float, float]:
    """When the measured window begins and ends, on time.perf_counter()."""
    start = time.perf_counter() + warmup
    return start, start + duration


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


async def _clients(port: int, concurrency: int, client: Callable[[Connection], Awaitable[None]]) -> None:
    """`concurrency` clients at once, each on a keep-alive connection of its own."""
    async def one() -> None:
        conn = Connection(port)
        try:
            await client(conn)
        finally:
            conn.close()

    await asyncio.gather(*(one() for _ in range(concurrency)))


async def _load(port: int, key: str, body: dict, concurrency: int, warmup: float, duration: float,
                path: str = CHAT_PATH) -> LoadResult:
    head, payload = request_bytes(port, key, body, path)
    window_start, window_end = _window(warmup, duration)
    result = LoadResult(concurrency, duration)

    async def client(conn: Connection) -> None:
        while True:
            sent = time.perf_counter()
            if sent >= window_end:
                return
            try:
                status, data = await asyncio.wait_for(_one_request(conn, head, payload), REQUEST_TIMEOUT)
                ok = status == 200
                if not ok:
                    detail = f"HTTP {status}: {data[:200]!r}"
            except FAILURES as error:
                conn.close()
                ok, detail = False, _failure(error)
            done = time.perf_counter()
            if sent >= window_start and done <= window_end:
                if ok:
                    result.latencies.append(done - sent)
                else:
                    result.count_error(detail)
            if not ok:
                await asyncio.sleep(BACK_OFF)

    await _clients(port, concurrency, client)
    return result


def content_of(event: bytes) -> str:
    """The text a chat stream event carries ("" for role, finish and usage events)."""
    try:
        chunk = json.loads(event)
    except ValueError:
        return ""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    return (choices[0].get("delta") or {}).get("content") or ""


async def _one_stream(conn: Connection, head: bytes, payload: bytes) -> tuple[list[float], float]:
    """Arrival times of the content tokens of one stream, and when it was sent."""
    sent = time.perf_counter()
    status, headers = await conn.send(head, payload)
    if status != 200:
        data = await conn.body(headers)
        raise HttpError(f"HTTP {status}: {data[:200]!r}")
    if headers.get("transfer-encoding", "").lower() != "chunked":
        raise HttpError("a stream that is not chunked")
    arrivals: list[float] = []
    buffer = b""
    done = False
    async for piece in conn.chunks():
        now = time.perf_counter()
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.splitlines():
                if line.startswith(b"data: "):
                    data = line[6:]
                    if data == b"[DONE]":
                        done = True
                    elif content_of(data):
                        arrivals.append(now)
    if not done:
        raise HttpError("the stream ended without [DONE]")
    if not conn.reusable(headers):
        conn.close()
    return arrivals, sent


async def _streams(port: int, key: str, body: dict, concurrency: int, warmup: float, duration: float) -> StreamResult:
    head, payload = request_bytes(port, key, {**body, "stream": True})
    window_start, window_end = _window(warmup, duration)
    result = StreamResult(concurrency, duration)

    async def client(conn: Connection) -> None:
        while time.perf_counter() < window_end:
            try:
                arrivals, sent = await asyncio.wait_for(_one_stream(conn, head, payload), REQUEST_TIMEOUT)
            except FAILURES as error:
                conn.close()
                if time.perf_counter() >= window_start:
                    result.count_error(_failure(error))
                await asyncio.sleep(BACK_OFF)
                continue
            if sent >= window_start and arrivals:
                result.ttft.append(arrivals[0] - sent)
                result.itl.extend(b - a for a, b in zip(arrivals, arrivals[1:], strict=False))
                result.tokens_per_stream.append(len(arrivals))

    await _clients(port, concurrency, client)
    return result


def _run(coroutine):
    if uvloop is not None:
        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def run_load(port: int, key: str, body: dict, concurrency: int, duration: float, warmup: float = 0.5,
             path: str = CHAT_PATH) -> LoadResult:
    return _run(_load(port, key, body, concurrency, warmup, duration, path))


def run_streams(port: int, key: str, body: dict, concurrency: int, duration: float,
                warmup: float = 0.5) -> StreamResult:
    return _run(_streams(port, key, body, concurrency, warmup, duration))
