"""The relay's table of the engine's client routes: which public path and
method is which engine route, its metrics label, and which streams are asked
for usage. (The table against vLLM's own route list is an end-to-end test:
tests/e2e/test_route_table.py imports vLLM.)"""

from __future__ import annotations

from entrypoint.inside.relayed_routes import (
    CANCEL_RESPONSE,
    ENGINE_CLIENT_ROUTES,
    ENGINE_ONLY_ROUTES,
    RELAYED_LABELS,
    RELAYED_ROUTES,
    RESPONSE_BY_ID,
    relayed_route,
)


def engine_path(method: str, path: str) -> str | None:
    found = relayed_route(method, path)
    return found[2] if found else None


def test_every_client_route_is_relayed_under_its_own_path() -> None:
    for path in ENGINE_CLIENT_ROUTES:
        assert engine_path("POST", path) == path


def test_the_v1_routes_are_also_relayed_without_v1() -> None:
    assert engine_path("POST", "/chat/completions") == "/v1/chat/completions"
    assert engine_path("POST", "/responses") == "/v1/responses"
    assert engine_path("POST", "/messages") == "/v1/messages"
    assert engine_path("POST", "/messages/count_tokens") == "/v1/messages/count_tokens"
    assert engine_path("POST", "/audio/transcriptions") == "/v1/audio/transcriptions"
    # vLLM serves these at the root itself: the root route is its own.
    assert RELAYED_ROUTES["/score"].engine_path == "/score"
    assert RELAYED_ROUTES["/rerank"].engine_path == "/rerank"


def test_only_chat_and_completions_streams_are_asked_for_usage() -> None:
    asked = {path for path, route in RELAYED_ROUTES.items() if route.asks_for_usage}
    assert asked == {"/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions"}


def test_a_response_is_retrieved_and_cancelled_by_its_id() -> None:
    assert relayed_route("GET", "/v1/responses/resp_0a1b") == (
        RESPONSE_BY_ID, "/v1/responses/{response_id}", "/v1/responses/resp_0a1b")
    assert relayed_route("POST", "/responses/resp_0a1b/cancel") == (
        CANCEL_RESPONSE, "/responses/{response_id}/cancel", "/v1/responses/resp_0a1b/cancel")


def test_other_methods_and_paths_near_the_routes_are_left_to_litellm() -> None:
    for method, path in [("GET", "/v1/chat/completions"), ("POST", "/v1/chat/completions/"),
                         ("DELETE", "/v1/responses/resp_1"), ("POST", "/v1/responses/resp_1"),
                         ("GET", "/v1/responses/resp_1/cancel"), ("POST", "/v1/responses/resp_1/input_items"),
                         ("GET", "/v1/responses/"), ("GET", "/v2/responses/resp_1"), ("POST", "/v1/models"),
                         ("POST", "/v1/images/generations"), ("POST", "/health"), ("POST", "/invocations")]:
        assert relayed_route(method, path) is None, (method, path)


def test_an_id_that_is_not_one_path_segment_of_plain_characters_is_not_relayed() -> None:
    # The id goes into the engine's path: dots could climb out of /v1/responses/.
    for response_id in ("..", ".", "a.b", "a b", "a%2Fb", "x" * 257):
        assert relayed_route("GET", f"/v1/responses/{response_id}") is None
    assert relayed_route("POST", "/v1/responses/../../scale_elastic_ep/cancel") is None


def test_labels_name_each_route_once_ids_never() -> None:
    assert "/v1/responses/{response_id}" in RELAYED_LABELS and "/responses/{response_id}/cancel" in RELAYED_LABELS
    assert not any("resp_" in label for label in RELAYED_LABELS)
    assert set(RELAYED_ROUTES) <= RELAYED_LABELS


def test_no_route_is_both_relayed_and_kept_from_clients() -> None:
    assert not set(ENGINE_ONLY_ROUTES) & set(RELAYED_ROUTES)
