"""Keys with names and limits, through the public port: exact limits with one
and with two proxy workers, what a client sees at a limit, usage per key name
in /metrics and in the access log, and never a key anywhere (issue: keys
with names, limits and usage). Real llm-entry, real supervisord, real
LiteLLM (and with two workers llm-entry's private redis-server), the engine
double."""

from __future__ import annotations

import secrets
import signal
import threading

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import wait_for

from harness import MASTER_KEY, Entry

KEYS = {name: "sk-" + secrets.token_hex(16) for name in
        ("team-a", "team-b", "team-c", "team-s", "team-d", "team-m", "team-r", "team-x")}
LINES = {
    "team-a": "name=team-a rpm=5",
    "team-b": "name=team-b",
    "team-c": "name=team-c tpm=30",
    "team-s": "tpm=30 name=team-s",
    "team-d": "name=team-d max_parallel=1",
    "team-m": "name=team-m",
    "team-r": "name=team-r rpm=2",
    "team-x": "name=team-x rpm=3",
}
PROMPT = "one two three"      # the engine double counts 3 prompt tokens and answers 8


def keys_file_text(lines: dict[str, str]) -> str:
    return "# teams\n" + "".join(f"{KEYS[name]} {fields}\n" for name, fields in lines.items())


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def limited(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"limits{request.param}")
    keys_file = tmp / "keys"
    keys_file.write_text(keys_file_text(LINES))
    hold = tmp / "hold"
    entry = Entry(tmp, args=["--api-keys-file", str(keys_file), "--proxy-workers", str(request.param)],
                  env={"ENGINE_DOUBLE_HOLD_FILE": str(hold)}).start()
    entry.keys_file, entry.hold = keys_file, hold
    try:
        entry.wait_ready()
        yield entry
    finally:
        entry.kill_everything()


def ask(entry: Entry, name: str, **extra) -> requests.Response:
    # A new connection per request: with two workers, either may answer.
    return entry.chat(PROMPT, key=KEYS[name], **extra)


def metrics(entry: Entry) -> dict[tuple[str, tuple], float]:
    response = requests.get(entry.url("/metrics"), headers=entry.headers(), timeout=30)
    assert response.status_code == 200, response.text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_a_key_with_rpm_5_gets_exactly_5_answers_then_429_with_retry_after(limited) -> None:
    answers = [ask(limited, "team-a") for _ in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    refused = answers[-1]
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "429"
    assert "5 requests per minute" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_an_unlimited_key_is_unaffected_by_the_others_limits(limited) -> None:
    assert [ask(limited, "team-b").status_code for _ in range(12)] == [200] * 12


def test_tpm_counts_the_tokens_of_each_answer(limited) -> None:
    # 11 tokens an answer: 0, 11, 22 used are under 30; 33 is over.
    assert [ask(limited, "team-c").status_code for _ in range(5)] == [200, 200, 200, 429, 429]
    assert "30 tokens per minute" in ask(limited, "team-c").json()["error"]["message"]


def test_tpm_counts_streams_that_did_not_ask_for_usage_and_their_client_sees_none(limited) -> None:
    streams = []
    for _ in range(4):
        stream = ask(limited, "team-s", stream=True)
        _ = stream.content        # read to its end before the next request, as a client in a loop does
        streams.append(stream)
    assert [s.status_code for s in streams] == [200, 200, 200, 429]
    text = streams[0].text
    assert text.rstrip().endswith("data: [DONE]") and '"usage"' not in text


def test_max_parallel_refuses_a_second_request_while_one_is_in_flight(limited) -> None:
    limited.hold.write_text("")
    first = limited.chat("hold on", key=KEYS["team-d"], stream=True)
    # One iterator for the whole stream: a dropped one closes the connection.
    lines = first.iter_lines()
    try:
        assert first.status_code == 200
        next(lines)                                   # in flight: its first event came
        second = ask(limited, "team-d")
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        assert "max_parallel" in second.json()["error"]["message"]
    finally:
        limited.hold.unlink()
    assert [line for line in lines if line][-1] == b"data: [DONE]"
    # The place is given back before the answer's end reaches the client.
    assert ask(limited, "team-d").status_code == 200


def test_names_appear_in_the_metrics_and_the_access_log_and_no_key_anywhere(limited) -> None:
    for _ in range(3):
        assert ask(limited, "team-m").status_code == 200
    wrong_model = requests.post(limited.url("/v1/chat/completions"), headers=limited.headers(KEYS["team-m"]),
                                json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
                                timeout=60)
    seen = metrics(limited)
    model = limited.served_model_name
    route = "/v1/chat/completions"
    requests_of = "llm_entry_requests_total"
    assert seen[(requests_of, (("key", "team-m"), ("model", model), ("route", route), ("status", "200")))] == 3
    assert seen[(requests_of, (("key", "team-m"), ("model", "-"), ("route", route),
                               ("status", str(wrong_model.status_code))))] == 1
    assert seen[("llm_entry_prompt_tokens_total", (("key", "team-m"), ("model", model)))] == 9
    assert seen[("llm_entry_completion_tokens_total", (("key", "team-m"), ("model", model)))] == 24
    assert seen[("llm_entry_ready", ())] == 1
    page = requests.get(limited.url("/metrics"), headers=limited.headers(), timeout=30).text
    wait_for(lambda: limited.output().count("key=team-m ") >= 4, 10, "the access log lines of team-m")
    line = next(line for line in limited.output().splitlines() if "key=team-m " in line)
    assert f"model={model} route={route} status=200 prompt_tokens=3 completion_tokens=8 ms=" in line
    for key in [*KEYS.values(), MASTER_KEY]:
        assert key not in limited.output() and key not in page


def test_metrics_are_for_the_master_key_only(limited) -> None:
    assert requests.get(limited.url("/metrics"), timeout=30).status_code == 401
    team = requests.get(limited.url("/metrics"), headers=limited.headers(KEYS["team-b"]), timeout=30)
    assert team.status_code == 403 and "master key" in team.json()["error"]["message"]


def test_a_reload_changes_a_limit_without_a_restart(limited) -> None:
    assert [ask(limited, "team-r").status_code for _ in range(3)] == [200, 200, 429]
    said = limited.output().count("SIGHUP: read --api-keys-file again")
    limited.keys_file.write_text(keys_file_text({**LINES, "team-r": "name=team-r rpm=4"}))
    limited.send(signal.SIGHUP)
    wait_for(lambda: limited.output().count("SIGHUP: read --api-keys-file again") > said, 10, "the reload")
    # Two answered and one refused count 3 of the new 4: one more, then 429.
    assert [ask(limited, "team-r").status_code for _ in range(2)] == [200, 429]


def test_an_rpm_limit_is_exact_under_concurrent_requests(limited) -> None:
    statuses: list[int] = []

    def one() -> None:
        statuses.append(ask(limited, "team-x").status_code)
    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200] * 3 + [429] * 5
