"""End to end with the real engine: llm-entry, supervisord, LiteLLM and the
real vLLM (CPU build) serving the demo model built offline, driven with the
official openai client (issue: real engine end to end).

No skip: a missing vLLM is an error here, so CI cannot pass without this tier.
"""

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from harness import MASTER_KEY, Entry, pgid_of, pid_alive, wait_for

pytestmark = pytest.mark.e2e

VLLM_START_DEADLINE = 600.0   # cold start on 2 busy cores, compile included


def demo_entry(tmp) -> Entry:
    import vllm  # noqa: F401  (fails loudly, never skips)
    from entrypoint.config import default_engine_cmd
    return Entry(tmp, model="demo", engine_cmd=" ".join(default_engine_cmd()),
                 args=["--cache-dir", str(tmp / "cache")], env={"HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    entry = demo_entry(tmp_path_factory.mktemp("e2e")).start()
    entry.served_model_name = "demo"
    try:
        entry.wait_ready(timeout=VLLM_START_DEADLINE)
        yield entry
    finally:
        entry.kill_everything()


def client(entry, key=MASTER_KEY, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=entry.url("/v1"), api_key=key, max_retries=0, timeout=120, **kwargs)


def test_models_lists_the_demo_model(live):
    assert [m.id for m in client(live).models.list()] == ["demo"]


def test_chat_completion_answers(live):
    reply = client(live).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
    assert reply.choices[0].message.content is not None
    assert reply.usage.completion_tokens >= 1


def test_streaming_chat_completion_arrives_in_chunks(live):
    stream = client(live).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=12,
        stream=True, extra_body={"ignore_eos": True})
    chunks = [chunk for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert len(chunks) >= 2


def test_text_completion_answers(live):
    reply = client(live).completions.create(model="demo", prompt="The quick brown", max_tokens=5)
    assert reply.choices[0].text is not None


@pytest.mark.parametrize("headers", [
    {},                                                   # no key
    {"Authorization": "Bearer sk-wrong-0123456789abcdef0123"},
    {"Authorization": f"Basic {MASTER_KEY}"},            # malformed
])
def test_requests_without_a_valid_key_get_401(live, headers):
    response = requests.post(live.url("/v1/chat/completions"), headers=headers, timeout=60,
                             json={"model": "demo", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401


def test_the_openai_client_with_a_wrong_key_gets_an_authentication_error(live):
    with pytest.raises(openai.AuthenticationError):
        client(live, key="sk-wrong-0123456789abcdef0123").models.list()


def test_sixteen_concurrent_requests_all_succeed(live):
    api = client(live)

    def ask(i):
        return api.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": f"request {i}"}], max_tokens=4)

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(ask, range(16)))
    assert len(replies) == 16 and all(r.choices for r in replies)


def test_sigterm_with_a_stream_in_flight_finishes_it_and_leaves_nothing(live):
    """Last test of the module: it stops the shared instance."""
    live.record_tree()
    assert any("VLLM" in _cmdline(pid) or "vllm" in _cmdline(pid) for pid in live.seen)
    got: dict = {"chunks": 0}
    started = threading.Event()

    def stream():
        try:
            for chunk in client(live).chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": "Tell me"}], max_tokens=64,
                    stream=True, extra_body={"ignore_eos": True}):
                if chunk.choices and chunk.choices[0].delta.content:
                    got["chunks"] += 1
                    started.set()
                if chunk.choices and chunk.choices[0].finish_reason:
                    got["finish"] = chunk.choices[0].finish_reason
        except Exception as error:  # reported below
            got["error"] = repr(error)
        started.set()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    assert started.wait(120)
    live.send(signal.SIGTERM)
    assert live.wait_exit(120) == 0, live.output()
    thread.join(60)
    assert "error" not in got, got
    assert got.get("finish") == "length" and got["chunks"] >= 32, got
    assert live.has("not-ready") and not live.has("not-healthy")
    live.assert_nothing_left()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_engine_sigkill_fails_the_container_and_leaves_no_worker(tmp_path):
    entry = demo_entry(tmp_path).start()
    entry.served_model_name = "demo"
    try:
        entry.wait_ready(timeout=VLLM_START_DEADLINE)
        engine = entry.program_pid("engine")
        workers = [pid for pid in entry.record_tree() if pid != engine and pgid_of(pid) == engine]
        assert workers, "vLLM's EngineCore should run in the engine's process group"
        os.kill(engine, signal.SIGKILL)
        assert entry.wait_exit(120) == 3, entry.output()
        assert entry.has("not-healthy") and entry.has("not-ready")
        assert "SIGKILL" in entry.stderr()
        wait_for(lambda: not any(map(pid_alive, workers)), 30, "the orphaned EngineCore to be gone")
        entry.assert_nothing_left()
    finally:
        entry.kill_everything()
