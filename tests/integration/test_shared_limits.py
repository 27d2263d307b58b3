"""Two llm-entry instances (replicas) that name one Redis with --redis-url
share each key's limit, and a Redis that goes away mid-run makes the limits
fail open to each proxy worker's memory, visibly, until it is back (issue:
keys with names, limits and usage). Real llm-entry, supervisord, LiteLLM
and a real redis-server this test starts on loopback."""

from __future__ import annotations

import secrets

import pytest
import requests

from bench.procs import free_port, wait_for

from harness import Entry, start_redis, stop_redis

KEY = "sk-" + secrets.token_hex(16)
OTHER = "sk-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shared")
    port = free_port()
    redis = start_redis(tmp, port=port)
    keys_file = tmp / "keys"
    keys_file.write_text(f"{KEY} name=team-a rpm=4\n{OTHER} name=team-z rpm=6\n")
    model = tmp / "model"
    model.mkdir()
    (model / "config.json").write_text('{"num_attention_heads": 8, "num_key_value_heads": 8}')
    made = []
    state = {"port": port, "server": redis, "folder": tmp}
    try:
        for index in range(2):
            folder = tmp / f"replica{index}"
            folder.mkdir()
            made.append(Entry(folder, model=str(model),
                              args=["--api-keys-file", str(keys_file), "--redis-url",
                                    f"redis://127.0.0.1:{port}/0"]).start())
        for entry in made:
            entry.wait_ready()
        yield made, state
    finally:
        for entry in made:
            entry.kill_everything()
        stop_redis(state["server"])     # the one running now: a test may have started it again


def test_two_replicas_on_one_redis_share_a_keys_limit(replicas) -> None:
    entries, _ = replicas
    statuses = [entries[i % 2].chat("hi", key=KEY).status_code for i in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_a_redis_gone_mid_run_fails_open_to_memory_visibly_and_comes_back(replicas) -> None:
    entries, redis = replicas
    first = entries[0]
    stop_redis(redis["server"])
    # Limits now count in each worker's memory: team-z's 6 start again there.
    assert first.chat("hi", key=OTHER).status_code == 200
    wait_for(lambda: "the limiter's Redis does not answer" in first.output(), 10, "the fail-open warning")
    page = requests.get(first.url("/metrics"), headers=first.headers(), timeout=30).text
    assert any(line.startswith("llm_entry_limiter_fallbacks_total ") and float(line.split()[1]) >= 1
               for line in page.splitlines())
    assert first.ready(), "a Redis gone away must not make the container not ready (limits fail open)"
    redis["server"] = start_redis(redis["folder"], port=redis["port"])
    # The limiter asks Redis again a second after it last failed.
    wait_for(lambda: first.chat("hi", key=OTHER).status_code == 200
             and "the limiter's Redis answers again" in first.output(), 20, "the limiter back on Redis", poll=0.5)
