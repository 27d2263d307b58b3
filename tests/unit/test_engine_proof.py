"""The engine check proves generation: tokens flowing, or one token asked for."""

import pytest
import requests

from entrypoint.checks import time_left
from entrypoint.engine_proof import PROOF_EVERY, EngineLoad, GenerationProof, read_load, tokens_flowing
from entrypoint.keys import Secret

from repo_paths import DATA

KEY = Secret("internal-key-for-the-engine")


def test_read_load_sums_vllms_own_page():
    load = read_load((DATA / "vllm_metrics.txt").read_text())
    assert load == EngineLoad(requests=4.0, tokens=2560.0)


def test_read_load_sums_every_engine_and_ignores_comments():
    page = ("# HELP vllm:prompt_tokens_total x\n"
            'vllm:prompt_tokens_total{engine="0"} 10.0\nvllm:prompt_tokens_total{engine="1"} 5.0\n'
            'vllm:generation_tokens_total{engine="0"} 7.0\nvllm:num_requests_running{engine="1"} 2.0\n'
            "vllm:generation_tokens_created 1.7e9\n")
    assert read_load(page) == EngineLoad(requests=2.0, tokens=7.0)


def test_a_page_without_the_generation_counter_gives_no_load():
    assert read_load('vllm:num_requests_running{model_name="m"} 0.0\n') is None
    assert read_load("") is None


@pytest.mark.parametrize("previous, load, flowing", [
    (100.0, EngineLoad(2, 120.0), True),
    (100.0, EngineLoad(2, 100.0), False),    # busy, nothing moved: prove by a token
    (100.0, EngineLoad(0, 120.0), False),    # idle: the moved count was the last request's
    (None, EngineLoad(2, 120.0), False),     # no earlier look to compare with
    (100.0, None, False),
    (100.0, EngineLoad(2, 3.0), False),      # a restarted engine counts from zero
])
def test_tokens_flow_only_when_requests_are_in_and_counters_moved(previous, load, flowing):
    assert tokens_flowing(previous, load) is flowing


class FakeResponse:
    def __init__(self, status: int, text: str = ""):
        self.status_code, self.text = status, text


class FakeEngine:
    """Answers like vLLM's /metrics and /v1/completions; records what was asked."""

    def __init__(self, requests_in=0.0, tokens=0.0, completion=200):
        self.requests_in, self.tokens, self.completion = requests_in, tokens, completion
        self.asked: list[tuple[str, dict]] = []

    def get(self, url, timeout):
        self.asked.append(("GET " + url.rsplit("/", 1)[1], {}))
        return FakeResponse(200, f"vllm:num_requests_running 0.0\nvllm:num_requests_waiting {self.requests_in}\n"
                                 f"vllm:prompt_tokens_total 0.0\nvllm:generation_tokens_total {self.tokens}\n")

    def post(self, url, json, headers, timeout):
        self.asked.append(("POST " + url.split("8000", 1)[1], {"json": json, "headers": headers}))
        if self.completion == "timeout":
            raise requests.exceptions.ReadTimeout("read timed out")
        return FakeResponse(self.completion)

    def posts(self) -> int:
        return sum(1 for what, _ in self.asked if what.startswith("POST"))


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def proof_for(engine: FakeEngine, clock: FakeClock | None = None) -> tuple[GenerationProof, float]:
    clock = clock or FakeClock()
    return GenerationProof("http://127.0.0.1:8000", KEY, "served", time_left, clock=clock), 1e12


def test_an_idle_engine_is_asked_for_one_token_with_its_internal_key():
    engine = FakeEngine()
    proof, deadline = proof_for(engine)
    ok, detail = proof.prove(engine, deadline)
    assert ok and "one token generated" in detail
    what, sent = engine.asked[-1]
    assert what == "POST /v1/completions"
    assert sent["json"] == {"model": "served", "prompt": "ping", "max_tokens": 1}
    assert sent["headers"] == {"Authorization": "Bearer internal-key-for-the-engine"}


def test_a_busy_engine_whose_tokens_flow_is_asked_for_nothing():
    engine = FakeEngine(requests_in=3, tokens=10)
    proof, deadline = proof_for(engine)
    proof.prove(engine, deadline)            # the first look has nothing to compare with
    engine.tokens = 11                       # only the proof's own token: not flowing
    proof.prove(engine, deadline)
    assert engine.posts() == 2
    engine.tokens = 25
    ok, detail = proof.prove(engine, deadline)
    assert ok and "tokens flowing" in detail
    assert engine.posts() == 2


def test_a_busy_engine_whose_tokens_stopped_must_generate_and_fails_when_it_cannot():
    engine = FakeEngine(requests_in=3, tokens=10, completion="timeout")
    proof, deadline = proof_for(engine)
    ok, detail = proof.prove(engine, deadline)
    assert not ok and "one token was not generated within the check timeout" in detail
    ok, detail = proof.prove(engine, deadline)   # nothing moved since
    assert not ok and engine.posts() == 2


def test_an_error_from_the_generation_fails_the_check():
    engine = FakeEngine(completion=500)
    proof, deadline = proof_for(engine)
    assert proof.prove(engine, deadline) == (False, "/health 200, but a one-token generation answered 500")


def test_a_model_that_does_not_generate_is_checked_by_health_alone_from_then_on():
    engine = FakeEngine(completion=404)
    proof, deadline = proof_for(engine)
    ok, detail = proof.prove(engine, deadline)
    assert ok and "does not generate" in detail
    asked = len(engine.asked)
    assert proof.prove(engine, deadline)[0] and len(engine.asked) == asked


def test_a_passed_deadline_fails_without_waiting():
    engine = FakeEngine()
    proof, _ = proof_for(engine)
    ok, detail = proof.prove(engine, 0.0)   # time.monotonic() is far past 0
    assert not ok and "not generated within the check timeout" in detail
    assert engine.posts() == 0


def test_an_idle_engine_is_asked_again_only_after_proof_every_seconds():
    engine, clock = FakeEngine(), FakeClock()
    proof, deadline = proof_for(engine, clock)
    assert proof.prove(engine, deadline)[0] and engine.posts() == 1
    clock.now += PROOF_EVERY - 0.5
    ok, detail = proof.prove(engine, deadline)
    assert ok and "idle, a token generated 4 s ago" in detail and engine.posts() == 1
    clock.now += 0.5
    assert proof.prove(engine, deadline)[0] and engine.posts() == 2


def test_a_busy_engine_with_nothing_moving_is_asked_at_once_however_recent_the_last_token():
    engine, clock = FakeEngine(), FakeClock()
    proof, deadline = proof_for(engine, clock)
    proof.prove(engine, deadline)
    engine.requests_in, clock.now = 2, clock.now + 1
    proof.prove(engine, deadline)
    assert engine.posts() == 2


def test_after_a_failed_token_the_next_check_asks_again():
    engine, clock = FakeEngine(completion="timeout"), FakeClock()
    proof, deadline = proof_for(engine, clock)
    assert not proof.prove(engine, deadline)[0]
    engine.completion = 200
    clock.now += 1
    assert proof.prove(engine, deadline)[0] and engine.posts() == 2
    clock.now += 1
    assert "idle, a token generated 1 s ago" in proof.prove(engine, deadline)[1]
    assert engine.posts() == 2
