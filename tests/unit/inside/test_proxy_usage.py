"""Unit tests of usage metering inside the proxy: the usage found in answers
of every shape, the usage event taken out of a stream whose client did not
ask for it, the request that asks the engine for it, and the access line."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry

from entrypoint.inside.proxy_usage import (
    AnsweredRequest,
    Meter,
    Usage,
    UsageBook,
    access_line,
    ask_for_usage,
    requested_model,
    usage_in_json,
)


def event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


CHUNKS = [event({"id": "c1", "choices": [{"index": 0, "delta": {"content": f"tok{i}"}}]}) for i in range(3)]
USAGE_EVENT = event({"id": "c1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                                          "total_tokens": 10}})
DONE = b"data: [DONE]\n\n"


def run_meter(pieces: list[bytes], strip: bool, content_type: bytes = b"text/event-stream") -> tuple[Meter, bytes]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def drive() -> Meter:
        meter = Meter(send, strip_usage=strip)
        await meter.send({"type": "http.response.start", "status": 200,
                          "headers": [(b"content-type", content_type)]})
        for piece in pieces:
            await meter.send({"type": "http.response.body", "body": piece, "more_body": True})
        await meter.send({"type": "http.response.body", "body": b"", "more_body": False})
        return meter

    meter = asyncio.run(drive())
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False} or not sent[-1]["more_body"]
    return meter, b"".join(m.get("body", b"") for m in sent[1:])


def test_usage_is_read_from_openai_responses_and_anthropic_shapes() -> None:
    assert usage_in_json(b'{"id":"x","usage": {"prompt_tokens": 5, "completion_tokens": 2}}') == Usage(5, 2)
    assert usage_in_json(b'{"usage":{"input_tokens":4,"output_tokens":9}}') == Usage(4, 9)
    assert usage_in_json(b'{"object":"list","usage":{"prompt_tokens":6,"total_tokens":6}}') == Usage(6, 0)
    assert usage_in_json(b'{"usage":null}') is None
    assert usage_in_json(b'{"choices":[{"text":"the \\"usage\\" of words"}]}') is None
    assert usage_in_json(b"not json") is None


def test_a_stream_whose_client_asked_for_usage_passes_unchanged_and_is_counted() -> None:
    stream = CHUNKS + [USAGE_EVENT, DONE]
    meter, relayed = run_meter(stream, strip=False)
    assert relayed == b"".join(stream)
    assert meter.usage == Usage(7, 3) and meter.status == 200


def test_the_usage_event_the_relay_asked_for_is_taken_out_of_the_stream() -> None:
    meter, relayed = run_meter(CHUNKS + [USAGE_EVENT, DONE], strip=True)
    assert relayed == b"".join(CHUNKS + [DONE])
    assert meter.usage == Usage(7, 3)


def test_events_split_across_reads_are_passed_on_whole_and_still_counted() -> None:
    whole = b"".join(CHUNKS + [USAGE_EVENT, DONE])
    pieces = [whole[i:i + 37] for i in range(0, len(whole), 37)]
    meter, relayed = run_meter(pieces, strip=True)
    assert relayed == b"".join(CHUNKS + [DONE]) and meter.usage == Usage(7, 3)
    meter, relayed = run_meter(pieces, strip=False)
    assert relayed == whole and meter.usage == Usage(7, 3)


def named_event(name: str, payload: dict) -> bytes:
    return f"event: {name}\n".encode() + event(payload)


# vLLM's Responses stream: usage null at the start, whole in response.completed.
RESPONSES_STREAM = [
    named_event("response.created", {"type": "response.created", "response": {"id": "resp_1", "usage": None}}),
    named_event("response.output_text.delta", {"type": "response.output_text.delta", "delta": "hi"}),
    named_event("response.completed", {"type": "response.completed", "response": {
        "id": "resp_1", "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0},
                                  "output_tokens": 5, "total_tokens": 17}}}),
]
# vLLM's Anthropic stream: the input in message_start, both counts in message_delta.
MESSAGES_STREAM = [
    named_event("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "usage": {"input_tokens": 9, "output_tokens": 0}}}),
    named_event("content_block_delta", {"type": "content_block_delta", "delta": {"text": "hi"}}),
    named_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"input_tokens": 9, "output_tokens": 4}}),
    named_event("message_stop", {"type": "message_stop"}),
]


def test_responses_and_messages_streams_pass_unchanged_and_their_usage_is_counted() -> None:
    for stream, used in ((RESPONSES_STREAM, Usage(12, 5)), (MESSAGES_STREAM, Usage(9, 4))):
        whole = b"".join(stream)
        for pieces in (stream, [whole[i:i + 29] for i in range(0, len(whole), 29)]):
            meter, relayed = run_meter(pieces, strip=False)
            assert relayed == whole and meter.usage == used


def test_anthropics_cached_prompt_tokens_count_as_prompt_tokens() -> None:
    assert usage_in_json(b'{"usage":{"input_tokens":4,"cache_read_input_tokens":10,'
                         b'"cache_creation_input_tokens":2,"output_tokens":9}}') == Usage(16, 9)


def test_count_tokens_answers_carry_no_usage() -> None:
    assert usage_in_json(b'{"input_tokens":9,"context_management":null}') is None


def test_a_stream_that_never_mentions_usage_is_relayed_as_it_came() -> None:
    meter, relayed = run_meter(CHUNKS + [DONE], strip=True)
    assert relayed == b"".join(CHUNKS + [DONE]) and meter.usage is None


def test_a_json_answer_in_several_pieces_is_counted_once_whole() -> None:
    body = json.dumps({"id": "x", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 1}}).encode()
    meter, relayed = run_meter([body[:20], body[20:]], strip=False, content_type=b"application/json")
    assert relayed == body and meter.usage == Usage(11, 1)


def test_a_streamed_request_without_usage_asks_the_engine_for_it() -> None:
    original = b' {"model": "m", "stream": true, "messages": [{"role": "user", "content": "h\\u00e9"}]}'
    asked = ask_for_usage(original)
    assert json.loads(asked) == {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hé"}],
                                 "stream_options": {"include_usage": True}}
    assert asked.endswith(original[2:])      # the client's own bytes, the option put first
    assert json.loads(ask_for_usage(bytearray(b'{"stream": true}'))) == {
        "stream": True, "stream_options": {"include_usage": True}}
    assert json.loads(ask_for_usage(b'{"stream": true, "stream_options": null}'))["stream_options"] == {
        "include_usage": True}
    kept = ask_for_usage(
        b'{"stream": true, "stream_options": {"include_usage": false, "continuous_usage_stats": true}}')
    assert json.loads(kept)["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_requests_that_need_nothing_are_left_alone() -> None:
    assert ask_for_usage(b'{"model": "m", "messages": []}') is None
    assert ask_for_usage(b'{"stream": false}') is None
    assert ask_for_usage(b'{"stream": true, "stream_options": {"include_usage": true}}') is None
    assert ask_for_usage(b'{"stream": true, "stream_options": "yes"}') is None   # the engine's 400 to give
    assert ask_for_usage(b'[{"stream": true}]') is None
    assert ask_for_usage(b'{"stream": true') is None
    assert ask_for_usage(b'{"tools": [{"parameters": {"properties": {"stream": {"type": "boolean"}}}}]}') is None


def test_the_requested_model_is_found_without_parsing_the_body() -> None:
    assert requested_model(b'{"messages": [], "model" : "tiny-llama"}') == "tiny-llama"
    assert requested_model(b'{"messages": []}') is None


def test_the_access_line_names_the_key_and_never_holds_a_key() -> None:
    line = access_line(1764640000.25, AnsweredRequest("team-a", "tiny", "/v1/chat/completions", 200, Usage(12, 30),
                                                      0.1532))
    assert line == ("access 2025-12-02T01:46:40.250Z key=team-a model=tiny route=/v1/chat/completions "
                    "status=200 prompt_tokens=12 completion_tokens=30 ms=153.2")
    assert access_line(0.0, AnsweredRequest("k", "-", "/v1/embeddings", 429, None, 0.001)).endswith(
        "status=429 prompt_tokens=- completion_tokens=- ms=1.0")


def test_the_book_counts_requests_tokens_and_latency_per_key(caplog) -> None:
    registry = CollectorRegistry()
    book = UsageBook(registry, clock=lambda: 0.0)
    caplog.set_level("INFO", logger="entrypoint.access")
    book.record(AnsweredRequest("team-a", "tiny", "/v1/chat/completions", 200, Usage(12, 30), 0.2))
    book.record(AnsweredRequest("team-a", "tiny", "/v1/chat/completions", 200, Usage(1, 2), 0.3))
    book.record(AnsweredRequest("team-b", "-", "/v1/completions", 429, None, 0.001))
    value = registry.get_sample_value
    assert value("llm_entry_requests_total", {"key": "team-a", "model": "tiny", "route": "/v1/chat/completions",
                                              "status": "200"}) == 2
    assert value("llm_entry_prompt_tokens_total", {"key": "team-a", "model": "tiny"}) == 13
    assert value("llm_entry_completion_tokens_total", {"key": "team-a", "model": "tiny"}) == 32
    assert value("llm_entry_request_seconds_count", {"key": "team-a", "model": "tiny",
                                                     "route": "/v1/chat/completions"}) == 2
    assert value("llm_entry_requests_total", {"key": "team-b", "model": "-", "route": "/v1/completions",
                                              "status": "429"}) == 1
    assert len([r for r in caplog.records if r.name == "entrypoint.access"]) == 3


def test_tokens_are_charged_and_the_place_given_back_before_the_answers_end_goes_out() -> None:
    order: list[str] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            order.append("end sent")

    async def charge(usage: Usage) -> None:
        order.append(f"charged {usage.total}")

    async def give_back() -> None:
        order.append("given back")

    async def drive(pieces: list[bytes], content_type: bytes) -> None:
        meter = Meter(send)
        meter.on_usage, meter.on_end = charge, give_back
        await meter.send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        for piece in pieces:
            await meter.send({"type": "http.response.body", "body": piece, "more_body": True})
        await meter.send({"type": "http.response.body", "body": b"", "more_body": False})
        await meter.charge_once()      # as the front does afterwards: never twice

    asyncio.run(drive(CHUNKS + [USAGE_EVENT, DONE], b"text/event-stream"))
    assert order == ["charged 10", "given back", "end sent"]
    order.clear()
    asyncio.run(drive([json.dumps({"usage": {"prompt_tokens": 2, "completion_tokens": 3}}).encode()],
                      b"application/json"))
    assert order == ["charged 5", "given back", "end sent"]
