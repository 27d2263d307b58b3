"""The front of every proxy worker: who may do what, within which limits, and
what it used, before a request goes to the engine relay or to LiteLLM.

- A POST to a model route (entrypoint.inside.proxy_relay.RELAYED_ROUTES) is checked
  against the key ring shared with LiteLLM's custom auth (401 otherwise),
  admitted by the key's limits (429 otherwise), relayed to the engine, and
  metered.
- Any other POST that carries a key the ring knows (LiteLLM's /v1/responses,
  /v1/messages, ...) is admitted and metered the same way, then served by
  LiteLLM, which checks the key again; a POST without a known key goes to
  LiteLLM untouched, which refuses it.
- GET /metrics answers the master key with the whole container's metrics
  (entrypoint.inside.metrics_page): 401 without a key, 403 for a key from the file.
- Everything else goes to LiteLLM as it came.

Import rules: standard library, aiohttp, `limits`, redis-py and
prometheus_client (LiteLLM's dependencies); LiteLLM is never imported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entrypoint.inside import names
from entrypoint.inside.proxy_auth import (
    NOT_ALLOWED_REASON,
    WRONG_KEY,
    WRONG_KEY_REASON,
    CredentialError,
    Holder,
    KeyRing,
    KeySource,
    log_refusal,
    presented_key,
)
from entrypoint.inside.proxy_limits import Limiter, Refusal
from entrypoint.inside.proxy_relay import (
    RELAYED_ROUTES,
    ASGIApp,
    EngineRelay,
    Message,
    RelaySettings,
    error_response,
    read_body,
    respond,
)
from entrypoint.inside.proxy_usage import AnsweredRequest, Meter, Usage, UsageBook, ask_for_usage, requested_model

METRICS_ROUTE = "/metrics"
METRICS_TIMEOUT = 5.0          # seconds the engine's /metrics may take
NO_MODEL = "-"                 # the model label of a request the engine did not take
OTHER_ROUTE = "other"          # the route label of a request to a path nothing served
# Routes named in the labels whatever the answer: the relay's, and LiteLLM's
# model routes a client of a vLLM model uses.
NAMED_ROUTES = frozenset(RELAYED_ROUTES) | {prefix + route for route in ("/responses", "/messages")
                                            for prefix in ("", "/v1")}
_METRICS_ONLY_MASTER = "The metrics are for the master key: other keys open only the routes that reach the model."


@dataclass(frozen=True)
class FrontSettings:
    limits_storage: str = "memory://"
    limits_prefix: str = "llm-entry"
    metrics_dir: Path | None = None
    own_metrics: Path | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> FrontSettings:
        def path(name: str) -> Path | None:
            return Path(environ[name]) if environ.get(name) else None
        return cls(environ.get(names.LIMITS_STORAGE_VARIABLE) or "memory://",
                   environ.get(names.LIMITS_PREFIX_VARIABLE) or "llm-entry",
                   path(names.METRICS_DIR_VARIABLE), path(names.OWN_METRICS_VARIABLE))


def refusal(message: str) -> tuple[int, list, bytes]:
    return error_response(401, message, "auth_error", ((b"www-authenticate", b"Bearer"),))


def too_many(refused: Refusal) -> tuple[int, list, bytes]:
    return error_response(429, refused.message, "rate_limit_error",
                          ((b"retry-after", str(refused.retry_after).encode()),))


# The headers a key may come in (presented_key's); ASGI servers give names in lower case.
_KEY_HEADER_NAMES = frozenset({b"authorization", b"x-api-key", b"api-key"})


def key_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Only the headers that may carry a key, decoded: the others are most of
    a request's headers, and decoding them all cost 8% of the proxy's CPU."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
            if name.lower() in _KEY_HEADER_NAMES]


def check_holder(key_ring: KeyRing, headers: Iterable[tuple[bytes, bytes]]) -> tuple[Holder | None, str, str]:
    """(who holds the key, or None; the client's message; the log's reason):
    the same rules as LiteLLM's custom auth."""
    try:
        key = presented_key(key_headers(headers))
    except CredentialError as error:
        return None, str(error), error.reason
    holder = key_ring.holder_of(key)
    return (holder, "", "") if holder else (None, WRONG_KEY, WRONG_KEY_REASON)


def series_labels(path: str, model_of: Callable[[], str | None], status: int) -> tuple[str, str]:
    """(model, route) as metric labels. Only what was served is named: anyone
    with a key could otherwise make up a new series per request (a model the
    engine does not know, a path LiteLLM does not serve)."""
    served = 200 <= status < 300
    model = (model_of() or NO_MODEL) if served else NO_MODEL
    route = path if served or path in NAMED_ROUTES else OTHER_ROUTE
    return model, route


def client_address(scope: Message) -> str:
    return (scope.get("client") or ("unknown",))[0]


class ProxyFront:
    """ASGI app in front of LiteLLM's (see the module's docstring)."""

    def __init__(self, app: ASGIApp, relay: EngineRelay, key_ring: Callable[[], KeyRing],
                 settings: FrontSettings = FrontSettings(), wrap: Callable[[ASGIApp], ASGIApp] | None = None,
                 book: UsageBook | None = None) -> None:
        self.app = app
        self.relay = relay
        self.settings = settings
        self._key_ring = key_ring      # called per request: LiteLLM's auth and this share one ring
        self.book = book or UsageBook()
        self._clock = self.book.timer  # the seconds the book records are measured with the book's timer
        self._limiter: Limiter | None = None
        # LiteLLM's CORS settings (see proxy_app), for the requests a browser sends:
        # the middleware wraps every chunk's send, so others go without it.
        self._for_browsers = wrap(self._serve_model_route) if wrap else self._serve_model_route

    @property
    def limiter(self) -> Limiter:
        # Made on the first request, inside the worker's running event loop.
        if self._limiter is None:
            self._limiter = Limiter(self.settings.limits_storage, self.settings.limits_prefix,
                                    self.relay.settings.request_timeout, on_fallback=self.book.fallbacks.inc)
        return self._limiter

    async def __call__(self, scope: Message, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_at_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["method"] == "POST" and scope["path"] in RELAYED_ROUTES:
            browser = any(name == b"origin" for name, _ in scope["headers"])
            await (self._for_browsers if browser else self._serve_model_route)(scope, receive, send)
        elif scope["method"] == "POST":
            await self._serve_through_litellm(scope, receive, send)
        elif scope["method"] == "GET" and scope["path"] == METRICS_ROUTE:
            await self._serve_metrics(scope, send)
        else:
            await self.app(scope, receive, send)

    async def _serve_model_route(self, scope: Message, receive: Callable, send: Callable) -> None:
        holder, message, reason = check_holder(self._key_ring(), scope["headers"])
        if holder is None:
            log_refusal(scope["method"], scope["path"], client_address(scope), reason)
            await respond(send, *refusal(message))
            return
        body = await read_body(receive)
        if body is None:
            return                       # the client went away before its request was read
        with_usage = ask_for_usage(body)
        meter = Meter(send, strip_usage=with_usage is not None)

        async def relay() -> None:
            await self.relay.forward(scope, with_usage or body, receive, meter.send, RELAYED_ROUTES[scope["path"]])
        await self._metered(scope, holder, meter, relay, lambda: requested_model(body))

    async def _serve_through_litellm(self, scope: Message, receive: Callable, send: Callable) -> None:
        holder, _, _ = check_holder(self._key_ring(), scope["headers"])
        if holder is None:
            await self.app(scope, receive, send)     # LiteLLM's custom auth refuses it, and logs why
            return
        first_body: list[bytes] = []

        async def receive_noting_model() -> dict:
            message = await receive()
            if not first_body and message["type"] == "http.request":
                first_body.append(message.get("body", b""))
            return message
        meter = Meter(send)

        async def litellm() -> None:
            await self.app(scope, receive_noting_model, meter.send)
        await self._metered(scope, holder, meter, litellm, lambda: requested_model(b"".join(first_body)))

    async def _metered(self, scope: Message, holder: Holder, meter: Meter, serve: Callable[[], Any],
                       model_of: Callable[[], str | None]) -> None:
        """Admit by the holder's limits, serve, then count what it used."""
        started = self._clock()
        admitted = await self.limiter.admit(holder.name, holder.limits)
        if isinstance(admitted, Refusal):
            self.book.limited.labels(holder.name, admitted.limit).inc()
            await respond(meter.send, *too_many(admitted))
        else:
            async def charge(usage: Usage) -> None:
                await self.limiter.charge(holder.name, holder.limits, usage.total)
            meter.on_usage, meter.on_end = charge, admitted.release
            try:
                await serve()
            finally:
                await admitted.release()
        status = meter.status or 499      # the client went away before an answer began
        model, route = series_labels(scope["path"], model_of, status)
        self.book.record(AnsweredRequest(holder.name, model, route, status, meter.usage, self._clock() - started,
                                         scope["path"]))
        await meter.charge_once()          # a usage the answer held but never sent on

    async def _serve_metrics(self, scope: Message, send: Callable) -> None:
        holder, message, reason = check_holder(self._key_ring(), scope["headers"])
        if holder is None or holder.source is not KeySource.MASTER:
            log_refusal(scope["method"], scope["path"], client_address(scope), reason or NOT_ALLOWED_REASON)
            await respond(send, *(refusal(message) if holder is None else
                                  error_response(403, _METRICS_ONLY_MASTER, "auth_error")))
            return
        from entrypoint.inside.metrics_page import metrics_page

        nothing = Path(os.devnull)    # an empty file, no folder: that part of the page is empty
        page = await metrics_page(self.relay.client(), self.relay.settings.engine_url,
                                  self.relay.settings.engine_key, self.settings.metrics_dir or nothing,
                                  self.settings.own_metrics or nothing, METRICS_TIMEOUT)
        await respond(send, 200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                                  (b"content-length", str(len(page)).encode())], page)

    def _closing_at_shutdown(self, send: Callable) -> Callable:
        async def send_after_closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.relay.close()
            await send(message)
        return send_after_closing

    async def close(self) -> None:
        await self.relay.close()


def front_app(app: ASGIApp, environ: Mapping[str, str], key_ring: Callable[[], KeyRing],
              wrap: Callable[[ASGIApp], ASGIApp] | None = None) -> ProxyFront:
    return ProxyFront(app, EngineRelay(RelaySettings.from_environment(environ)), key_ring,
                      FrontSettings.from_environment(environ), wrap)
