"""Token quotas per key through the public port, with real llm-entry,
supervisord, LiteLLM, llm-entry's private redis-server (or a redis-server
this test starts for --redis-url) and the engine double, which counts 3
prompt tokens and answers 8 for PROMPT: 11 tokens a request.

- With --state-dir and two proxy workers: exact counts under concurrent
  requests, the 429 and its headers, the access line, a reload that changes
  a quota, a restart that keeps the counts, and a crash (SIGKILL of
  llm-entry, its proxy and its redis-server) that loses at most the
  documented second.
- Two replicas on one Redis share one quota, and the period rolls over on a
  wall clock the test moves in every process of both replicas
  (tests/wall_clock/sitecustomize.py, which says why not libfaketime), never
  a sleep.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import free_port, wait_for

from harness import Entry, start_redis, stop_redis

KEYS = {name: "sk-" + os.urandom(16).hex() for name in ("team-q", "team-big", "team-r", "team-m", "team-free")}
PROMPT = "one two three"
PER_REQUEST = 11
LINES = {
    "team-q": "name=team-q quota=110/day",            # 10 requests a day
    "team-big": "name=team-big quota=1000000/month",
    "team-free": "name=team-free",
}


def keys_text(lines: dict[str, str]) -> str:
    return "".join(f"{KEYS[name]} {fields}\n" for name, fields in lines.items())


def ask(entry: Entry, name: str) -> requests.Response:
    return entry.chat(PROMPT, key=KEYS[name])


def quota_used(entry: Entry, name: str, period: str) -> float | None:
    response = requests.get(entry.url("/metrics"), headers=entry.headers(), timeout=30)
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "llm_entry_quota_used_tokens" and sample.labels == {"key": name, "period": period}:
                return sample.value
    return None


def seconds_to_utc_midnight() -> float:
    now = datetime.now(timezone.utc)
    return (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()


def start(folder: Path, keys_file: Path, state_dir: Path) -> Entry:
    folder.mkdir(parents=True, exist_ok=True)
    entry = Entry(folder, args=["--api-keys-file", str(keys_file), "--proxy-workers", "2",
                                "--state-dir", str(state_dir)]).start()
    entry.wait_ready()
    return entry


@pytest.fixture(scope="module")
def durable(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quotas")
    keys_file, state_dir = tmp / "keys", tmp / "state"
    keys_file.write_text(keys_text(LINES))
    runs = {"entry": None, "tmp": tmp, "keys_file": keys_file, "state_dir": state_dir, "starts": 0}

    def restart() -> Entry:
        runs["starts"] += 1
        runs["entry"] = start(tmp / f"run{runs['starts']}", keys_file, state_dir)
        return runs["entry"]
    runs["restart"] = restart
    try:
        restart()
        yield runs
    finally:
        if runs["entry"] is not None:
            runs["entry"].kill_everything()


def test_two_workers_count_every_token_of_concurrent_requests_exactly(durable) -> None:
    entry = durable["entry"]
    statuses: list[int] = []

    def one() -> None:
        for _ in range(5):
            statuses.append(ask(entry, "team-big").status_code)
    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert statuses == [200] * 40
    assert quota_used(entry, "team-big", "month") == 40 * PER_REQUEST


def test_the_request_that_crosses_the_quota_is_answered_then_429_insufficient_quota_until_the_day_ends(
        durable) -> None:
    entry = durable["entry"]
    answers = [ask(entry, "team-q") for _ in range(12)]
    assert [a.status_code for a in answers] == [200] * 10 + [429] * 2
    assert [int(a.headers["x-quota-remaining-tokens-day"]) for a in answers[:10]] == list(range(110, 0, -11))
    assert answers[0].headers["x-quota-limit-tokens-day"] == "110"
    refused = answers[-1]
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("insufficient_quota", "insufficient_quota")
    assert "quota of 110 tokens per day" in error["message"]
    assert abs(int(refused.headers["retry-after"]) - seconds_to_utc_midnight()) <= 5
    assert refused.headers["x-quota-remaining-tokens-day"] == "0"
    assert refused.headers["x-quota-reset-tokens-day"] == refused.headers["retry-after"]
    assert ask(entry, "team-free").status_code == 200
    assert "x-quota-remaining-tokens-day" not in ask(entry, "team-free").headers
    wait_for(lambda: "key=team-q" in entry.output() and "refused=quota-day" in entry.output(), 10,
             "the access line of the refusal")
    line = next(line for line in entry.output().splitlines() if "key=team-q" in line and "status=429" in line)
    assert line.endswith(" refused=quota-day")
    assert quota_used(entry, "team-q", "day") == 110
    for key in KEYS.values():
        assert key not in entry.output()


def test_a_reload_that_raises_the_quota_keeps_the_count(durable) -> None:
    entry = durable["entry"]
    said = entry.output().count("SIGHUP: read --api-keys-file again")
    durable["keys_file"].write_text(keys_text({**LINES, "team-q": "name=team-q quota=132/day"}))
    entry.send(signal.SIGHUP)
    wait_for(lambda: entry.output().count("SIGHUP: read --api-keys-file again") > said, 10, "the reload")
    answers = [ask(entry, "team-q") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["x-quota-remaining-tokens-day"] == "22"


def test_a_restart_with_the_same_state_dir_keeps_the_counts(durable) -> None:
    assert durable["entry"].stop() == 0
    entry = durable["restart"]()
    assert quota_used(entry, "team-big", "month") == 40 * PER_REQUEST
    assert quota_used(entry, "team-q", "day") == 132
    assert ask(entry, "team-q").status_code == 429
    assert list((durable["state_dir"]).rglob("*.aof*"))


def test_a_crash_of_llm_entry_and_its_redis_server_loses_no_answered_token(durable) -> None:
    """A token is charged before its answer ends, and redis-server writes its
    append-only file before it acknowledges the charge: a crash of the
    processes (not of the machine, whose page cache would go too) loses
    nothing that was answered."""
    entry = durable["entry"]
    before = quota_used(entry, "team-big", "month")
    answered_at = []
    for _ in range(30):
        assert ask(entry, "team-big").status_code == 200
        answered_at.append(time.monotonic())
    redis_pid = entry.limiter_pid()
    assert redis_pid is not None
    os.kill(redis_pid, signal.SIGKILL)       # the private redis-server first, then everything else
    killed_at = time.monotonic()
    entry.kill_everything()
    entry = durable["restart"]()
    survived = quota_used(entry, "team-big", "month") - before
    lost = 30 * PER_REQUEST - survived
    in_last_second = sum(1 for at in answered_at if killed_at - at <= 1.0) * PER_REQUEST
    print(f"crash: {survived:.0f} of {30 * PER_REQUEST} tokens survived, {lost:.0f} lost "
          f"({in_last_second} charged in the last second before the kill)")
    assert lost == 0


# -- two replicas on one Redis, and the clock ------------------------------------

WALL_CLOCK = Path(__file__).resolve().parent.parent / "wall_clock"   # its sitecustomize moves time.time()


def set_clock(offset_file: Path, fake_now: datetime) -> None:
    """The wall clock of every process of both replicas, from their next call on."""
    offset = (fake_now - datetime.now(timezone.utc)).total_seconds()
    temporary = offset_file.with_suffix(".new")
    temporary.write_text(f"{offset:.3f}\n")
    os.replace(temporary, offset_file)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quota-replicas")
    port = free_port()
    redis = start_redis(tmp, port=port)
    keys_file, clock_file = tmp / "keys", tmp / "clock-offset"
    keys_file.write_text(keys_text({"team-r": "name=team-r quota=55/day",
                                    "team-m": "name=team-m quota=22/month quota=1000/hour"}))
    clock_file.write_text("0\n")
    fake = {"PYTHONPATH": os.pathsep.join(filter(None, (str(WALL_CLOCK), os.environ.get("PYTHONPATH")))),
            "WALL_CLOCK_OFFSET_FILE": str(clock_file)}
    made = []
    try:
        for index in range(2):
            folder = tmp / f"replica{index}"
            folder.mkdir()
            made.append(Entry(folder, env=fake, args=["--api-keys-file", str(keys_file), "--redis-url",
                                                      f"redis://127.0.0.1:{port}/0"]).start())
        for entry in made:
            entry.wait_ready()
        yield made, clock_file
    finally:
        for entry in made:
            entry.kill_everything()
        stop_redis(redis)


def test_two_replicas_on_one_redis_share_one_quota(replicas) -> None:
    entries, _ = replicas
    statuses = [ask(entries[i % 2], "team-r").status_code for i in range(7)]
    assert statuses == [200] * 5 + [429] * 2


def test_the_month_rolls_over_on_the_clock_the_test_moves(replicas) -> None:
    entries, clock_file = replicas
    now = datetime.now(timezone.utc)
    next_month = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)
    set_clock(clock_file, next_month - timedelta(seconds=600))
    answers = [ask(entries[i % 2], "team-m") for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == "insufficient_quota"
    assert 590 <= int(answers[2].headers["retry-after"]) <= 600
    set_clock(clock_file, next_month + timedelta(seconds=1))
    answers = [ask(entries[i % 2], "team-m") for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["x-quota-remaining-tokens-month"] == "22"
    assert answers[0].headers["x-quota-remaining-tokens-hour"] == "1000"
    assert quota_used(entries[0], "team-m", "month") == 22
