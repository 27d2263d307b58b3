"""The model routes, relayed to the engine byte for byte inside the proxy process.

Runs inside each LiteLLM proxy worker, behind the front (entrypoint.inside.proxy_front,
which checks the key and the key's limits). A request to one of the engine's
client routes (entrypoint.inside.relayed_routes) is sent to the engine with
the internal key in place of the client's, and the engine's status, headers
and body come back as the engine sent them, stream chunk by chunk.
Everything else goes to LiteLLM.

Why not LiteLLM's own routes: measured here on 1.103 (BENCHMARKS.md, "The
request path"), its chat route spends 0.85-1.1 ms of CPU per streamed chunk
(every chunk parsed into pydantic objects and serialised again) and 10-14 ms
per request (a dozen middlewares, route matching, the router's retry and
fallback wrappers), and it changes answers: a stream of 100 equal chunks is
cut, token-id prompts and some malformed bodies get 500. Its Responses and
Messages routes translate (about 15 ms of CPU a request) and answer in
LiteLLM's shape, not vLLM's, and it has no /tokenize. Its vLLM
pass-through route relays bytes but still costs about 10 ms per request in
the same middleware stack. A single local engine needs none of that.

Import rules: the standard library and aiohttp (a LiteLLM dependency) only;
LiteLLM is never imported here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp

from entrypoint.inside.asgi import Message, error_response, respond
from entrypoint.inside.key_ring import KEY_HEADER_NAMES
from entrypoint.inside.names import (
    DEFAULT_REQUEST_TIMEOUT,
    ENGINE_KEY_VARIABLE,
    ENGINE_URL_VARIABLE,
    REQUEST_TIMEOUT_VARIABLE,
)

CONNECT_TIMEOUT = 10.0

# Never passed on: hop-by-hop headers (RFC 9110 7.6.1), the client's
# credentials (the engine gets the internal key instead), and what the HTTP
# client or server sets itself.
_CREDENTIALS = KEY_HEADER_NAMES | {b"cookie", b"proxy-authorization"}
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade",
                         b"proxy-connection", b"host", b"content-length"})
_NOT_RELAYED_BACK = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelaySettings:
    engine_url: str          # http://127.0.0.1:PORT, no path
    engine_key: str
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> RelaySettings:
        missing = [name for name in (ENGINE_URL_VARIABLE, ENGINE_KEY_VARIABLE) if not environ.get(name)]
        if missing:
            raise RuntimeError(f"{' and '.join(missing)} not set in the LiteLLM proxy's environment: "
                               "start the proxy through llm-entry, which sets them.")
        timeout = float(environ.get(REQUEST_TIMEOUT_VARIABLE) or DEFAULT_REQUEST_TIMEOUT)
        return cls(environ[ENGINE_URL_VARIABLE].rstrip("/"), environ[ENGINE_KEY_VARIABLE], timeout)


def engine_request_headers(headers: Iterable[tuple[bytes, bytes]], engine_key: str) -> dict[str, str]:
    """The client's headers as the engine gets them: the same, less hop-by-hop
    headers and every credential, plus the internal key."""
    kept = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers
            if name.lower() not in _CREDENTIALS and name.lower() not in _HOP_BY_HOP}
    kept["Authorization"] = f"Bearer {engine_key}"
    return kept


def client_response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The engine's response headers as the client gets them (the server adds
    its own date and framing)."""
    return [(name.lower(), value) for name, value in raw if name.lower() not in _NOT_RELAYED_BACK]


class EngineRelay:
    """The proxy worker's connection pool to the engine, and one request's relay."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def client(self) -> aiohttp.ClientSession:
        # Made on the first request, inside the worker's running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT,
                                              sock_read=self.settings.request_timeout),
                auto_decompress=False,           # the bytes go back as they came
                trust_env=False,                 # loopback: never through HTTP_PROXY
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def forward(self, scope: Message, body: bytes | bytearray, receive: Callable, send: Callable,
                      engine_path: str) -> None:
        """Send the request to the engine and its answer to the client.

        From the moment the request is forwarded the client is watched: when
        it goes away, before the engine's answer began (a request that is not
        streamed answers only at its end) or during a stream, the engine's
        connection is closed and the engine aborts the request at once
        instead of working on for nobody."""
        exchange = asyncio.current_task()
        assert exchange is not None
        state = _Watch()
        watcher = asyncio.ensure_future(_cancel_when_gone(receive, exchange, state))
        try:
            await self._exchange(scope, body, send, engine_path)
        except asyncio.CancelledError:
            if not state.client_gone:
                raise
            if hasattr(exchange, "uncancel"):
                exchange.uncancel()      # ours: the request ends here, quietly
        finally:
            state.exchange_done = True   # from here on the watcher cancels nothing
            watcher.cancel()

    async def _exchange(self, scope: Message, body: bytes | bytearray, send: Callable, engine_path: str) -> None:
        url = self.settings.engine_url + engine_path
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = engine_request_headers(scope["headers"], self.settings.engine_key)
        try:
            response = await self.client().request(scope["method"], url, data=body if body else None,
                                                   headers=headers, allow_redirects=False)
        except asyncio.TimeoutError:
            await respond(send, *error_response(504, "The engine did not answer in time.", "timeout"))
            return
        except aiohttp.ClientError as error:
            await respond(send, *error_response(
                502, f"The engine is not reachable ({type(error).__name__}): it may be starting or restarting; "
                     "try again shortly.", "engine_unreachable"))
            return
        try:
            await _relay_response(response, send)
        finally:
            response.close()     # a no-op once the answer was read whole; otherwise the engine aborts


class _Watch:
    """Between one request's relay and its watcher (one event loop: no lock)."""

    client_gone = False
    exchange_done = False


async def _cancel_when_gone(receive: Callable, exchange: asyncio.Task, state: _Watch) -> None:
    """Cancels the relay of a request whose client went away. One task beside
    the relay's own: the exchange and the watcher as two tasks raced with
    asyncio.wait, with wait_for on each body read, took the proxy's CPU per
    request from 0.72 to 1.10 ms (median of 3 rounds, `python -m bench --only keys`)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not state.exchange_done:      # a disconnect also comes once the answer was sent whole
        state.client_gone = True
        exchange.cancel()


async def _relay_response(response: aiohttp.ClientResponse, send: Callable) -> None:
    headers = client_response_headers(response.raw_headers)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if response.content_length is not None:
        await send({"type": "http.response.body", "body": await response.read(), "more_body": False})
        return
    # A stream: relay whatever has arrived, as it arrives.
    try:
        read = response.content.readany
        while chunk := await read():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        # The response is half sent: end it without its last chunk, so the
        # client sees a broken stream, never a complete-looking one.
        logger.warning("the engine broke off a stream (%s): the client's stream is cut", type(error).__name__)
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})

