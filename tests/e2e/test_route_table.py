"""The relay's route table against vLLM's own routes at the pinned version:
vLLM's app is built for each kind of model (generate, embed, classify,
speech to text), as `vllm serve` builds it, and every route it registers
must be relayed or named, with its reason, as kept from clients
(entrypoint.inside.relayed_routes). A vLLM that adds, moves or drops a
route fails this until the table says what to do with it."""

from __future__ import annotations

import logging
import types

import pytest

from entrypoint.inside.relayed_routes import (
    CANCEL_RESPONSE,
    ENGINE_CLIENT_ROUTES,
    ENGINE_ONLY_ROUTES,
    RESPONSE_BY_ID,
)

TASKS = {"generate": None, "embed": "embed", "classify": "classify", "transcription": None}


class PoolingModel:
    """What vLLM's app builder asks a pooling model's config (a reranker's single label included)."""

    hf_config = types.SimpleNamespace(num_labels=1)
    architecture = "AnyForSequenceClassification"
    io_processor_plugin = None

    def __init__(self, task: str) -> None:
        self.task = task

    def get_pooling_task(self, supported_tasks):
        return self.task


@pytest.fixture(scope="module")
def vllm_routes() -> dict[str, set[tuple[str, str]]]:
    """(method, path) vLLM registers, by task, with the engine's default flags
    (llm-entry never turns on VLLM_SERVER_DEV_MODE's routes)."""
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(["--model", "demo"])
    found = {}
    # Building vLLM's app sets the root logger to ERROR: put it back, or every
    # later test that captures a warning in this session would see nothing.
    root_level = logging.getLogger().level
    try:
        for task, pooling in TASKS.items():
            app = build_app(args, (task,), PoolingModel(pooling) if pooling else None)
            found[task] = {(method, route.path) for route in app.routes
                           for method in (getattr(route, "methods", None) or ()) if method != "HEAD"}
    finally:
        logging.getLogger().setLevel(root_level)
    return found


def test_every_route_vllm_serves_is_relayed_or_kept_from_clients_with_a_reason(vllm_routes) -> None:
    relayed = {("POST", path) for path in ENGINE_CLIENT_ROUTES} | {
        (RESPONSE_BY_ID.method, RESPONSE_BY_ID.engine_path), (CANCEL_RESPONSE.method, CANCEL_RESPONSE.engine_path)}
    served = set().union(*vllm_routes.values())
    unclassified = {(method, path) for method, path in served
                    if (method, path) not in relayed and path not in ENGINE_ONLY_ROUTES}
    assert unclassified == set()


def test_every_relayed_route_is_one_vllm_serves(vllm_routes) -> None:
    served = set().union(*vllm_routes.values())
    assert {("POST", path) for path in ENGINE_CLIENT_ROUTES} - served == set()
    assert {(RESPONSE_BY_ID.method, RESPONSE_BY_ID.engine_path),
            (CANCEL_RESPONSE.method, CANCEL_RESPONSE.engine_path)} <= served
    assert set(ENGINE_ONLY_ROUTES) <= {path for _, path in served}


def test_the_routes_of_each_kind_of_model_are_the_ones_the_docs_name(vllm_routes) -> None:
    client = set(ENGINE_CLIENT_ROUTES)
    assert {path for _, path in vllm_routes["generate"]} & client == {
        "/v1/chat/completions", "/v1/completions", "/v1/chat/completions/batch", "/v1/responses", "/v1/messages",
        "/v1/messages/count_tokens", "/generative_scoring", "/v1/systemone", "/tokenize", "/detokenize"}
    assert {path for _, path in vllm_routes["embed"]} & client == {
        "/tokenize", "/detokenize", "/v1/systemone", "/v1/embeddings", "/v2/embed", "/pooling", "/score",
        "/v1/score", "/rerank", "/v1/rerank", "/v2/rerank"}
    assert {path for _, path in vllm_routes["transcription"]} & client == {
        "/tokenize", "/detokenize", "/v1/systemone", "/v1/audio/transcriptions", "/v1/audio/translations"}
