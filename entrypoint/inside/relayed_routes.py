"""The routes the relay takes straight to the engine: which public path and
method is which of vLLM's routes, how it is named in the metrics, and
whether a stream of it has to be asked for its usage.

The table is vLLM 0.32's own list of the routes it serves to clients, for
every task a model may have (vLLM registers a route only when the model
supports it; a route the model lacks answers the engine's own 404). A test
of the end-to-end tier builds vLLM's app at the pinned version for each
task and fails when vLLM serves a route this table neither relays nor
names in ENGINE_ONLY_ROUTES, with the reason it is kept from clients.

Finding a route is one dictionary lookup, plus, for the two routes that hold
a response's id, one fixed split of the path: the cost never grows with the
table.

Import rules: the standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RelayedRoute:
    label: str               # the route in metrics: the public path (a template where it holds an id)
    engine_path: str         # the engine's path (a template where it holds an id)
    method: str = "POST"
    # A stream of it carries usage only when asked (OpenAI's stream_options.include_usage):
    # the relay asks, and takes the usage event out again.
    asks_for_usage: bool = False


# vLLM's client routes (POST). Chat and completions stream usage only when asked;
# Responses and Anthropic's Messages always end their streams with it.
_ASKED_FOR_USAGE = ("/v1/chat/completions", "/v1/completions")
ENGINE_CLIENT_ROUTES = (
    # generate
    *_ASKED_FOR_USAGE, "/v1/chat/completions/batch", "/v1/responses",
    "/v1/messages", "/v1/messages/count_tokens", "/generative_scoring",
    # every model (structured decisions answer only when the model supports them)
    "/tokenize", "/detokenize", "/v1/systemone",
    # pooling: embed, classify, score
    "/v1/embeddings", "/v2/embed", "/pooling", "/classify",
    "/score", "/v1/score", "/rerank", "/v1/rerank", "/v2/rerank",
    # speech to text
    "/v1/audio/transcriptions", "/v1/audio/translations",
)
# The Responses API's routes that name a response.
RESPONSE_BY_ID = RelayedRoute("/v1/responses/{response_id}", "/v1/responses/{response_id}", "GET")
CANCEL_RESPONSE = RelayedRoute("/v1/responses/{response_id}/cancel", "/v1/responses/{response_id}/cancel")

# What vLLM serves that no client of the public port reaches through the relay, and why.
ENGINE_ONLY_ROUTES = {
    "/health": "LiteLLM's health routes answer for the container; the monitor checks the engine's",
    "/ping": "SageMaker's health check: the engine's, for the monitor",
    "/load": "the engine's load, for the operator",
    "/version": "the engine's version, for the operator",
    "/metrics": "part of llm-entry's own /metrics page, for the master key",
    "/kv_event_sources": "the KV cache's event endpoints, for a cluster's router",
    "/v1/models": "LiteLLM's, from the config (the readiness check uses it)",
    "/openapi.json": "vLLM's API description; the public port's is LiteLLM's",
    "/docs": "vLLM's API pages; the public port's are LiteLLM's",
    "/docs/oauth2-redirect": "vLLM's API pages; the public port's are LiteLLM's",
    "/redoc": "vLLM's API pages; the public port's are LiteLLM's",
    "/invocations": "SageMaker's dispatcher, which would open the model routes under another path",
    "/scale_elastic_ep": "resizes the engine: an operator's action",
    "/is_scaling_elastic_ep": "the state of a resize, for the operator",
    "/inference/v1/generate": "token ids in, token ids out: for a disaggregated deployment's router",
    "/inference/v1/abort_requests": "aborts any request: for a disaggregated deployment's router",
    "/v1/chat/completions/render": "prompt rendering for a disaggregated deployment's router",
    "/v1/completions/render": "prompt rendering for a disaggregated deployment's router",
    "/v1/messages/render": "prompt rendering for a disaggregated deployment's router",
    "/v1/responses/render": "prompt rendering for a disaggregated deployment's router",
    "/v1/chat/completions/derender": "output rendering for a disaggregated deployment's router",
    "/v1/completions/derender": "output rendering for a disaggregated deployment's router",
}


def _public_routes() -> dict[str, RelayedRoute]:
    """Each client route under its own path, and the /v1 routes also without
    /v1 (LiteLLM answered both, and clients configured either way)."""
    routes = {}
    for path in ENGINE_CLIENT_ROUTES:
        asks = path in _ASKED_FOR_USAGE
        routes[path] = RelayedRoute(path, path, asks_for_usage=asks)
        short = path.removeprefix("/v1")
        if short != path and short not in ENGINE_CLIENT_ROUTES:
            routes[short] = RelayedRoute(short, path, asks_for_usage=asks)
    return routes


RELAYED_ROUTES = _public_routes()          # public path -> route, for POST
# Every route label the relay can give (the metrics name these whatever the answer).
RELAYED_LABELS = frozenset({route.label for route in RELAYED_ROUTES.values()}
                           | {prefix + route.label.removeprefix("/v1")
                              for route in (RESPONSE_BY_ID, CANCEL_RESPONSE) for prefix in ("", "/v1")})

# A response id as vLLM makes them ("resp_" and hex): one path segment, no dots,
# so it can be put into the engine's path as it is.
_RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_RESPONSES = "/responses/"


def relayed_route(method: str, path: str) -> tuple[RelayedRoute, str, str] | None:
    """(route, its metrics label, the engine's path) for a request the relay
    takes, None for one it leaves to LiteLLM."""
    if method == "POST":
        route = RELAYED_ROUTES.get(path)
        if route is not None:
            return route, route.label, route.engine_path
    prefix, found, rest = path.partition(_RESPONSES)
    if not found or prefix not in ("", "/v1"):
        return None
    response_id, slash, action = rest.partition("/")
    if not _RESPONSE_ID.fullmatch(response_id):
        return None
    if method == "GET" and not slash:
        route = RESPONSE_BY_ID
    elif method == "POST" and action == "cancel":
        route = CANCEL_RESPONSE
    else:
        return None
    label = prefix + route.label.removeprefix("/v1")
    return route, label, route.engine_path.replace("{response_id}", response_id)
