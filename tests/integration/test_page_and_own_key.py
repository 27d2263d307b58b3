"""The page at / and the own-key endpoint through the public port, without a
browser: the page's files answer anyone with a strict Content-Security-Policy,
nosniff and an ETag (304 on a match); nothing else answers without a key, and
LiteLLM's own pages stay the master key's; --no-ui (here as LLM_ENTRY_UI=0)
makes them 404; GET /llm-entry/key tells a key about itself alone, from the
counters that enforce its limits (two proxy workers: the private
redis-server's). Real llm-entry, supervisord and LiteLLM, the engine double."""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator

import pytest
import requests

from bench.procs import wait_for

from harness import MASTER_KEY, WRONG_KEY, Entry, running

TEAM_KEY = "sk-team-" + secrets.token_hex(16)
OTHER_KEY = "sk-other-" + secrets.token_hex(16)
PAGE_FILES = ("/", "/llm-entry/ui/app.js", "/llm-entry/ui/style.css", "/llm-entry/ui/icon.svg")
LITELLM_PAGES = ("/docs", "/openapi.json", "/redoc", "/ui/", "/ui")
OWN_KEY = "/llm-entry/key"


@pytest.fixture(scope="module")
def entry(tmp_path_factory) -> Iterator[Entry]:
    tmp = tmp_path_factory.mktemp("page")
    keys = tmp / "keys"
    keys.write_text(f"{TEAM_KEY} name=team rpm=10 tpm=1000 max_parallel=2\n{OTHER_KEY} name=other rpm=7\n")
    hold = tmp / "hold"
    with running(tmp, args=["--api-keys-file", str(keys), "--proxy-workers", "2"],
                 env={"ENGINE_DOUBLE_HOLD_FILE": str(hold)}) as entry:
        entry.hold = hold
        yield entry


@pytest.fixture(scope="module")
def without_ui(tmp_path_factory) -> Iterator[Entry]:
    with running(tmp_path_factory.mktemp("no-ui"), env={"LLM_ENTRY_UI": "0"}) as entry:
        yield entry


def get(entry: Entry, path: str, key: str | None = None, **headers: str) -> requests.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.get(entry.url(path), headers=headers, timeout=30)


def own_key(entry: Entry, key: str) -> dict:
    answer = get(entry, OWN_KEY, key)
    assert answer.status_code == 200, answer.text
    return answer.json()


def usage(entry: Entry, key: str) -> dict[str, dict]:
    return {use["limit"]: use for use in own_key(entry, key)["usage"]}


# -- the page ---------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGE_FILES)
def test_each_file_of_the_page_answers_without_a_key_with_the_security_headers(entry, path) -> None:
    answer = get(entry, path)
    assert answer.status_code == 200 and answer.content
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["etag"].startswith('"')


def test_the_page_is_html_and_its_script_is_javascript(entry) -> None:
    assert get(entry, "/").headers["content-type"] == "text/html; charset=utf-8"
    assert get(entry, "/llm-entry/ui/app.js").headers["content-type"] == "text/javascript; charset=utf-8"


def test_a_browser_that_has_the_file_gets_304_and_no_body(entry) -> None:
    etag = get(entry, "/").headers["etag"]
    again = get(entry, "/", **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert get(entry, "/", **{"If-None-Match": '"something-else"'}).status_code == 200


def test_a_head_of_the_page_has_its_headers_and_no_body(entry) -> None:
    answer = requests.head(entry.url("/"), timeout=30)
    assert answer.status_code == 200 and answer.content == b""
    assert int(answer.headers["content-length"]) == len(get(entry, "/").content)


def test_without_a_key_nothing_but_the_pages_files_and_health_answers(entry) -> None:
    for path in ("/llm-entry/ui/", "/llm-entry/ui/other.js", "/llm-entry/ui/../key", OWN_KEY, "/index.html",
                 "/v1/models", "/metrics", "/public/litellm_model_cost_map", *LITELLM_PAGES):
        assert get(entry, path).status_code == 401, path
    assert requests.post(entry.url("/"), json={}, timeout=30).status_code == 401
    assert requests.put(entry.url("/llm-entry/ui/app.js"), data=b"x", timeout=30).status_code == 401


def test_a_get_of_the_page_with_a_body_is_refused_unread(entry) -> None:
    answer = requests.get(entry.url("/"), data=b"x" * 100, timeout=30)
    assert answer.status_code == 413 and answer.headers["connection"] == "close"


def test_litellm_pages_stay_for_the_master_key_alone(entry) -> None:
    for path in LITELLM_PAGES:
        assert get(entry, path, TEAM_KEY).status_code == 403, path
    assert get(entry, "/openapi.json", MASTER_KEY).status_code == 200


def test_without_the_ui_the_page_answers_404_and_the_api_still_works(without_ui) -> None:
    for path in PAGE_FILES:
        assert get(without_ui, path).status_code == 404, path
        assert get(without_ui, path, MASTER_KEY).status_code == 404, path
    assert "--no-ui" in get(without_ui, "/").json()["error"]["message"]
    assert get(without_ui, OWN_KEY).status_code == 401
    assert own_key(without_ui, MASTER_KEY)["name"] == "master"
    assert without_ui.chat().status_code == 200


# -- the own-key endpoint ---------------------------------------------------------------

def test_a_key_is_told_its_name_and_limits_and_nothing_of_another(entry) -> None:
    mine, theirs = own_key(entry, TEAM_KEY), own_key(entry, OTHER_KEY)
    assert (mine["name"], mine["source"]) == ("team", "keys file")
    assert mine["limits"] == {"rpm": 10, "tpm": 1000, "max_parallel": 2}
    assert [use["limit"] for use in mine["usage"]] == ["rpm", "tpm", "max_parallel"] and mine["quotas"] == []
    assert theirs["name"] == "other" and theirs["limits"] == {"rpm": 7, "tpm": None, "max_parallel": None}
    told = json.dumps(mine) + json.dumps(theirs)
    for secret in (TEAM_KEY, OTHER_KEY, MASTER_KEY):
        assert secret not in told
    assert "other" not in json.dumps(mine) and "team" not in json.dumps(theirs)


def test_no_question_about_another_key_is_answered(entry) -> None:
    """The answer is about the presented key: a query, a path or a body naming another changes nothing."""
    for path in (OWN_KEY + "?name=other", OWN_KEY + "?key=" + OTHER_KEY, OWN_KEY + "/other"):
        answer = get(entry, path, TEAM_KEY)
        assert answer.status_code in (200, 403, 404), path
        assert '"other"' not in answer.text and OTHER_KEY not in answer.text
        if answer.status_code == 200:
            assert answer.json()["name"] == "team"
    assert requests.post(entry.url(OWN_KEY), json={"name": "other"}, headers=entry.headers(TEAM_KEY),
                         timeout=30).status_code == 403


def test_a_wrong_or_missing_key_gets_401(entry) -> None:
    assert get(entry, OWN_KEY, WRONG_KEY).status_code == 401
    assert get(entry, OWN_KEY).status_code == 401


def test_the_master_key_is_told_it_has_no_limits(entry) -> None:
    assert own_key(entry, MASTER_KEY) == {"name": "master", "source": "master key", "quotas": [], "usage": [],
                                          "limits": {"rpm": None, "tpm": None, "max_parallel": None}}


def test_what_is_used_comes_from_the_limits_counters_and_asking_is_not_counted(entry) -> None:
    before = usage(entry, OTHER_KEY)["rpm"]
    for _ in range(3):
        assert entry.chat("one two three", key=OTHER_KEY).status_code == 200
    for _ in range(3):
        own_key(entry, OTHER_KEY)
    after = usage(entry, OTHER_KEY)["rpm"]
    assert after["used"] == before["used"] + 3 and after["left"] == 7 - after["used"]
    assert 1 <= after["resets_in"] <= 60


def test_tokens_and_requests_in_flight_are_shown_as_the_limits_count_them(entry) -> None:
    tokens_before = usage(entry, TEAM_KEY)["tpm"]["used"]
    assert entry.chat("one two three", key=TEAM_KEY).status_code == 200   # 3 prompt + 8 completion tokens
    assert usage(entry, TEAM_KEY)["tpm"]["used"] == tokens_before + 11
    entry.hold.touch()
    held = socket.create_connection(("127.0.0.1", entry.port))
    try:
        body = json.dumps({"model": entry.served_model_name, "messages": [{"role": "user", "content": "hold"}],
                           "stream": True}).encode()
        held.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {TEAM_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_for(lambda: usage(entry, TEAM_KEY)["max_parallel"]["used"] == 1, 30,
                 "the request in flight to show in the key's max_parallel")
        assert usage(entry, TEAM_KEY)["max_parallel"]["left"] == 1
    finally:
        entry.hold.unlink(missing_ok=True)
        held.close()
    wait_for(lambda: usage(entry, TEAM_KEY)["max_parallel"]["used"] == 0, 30, "the place to come back")
