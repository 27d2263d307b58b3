"""The front of every proxy worker: who may do what, within which limits, and
what it used, before a request goes to the engine relay or to LiteLLM.

Nothing gets past the front without a known key, except the open routes
(OPEN_ROUTES: the health routes probes and load balancers call, and CORS
preflights, which browsers send without a key and LiteLLM's CORS middleware
answers itself) and the page at / with its files (entrypoint.inside.ui_page,
answered here; 404 with --no-ui). Who calls is decided from the headers
alone, before a byte of the body is read: a request without a known key gets
401, and its body is never read (the answer closes the connection). Then:

- A body larger than --max-body-size gets 413 (on Content-Length, or as a
  chunked body streams in), one that stalls gets 408
  (entrypoint.inside.client_limits).
- A request to one of the engine's client routes
  (entrypoint.inside.relayed_routes: chat, completions, Responses, Anthropic's
  Messages, tokenize, pooling, audio, ...) is admitted by the key's limits
  (429 otherwise), relayed to the engine, and metered.
- GET /llm-entry/key answers any known key about itself alone
  (entrypoint.inside.own_key).
- GET /metrics answers the master key with the whole container's metrics
  (entrypoint.inside.metrics_page): 403 for a key from the file.
- A key from the file opens only the routes that reach the model
  (`reaches_model`, LiteLLM's list of its LLM API routes): 403 elsewhere.
- Everything else is served by LiteLLM, which checks the key again; a POST
  there (its own model routes: images, speech, moderations, ...) is admitted
  and metered the same way.

Import rules: standard library, aiohttp, `limits`, redis-py and
prometheus_client (LiteLLM's dependencies); LiteLLM is never imported here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entrypoint.inside import names
from entrypoint.inside.asgi import (
    ASGIApp,
    Message,
    PreparedAnswer,
    Response,
    client_address,
    closing,
    error_response,
    never_received,
    respond,
)
from entrypoint.inside.client_limits import BodyRefused, ClientLimits, has_body, read_body
from entrypoint.inside.key_ring import Holder, KeyRing, KeySource, holder_in, key_headers
from entrypoint.inside.own_key import OWN_KEY_ROUTE, own_key_answer
from entrypoint.inside.proxy_limits import Limiter, Refusal
from entrypoint.inside.proxy_quotas import quota_metrics_text
from entrypoint.inside.proxy_relay import EngineRelay, RelaySettings
from entrypoint.inside.proxy_usage import AnsweredRequest, Meter, Usage, UsageBook, ask_for_usage, requested_model
from entrypoint.inside.refusals import MODEL_ROUTES_ONLY, NOT_ALLOWED_REASON, Refused, log_refusal
from entrypoint.inside.relayed_routes import RELAYED_LABELS, relayed_route
from entrypoint.inside.ui_page import PAGE_ROUTES, Page, ui_enabled

METRICS_ROUTE = "/metrics"
# What answers without a key: the health routes (no model call, no body read).
OPEN_ROUTES = frozenset({"/health/liveliness", "/health/liveness", "/health/readiness"})
OPEN_METHODS = frozenset({"GET", "HEAD"})
ANONYMOUS_ROUTES = OPEN_ROUTES | PAGE_ROUTES
METRICS_TIMEOUT = 5.0          # seconds the engine's /metrics may take
NO_MODEL = "-"                 # the model label of a request the engine did not take
OTHER_ROUTE = "other"          # the route label of a request to a path nothing served
# Routes named in the labels whatever the answer: the relay's.
NAMED_ROUTES = RELAYED_LABELS
_METRICS_ONLY_MASTER = "The metrics are for the master key: other keys open only the routes that reach the model."
LIMITS_PREFIX = "llm-entry"    # before every counter's name, when llm-entry names no other


@dataclass(frozen=True)
class FrontSettings:
    limits_storage: str = names.MEMORY_STORAGE
    limits_prefix: str = LIMITS_PREFIX
    metrics_dir: Path | None = None
    own_metrics: Path | None = None
    client: ClientLimits = ClientLimits()
    # Which routes a key from the file opens (LiteLLM's list of its LLM API
    # routes, given by proxy_app); None: LiteLLM alone judges its routes.
    reaches_model: Callable[[str], bool] | None = None
    ui: bool = True                # the page at / (--ui/--no-ui)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> FrontSettings:
        def path(name: str) -> Path | None:
            return Path(environ[name]) if environ.get(name) else None
        return cls(environ.get(names.LIMITS_STORAGE_VARIABLE) or names.MEMORY_STORAGE,
                   environ.get(names.LIMITS_PREFIX_VARIABLE) or LIMITS_PREFIX,
                   path(names.METRICS_DIR_VARIABLE), path(names.OWN_METRICS_VARIABLE),
                   ClientLimits.from_environment(environ), ui=ui_enabled(environ))


def too_many(refused: Refusal) -> Response:
    return error_response(429, refused.message, refused.kind,
                          (("retry-after", str(refused.retry_after)), *refused.headers), refused.code)


def series_labels(path: str, model_of: Callable[[], str | None], status: int) -> tuple[str, str]:
    """(model, route) as metric labels. Only what was served is named: anyone
    with a key could otherwise make up a new series per request (a model the
    engine does not know, a path LiteLLM does not serve)."""
    served = 200 <= status < 300
    model = (model_of() or NO_MODEL) if served else NO_MODEL
    route = path if served or path in NAMED_ROUTES else OTHER_ROUTE
    return model, route


def is_preflight(scope: Message) -> bool:
    """A browser's CORS preflight: OPTIONS with Access-Control-Request-Method, never a key."""
    return scope["method"] == "OPTIONS" and any(name == b"access-control-request-method"
                                                for name, _ in scope["headers"])


# The scope keys under which the front hands the caller and the route to the
# model route (through CORS's wrapper).
HOLDER = "llm_entry.holder"
ROUTE = "llm_entry.route"


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
        self._wrap = wrap
        self._reaches_model = settings.reaches_model
        # LiteLLM's CORS settings (see proxy_app), for the requests a browser sends:
        # the middleware wraps every chunk's send, so others go without it.
        self._for_browsers = wrap(self._serve_model_route) if wrap else self._serve_model_route
        self.page = Page(settings.ui)

    @property
    def limiter(self) -> Limiter:
        # Made on the first request, inside the worker's running event loop.
        if self._limiter is None:
            self._limiter = Limiter(self.settings.limits_storage, self.settings.limits_prefix,
                                    on_fallback=self.book.fallbacks.inc)
        return self._limiter

    async def __call__(self, scope: Message, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_at_shutdown(send))
        elif scope["type"] == "websocket":
            await self._serve_websocket(scope, receive, send)
        elif scope["type"] != "http":
            return                       # no other kind of scope is served
        elif (scope["method"] in OPEN_METHODS and scope["path"] in ANONYMOUS_ROUTES) or is_preflight(scope):
            if has_body(scope["headers"]):
                await respond(send, *closing(error_response(
                    413, "This route takes no request body.", "invalid_request_error")))
            elif scope["path"] in PAGE_ROUTES and not is_preflight(scope):
                await respond(send, *self.page.answer(scope["method"], scope["path"], scope["headers"]))
            else:
                await self.app(scope, receive, send)
        else:
            await self._serve_with_key(scope, receive, send)

    async def _serve_with_key(self, scope: Message, receive: Callable, send: Callable) -> None:
        holder = holder_in(self._key_ring(), key_headers(scope["headers"]))
        if isinstance(holder, Refused):
            await self._refuse_key(scope, send, holder)
        elif (route := relayed_route(scope["method"], scope["path"])) is not None:
            scope[HOLDER], scope[ROUTE] = holder, route
            browser = any(name == b"origin" for name, _ in scope["headers"])
            await (self._for_browsers if browser else self._serve_model_route)(scope, receive, send)
        elif scope["method"] == "GET" and scope["path"] == OWN_KEY_ROUTE:
            await self._answer_unread(scope, send, await own_key_answer(holder, self.limiter))
        elif scope["method"] == "GET" and scope["path"] == METRICS_ROUTE:
            await self._serve_metrics(scope, send, holder)
        elif (holder.source is not KeySource.MASTER and self._reaches_model is not None
              and not self._reaches_model(scope["path"])):
            await self._refuse_key(scope, send, Refused(403, MODEL_ROUTES_ONLY, NOT_ALLOWED_REASON))
        else:
            await self._serve_through_litellm(scope, receive, send, holder)

    async def _refuse_key(self, scope: Message, send: Callable, refused: Refused) -> None:
        log_refusal(scope["method"], scope["path"], client_address(scope), refused.reason)
        await self._answer_unread(scope, send, refused.answer().response())

    async def _answer_unread(self, scope: Message, send: Callable, response: Response) -> None:
        """An answer before the body was read: it closes the connection when a
        body follows, and carries LiteLLM's CORS headers for a browser."""
        if has_body(scope["headers"]):
            response = closing(response)
        browser = self._wrap is not None and any(name == b"origin" for name, _ in scope["headers"])
        if browser:
            assert self._wrap is not None
            await self._wrap(PreparedAnswer(response))(scope, never_received, send)
        else:
            await respond(send, *response)

    async def _read_body(self, scope: Message, receive: Callable, send: Callable) -> bytes | bytearray | None:
        """The bounded body, or None when the request was answered (413, 408) or its client went away."""
        try:
            return await read_body(receive, scope["headers"], self.settings.client)
        except BodyRefused as refused:
            log_refusal(scope["method"], scope["path"], client_address(scope),
                        f"body refused with {refused.status}")
            await self._answer_unread(scope, send, closing(error_response(refused.status, refused.message,
                                                                          "invalid_request_error")))
            return None

    async def _serve_websocket(self, scope: Message, receive: Callable, send: Callable) -> None:
        holder = holder_in(self._key_ring(), key_headers(scope["headers"]))
        if isinstance(holder, Refused):
            log_refusal("WEBSOCKET", scope["path"], client_address(scope), holder.reason)
            await send({"type": "websocket.close", "code": 1008})   # before accept: the server answers 403
            return
        await self.app(scope, receive, send)

    async def _serve_model_route(self, scope: Message, receive: Callable, send: Callable) -> None:
        holder: Holder = scope[HOLDER]
        route, label, engine_path = scope[ROUTE]
        body = await self._read_body(scope, receive, send)
        if body is None:
            return                       # answered, or the client went away before its request was read
        with_usage = ask_for_usage(body) if route.asks_for_usage else None
        meter = Meter(send, strip_usage=with_usage is not None)

        async def relay() -> None:
            await self.relay.forward(scope, with_usage or body, receive, meter.send, engine_path)
        await self._metered(scope, holder, meter, relay, lambda: requested_model(body), label)

    async def _serve_through_litellm(self, scope: Message, receive: Callable, send: Callable,
                                     holder: Holder) -> None:
        """LiteLLM reads the whole body anyway: it is read here first, within the
        client's bounds, and handed over in one message."""
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        whole = bytes(body)
        handed: list[bool] = []

        async def receive_read_body() -> dict:
            if not handed:
                handed.append(True)
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()       # later: only the client's disconnect
        if scope["method"] != "POST":
            await self.app(scope, receive_read_body, send)
            return
        meter = Meter(send)

        async def litellm() -> None:
            await self.app(scope, receive_read_body, meter.send)
        await self._metered(scope, holder, meter, litellm, lambda: requested_model(whole), scope["path"])

    async def _metered(self, scope: Message, holder: Holder, meter: Meter, serve: Callable[[], Any],
                       model_of: Callable[[], str | None], label: str) -> None:
        """Admit by the holder's limits, serve, then count what it used."""
        started = self._clock()
        admitted = await self.limiter.admit(holder.name, holder.limits)
        if isinstance(admitted, Refusal):
            self.book.limited.labels(holder.name, admitted.limit).inc()
            await respond(meter.send, *too_many(admitted))
        else:
            async def charge(usage: Usage) -> None:
                await self.limiter.charge(holder.name, holder.limits, usage.total)
            meter.on_usage, meter.on_end, meter.headers = charge, admitted.release, admitted.headers
            try:
                await serve()
            finally:
                await admitted.release()
        status = meter.status or 499      # the client went away before an answer began
        model, route = series_labels(label, model_of, status)
        self.book.record(AnsweredRequest(holder.name, model, route, status, meter.usage, self._clock() - started,
                                         scope["path"], admitted.label if isinstance(admitted, Refusal) else None))
        await meter.charge_once()          # a usage the answer held but never sent on

    async def _serve_metrics(self, scope: Message, send: Callable, holder: Holder) -> None:
        if holder.source is not KeySource.MASTER:
            await self._refuse_key(scope, send, Refused(403, _METRICS_ONLY_MASTER, NOT_ALLOWED_REASON))
            return
        from entrypoint.inside.metrics_page import CONTENT_TYPE, metrics_page

        nothing = Path(os.devnull)    # an empty file, no folder: that part of the page is empty
        page = await metrics_page(self.relay.client(), self.relay.settings.engine_url,
                                  self.relay.settings.engine_key, self.settings.metrics_dir or nothing,
                                  self.settings.own_metrics or nothing, METRICS_TIMEOUT)
        page += quota_metrics_text(await self.limiter.quota_report(self._key_ring().limited_names()))
        await respond(send, 200, [(b"content-type", CONTENT_TYPE.encode()),
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
              wrap: Callable[[ASGIApp], ASGIApp] | None = None,
              reaches_model: Callable[[str], bool] | None = None) -> ProxyFront:
    settings = dataclasses.replace(FrontSettings.from_environment(environ), reaches_model=reaches_model)
    return ProxyFront(app, EngineRelay(RelaySettings.from_environment(environ)), key_ring, settings, wrap)
