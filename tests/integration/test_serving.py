"""The happy path through the real llm-entry: start, serve with the key,
refuse without it, stream, and stop cleanly (issue: the entrypoint)."""

import json
import signal

import pytest
import requests

from bench.procs import wait_for

from harness import MASTER_KEY


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    """One llm-entry shared by the read-only tests of this module."""
    from harness import Entry
    entry = Entry(tmp_path_factory.mktemp("serving"),
                  env={"ENGINE_DOUBLE_TOKENS": "5", "ENGINE_DOUBLE_WORKERS": "2"}).start()
    try:
        entry.wait_ready()
        yield entry
    finally:
        entry.kill_everything()


def test_chat_completion_with_the_master_key_gets_the_engines_answer(serving):
    response = serving.chat("ping")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "double says: ping"


def test_streaming_arrives_as_server_sent_event_chunks(serving):
    response = serving.chat("one two three", stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in response.iter_lines(decode_unicode=True)
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(chunks) >= 5
    assert text.strip() == "double says: one two three"


def test_no_key_gets_401(serving):
    response = requests.post(serving.url("/v1/chat/completions"), timeout=30,
                             json={"model": serving.served_model_name, "messages": []})
    assert response.status_code == 401
    assert "error" in response.json()


def test_models_lists_the_served_model(serving):
    response = requests.get(serving.url("/v1/models"), headers=serving.headers(), timeout=30)
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == [serving.served_model_name]


def test_ready_line_names_url_and_model_but_not_the_key(serving):
    text = wait_for(lambda: "ready in" in serving.output() and serving.output(), 10, "the ready line")
    ready_line = next(line for line in text.splitlines() if "ready in" in line)
    assert f"127.0.0.1:{serving.port}/v1" in ready_line
    assert f"(public: 127.0.0.1:{serving.port})" in ready_line
    assert serving.served_model_name in ready_line
    assert MASTER_KEY not in text


def test_output_lines_say_which_process_wrote_them(serving):
    lines = serving.output().splitlines()
    assert any(line.startswith("engine    | engine-double:") for line in lines)
    assert any(line.startswith("proxy     | ") for line in lines)
    assert any(line.startswith("llm-entry | ") for line in lines)


def test_probe_files_follow_start_ready_and_sigterm(entry_factory):
    entry = entry_factory(env={"ENGINE_DOUBLE_STARTUP_DELAY": "4"}).start()
    wait_for(lambda: entry.has("not-ready"), 30, "not-ready while starting")
    assert not entry.has("not-healthy"), "a loading engine must not look broken"
    entry.wait_ready()
    assert not entry.has("not-healthy")
    code = entry.stop()
    assert code == 0, entry.output()
    assert entry.has("not-ready")
    assert not entry.has("not-healthy")
    entry.assert_nothing_left()


def test_sigint_stops_like_sigterm(entry_factory):
    entry = entry_factory().start()
    entry.wait_ready()
    entry.send(signal.SIGINT)
    assert entry.wait_exit() == 0
    entry.assert_nothing_left()
