"""Unit tests of the proxy's key ring: holders, reloads, lines set aside, the
SIGHUP marker, the key in a request's headers, and a refusal's answer.

The keys file's lines are tested in test_keys_file.py, what LiteLLM's custom
auth hands to LiteLLM in test_litellm_auth.py.
"""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from entrypoint.inside.key_ring import (
    KEYS_FILE_VARIABLE,
    MASTER_HOLDER,
    MASTER_KEY_VARIABLE,
    RELOAD_MARKER_VARIABLE,
    CredentialError,
    Holder,
    KeyRing,
    KeySource,
    holder_in,
    key_headers,
    presented_key,
)
from entrypoint.inside.keys_file import KeyLimits, default_key_name
from entrypoint.inside.refusals import WRONG_KEY, Refused

from fakes import FakeClock, FakeStatus

MASTER = "sk-master-0123456789"
KEY_A = "key-alpha-7f3c9e2a"
KEY_B = "sk-key-bravo-91d2"
KEY_C = "key-charlie-4b8e1d7f"
KEYS_FILE = Path("/run/secrets/api-keys")
MARKER = Path("/tmp/llm-entry-run/keys-reload")
START = 1000.0   # the fake clock's time when a test begins
AUTH_LOGGER = "entrypoint.inside.key_ring"


class FakeFiles:
    """A one-directory file system whose stat and read calls are counted."""

    def __init__(self) -> None:
        self.contents: dict[Path, bytes] = {}
        self.inodes: dict[Path, int] = {}
        self.mtimes: dict[Path, int] = {}
        self.unreadable: set[Path] = set()
        self.stats = 0
        self.reads = 0
        self._next_inode = 100
        self._next_mtime = 1

    def write(self, path: Path, text: str | bytes, *, new_inode: bool = False, keep_mtime: bool = False) -> None:
        self.contents[path] = text.encode() if isinstance(text, str) else text
        if new_inode or path not in self.inodes:
            self._next_inode += 1
            self.inodes[path] = self._next_inode
        if not keep_mtime or path not in self.mtimes:
            self._next_mtime += 1
            self.mtimes[path] = self._next_mtime

    def remove(self, path: Path) -> None:
        del self.contents[path], self.inodes[path], self.mtimes[path]

    def stat(self, path: Path) -> FakeStatus:
        self.stats += 1
        if path not in self.contents:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        return FakeStatus(1, self.inodes[path], len(self.contents[path]), self.mtimes[path])

    def read(self, path: Path) -> bytes:
        self.reads += 1
        if path in self.unreadable:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        if path not in self.contents:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        return self.contents[path]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def files() -> FakeFiles:
    fake = FakeFiles()
    fake.write(KEYS_FILE, f"{KEY_A}\n{KEY_B}\n")
    return fake


def opens(ring: KeyRing, key: str) -> bool:
    return ring.holder_of(key) is not None


def source_of(ring: KeyRing, key: str) -> KeySource | None:
    holder = ring.holder_of(key)
    return holder.source if holder is not None else None


def ring_with_file(clock: FakeClock, files: FakeFiles, recheck_interval: float = 1.0) -> KeyRing:
    return KeyRing(MASTER, KEYS_FILE, clock=clock, files=files, recheck_interval=recheck_interval)


def ask_once_a_second(ring: KeyRing, clock: FakeClock, times: int) -> None:
    """KEY_A presented `times` times, a recheck interval apart."""
    for _ in range(times):
        clock.advance(1.0)
        opens(ring, KEY_A)


def ring_with_edit(clock: FakeClock, files: FakeFiles, text: str | bytes, **how) -> KeyRing:
    """A ring that has read the keys file, which has just become `text` (FakeFiles.write's `how`)."""
    ring = ring_with_file(clock, files)
    files.write(KEYS_FILE, text, **how)
    return ring


def ring_after_edit(clock: FakeClock, files: FakeFiles, text: str | bytes, **how) -> KeyRing:
    """The same, once the recheck interval has passed."""
    ring = ring_with_edit(clock, files, text, **how)
    clock.advance(1.0)
    return ring


# KeyRing


def test_master_key_is_allowed_without_keys_file() -> None:
    ring = KeyRing(MASTER)
    assert opens(ring, MASTER)
    assert source_of(ring, MASTER) is KeySource.MASTER


def test_wrong_and_empty_keys_are_refused() -> None:
    ring = KeyRing(MASTER)
    assert not opens(ring, "sk-wrong")
    assert not opens(ring, "")
    assert not opens(ring, MASTER + "x")
    assert not opens(ring, MASTER[:-1])


def test_empty_master_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="master key is empty"):
        KeyRing("")


def test_keys_from_the_file_are_allowed(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_with_file(clock, files)
    assert source_of(ring, KEY_A) is KeySource.KEYS_FILE
    assert source_of(ring, KEY_B) is KeySource.KEYS_FILE
    assert source_of(ring, MASTER) is KeySource.MASTER
    assert not opens(ring, "sk-wrong")


def test_master_key_listed_in_the_file_counts_as_master(clock: FakeClock, files: FakeFiles) -> None:
    files.write(KEYS_FILE, f"{MASTER}\n")
    assert source_of(ring_with_file(clock, files), MASTER) is KeySource.MASTER


def test_key_removed_from_file_stops_working_after_the_recheck_interval(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_with_file(clock, files)
    assert opens(ring, KEY_A)
    files.write(KEYS_FILE, f"{KEY_B}\n")
    clock.advance(0.5)
    assert opens(ring, KEY_A), "the file is not looked at again within the interval"
    clock.advance(0.5)
    assert not opens(ring, KEY_A)
    assert opens(ring, KEY_B)


def test_key_added_to_file_starts_working_after_the_recheck_interval(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_after_edit(clock, files, f"{KEY_A}\n{KEY_B}\n{KEY_C}\n")
    assert opens(ring, KEY_C)


def test_file_is_stat_at_most_once_per_interval(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_with_file(clock, files)
    stats_after_start = files.stats
    for _ in range(100):
        opens(ring, KEY_A)
        clock.advance(0.001)
    assert files.stats == stats_after_start
    clock.advance(1.0)
    opens(ring, KEY_A)
    assert files.stats == stats_after_start + 1


def test_unchanged_file_is_not_read_again(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_with_file(clock, files)
    assert files.reads == 1
    ask_once_a_second(ring, clock, 5)
    assert files.reads == 1


def test_replaced_file_with_same_size_and_mtime_is_read_again(clock: FakeClock, files: FakeFiles) -> None:
    # An atomic rename (as a Kubernetes Secret update does) changes the inode.
    ring = ring_after_edit(clock, files, f"{KEY_A.upper()}\n{KEY_B}\n", new_inode=True, keep_mtime=True)
    assert not opens(ring, KEY_A)
    assert opens(ring, KEY_A.upper())


def test_every_request_checks_the_file_with_a_zero_interval(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_with_file(clock, files, recheck_interval=0.0)
    files.write(KEYS_FILE, f"{KEY_B}\n")
    assert not opens(ring, KEY_A)


def test_missing_file_keeps_the_master_key_and_refuses_file_keys(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_with_file(clock, files)
    files.remove(KEYS_FILE)
    clock.advance(1.0)
    assert not opens(ring, KEY_A)
    assert opens(ring, MASTER)


def test_missing_file_logs_one_warning_without_keys(
    clock: FakeClock, files: FakeFiles, caplog: pytest.LogCaptureFixture
) -> None:
    ring = ring_with_file(clock, files)
    files.remove(KEYS_FILE)
    with caplog.at_level(logging.WARNING, logger=AUTH_LOGGER):
        ask_once_a_second(ring, clock, 5)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert str(KEYS_FILE) in message and "No such file or directory" in message
    assert not any(key in caplog.text for key in (MASTER, KEY_A, KEY_B))


def test_file_keys_work_again_when_the_file_comes_back(
    clock: FakeClock, files: FakeFiles, caplog: pytest.LogCaptureFixture
) -> None:
    ring = ring_with_file(clock, files)
    files.remove(KEYS_FILE)
    clock.advance(1.0)
    assert not opens(ring, KEY_B)
    files.write(KEYS_FILE, f"{KEY_B}\n")
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger=AUTH_LOGGER):
        assert opens(ring, KEY_B)
    assert "readable again" in caplog.text


def test_unreadable_file_refuses_file_keys(
        clock: FakeClock, files: FakeFiles, caplog: pytest.LogCaptureFixture) -> None:
    ring = ring_with_edit(clock, files, f"{KEY_A}\n")
    files.unreadable.add(KEYS_FILE)
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger=AUTH_LOGGER):
        assert not opens(ring, KEY_A)
    assert opens(ring, MASTER)
    assert "Permission denied" in caplog.text
    assert KEY_A not in caplog.text


def test_keys_file_that_is_not_utf8_refuses_file_keys(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_after_edit(clock, files, KEY_A.encode() + b"\n\xff\xfe\n")
    assert not opens(ring, KEY_A)
    assert opens(ring, MASTER)


def test_keys_file_missing_at_start_refuses_file_keys(clock: FakeClock) -> None:
    empty = FakeFiles()
    ring = KeyRing(MASTER, KEYS_FILE, clock=clock, files=empty)
    assert not opens(ring, KEY_A)
    assert opens(ring, MASTER)


def test_key_ring_reads_a_real_keys_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"# keys\r\n{KEY_A}\r\n")
    ring = KeyRing(MASTER, keys_file, recheck_interval=0.0)
    assert opens(ring, KEY_A)
    keys_file.write_text(f"{KEY_B}\n")
    assert not opens(ring, KEY_A)
    assert opens(ring, KEY_B)


# weak keys on reload


def test_a_weak_key_added_later_is_refused_and_the_good_ones_kept(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_after_edit(clock, files, f"{KEY_A}\n# new\nsk-1234\nshort-key\n{KEY_C}\n")
    assert not opens(ring, "sk-1234")
    assert not opens(ring, "short-key")
    assert opens(ring, KEY_A) and opens(ring, KEY_C)
    assert not opens(ring, KEY_B), "a key removed in the same edit stops working"


def test_a_weak_key_is_named_by_its_line_never_shown(
    clock: FakeClock, files: FakeFiles, caplog: pytest.LogCaptureFixture
) -> None:
    ring = ring_with_edit(clock, files, f"{KEY_A}\n# new\nsk-1234\n")
    with caplog.at_level(logging.WARNING, logger=AUTH_LOGGER):
        ask_once_a_second(ring, clock, 3)
    assert [record.getMessage() for record in caplog.records] == [
        f"llm-entry: the key on line 3 of the API keys file {KEYS_FILE} is a well-known example key: "
        "it is not accepted; replace it with a random key of at least 16 characters (openssl rand -hex 24)"
    ]
    assert "sk-1234" not in caplog.text and KEY_A not in caplog.text


def test_a_file_of_only_weak_keys_leaves_the_master_key(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_after_edit(clock, files, "changeme\n")
    assert not opens(ring, "changeme") and not opens(ring, KEY_A)
    assert opens(ring, MASTER)


# holders: names and limits


def test_the_master_key_is_held_by_master_without_limits(clock: FakeClock, files: FakeFiles) -> None:
    assert ring_with_file(clock, files).holder_of(MASTER) is MASTER_HOLDER
    assert MASTER_HOLDER == Holder(KeySource.MASTER, "master", KeyLimits())
    assert MASTER_HOLDER.limits.unlimited


def test_a_file_key_is_held_under_its_lines_name_and_limits(clock: FakeClock, files: FakeFiles) -> None:
    files.write(KEYS_FILE, f"{KEY_A} name=team-a rpm=5 max_parallel=2\n{KEY_B}\n")
    ring = ring_with_file(clock, files)
    assert ring.holder_of(KEY_A) == Holder(KeySource.KEYS_FILE, "team-a", KeyLimits(rpm=5, max_parallel=2))
    assert ring.holder_of(KEY_B) == Holder(KeySource.KEYS_FILE, default_key_name(KEY_B), KeyLimits())
    assert source_of(ring, KEY_A) is KeySource.KEYS_FILE


@pytest.mark.parametrize("key", ["", "sk-wrong-0123456789", MASTER + "x", KEY_A[:-1]])
def test_a_key_that_opens_nothing_has_no_holder(clock: FakeClock, files: FakeFiles, key: str) -> None:
    ring = ring_with_file(clock, files)
    assert ring.holder_of(key) is None
    assert source_of(ring, key) is None


def test_the_master_key_listed_in_the_file_is_still_held_by_master(clock: FakeClock, files: FakeFiles) -> None:
    files.write(KEYS_FILE, f"{MASTER} name=sneaky rpm=1\n")
    assert ring_with_file(clock, files).holder_of(MASTER) is MASTER_HOLDER


def test_holders_are_made_at_the_reload_not_per_request(clock: FakeClock, files: FakeFiles) -> None:
    files.write(KEYS_FILE, f"{KEY_A} name=team-a rpm=5\n")
    ring = ring_with_file(clock, files)
    first = ring.holder_of(KEY_A)
    clock.advance(1.0)
    assert ring.holder_of(KEY_A) is first, "an unchanged file keeps its holders"


def test_a_changed_limit_or_name_applies_from_the_next_request(clock: FakeClock, files: FakeFiles) -> None:
    files.write(KEYS_FILE, f"{KEY_A} name=team-a rpm=5\n")
    ring = ring_after_edit(clock, files, f"{KEY_A} name=team-a rpm=9\n")
    assert ring.holder_of(KEY_A) == Holder(KeySource.KEYS_FILE, "team-a", KeyLimits(rpm=9))
    files.write(KEYS_FILE, f"{KEY_A} name=team-x tpm=100\n")
    clock.advance(1.0)
    assert ring.holder_of(KEY_A) == Holder(KeySource.KEYS_FILE, "team-x", KeyLimits(tpm=100))


def test_a_bad_line_on_reload_is_set_aside_by_line_and_problem_and_the_others_apply(
    clock: FakeClock, files: FakeFiles, caplog: pytest.LogCaptureFixture
) -> None:
    ring = ring_with_edit(clock, files, f"{KEY_A} name=team-a\n{KEY_B} name=team-b rpm=0\n{KEY_C} name=team-a\n")
    with caplog.at_level(logging.WARNING, logger=AUTH_LOGGER):
        clock.advance(1.0)
        assert ring.holder_of(KEY_A) == Holder(KeySource.KEYS_FILE, "team-a", KeyLimits())
        assert ring.holder_of(KEY_B) is None and ring.holder_of(KEY_C) is None
    assert [record.getMessage() for record in caplog.records] == [
        f"llm-entry: the key on line 2 of the API keys file {KEYS_FILE} has rpm=0: it is not accepted; "
        "a limit is a whole number of 1 or more",
        f"llm-entry: the key on line 3 of the API keys file {KEYS_FILE} has the same name as the key on line 1: "
        "it is not accepted; give each key its own name",
    ]
    assert not any(key in caplog.text for key in (MASTER, KEY_A, KEY_B, KEY_C))


# the reload marker (SIGHUP)


def ring_with_marker(clock: FakeClock, files: FakeFiles) -> KeyRing:
    files.write(MARKER, "1\n")
    return KeyRing(MASTER, KEYS_FILE, reload_marker=MARKER, clock=clock, files=files)


def test_a_new_marker_makes_the_next_request_read_the_file_at_once(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_with_marker(clock, files)
    # An edit that keeps inode, size and modification time (cp -p of a key of
    # the same length): the status alone cannot see it.
    files.write(KEYS_FILE, f"{KEY_A.upper()}\n{KEY_B}\n", keep_mtime=True)
    clock.advance(5.0)
    assert opens(ring, KEY_A), "the status did not change: the file is not read"
    files.write(MARKER, "2\n", new_inode=True)
    assert not opens(ring, KEY_A)
    assert opens(ring, KEY_A.upper())


def test_an_unchanged_marker_costs_one_stat_and_no_read(clock: FakeClock, files: FakeFiles) -> None:
    ring = ring_with_marker(clock, files)
    stats, reads = files.stats, files.reads
    opens(ring, KEY_A)
    assert (files.stats, files.reads) == (stats + 1, reads)


def test_a_missing_marker_changes_nothing(clock: FakeClock, files: FakeFiles) -> None:
    ring = KeyRing(MASTER, KEYS_FILE, reload_marker=MARKER, clock=clock, files=files)
    reads = files.reads
    assert opens(ring, KEY_A)
    assert files.reads == reads


def test_environment_names_the_reload_marker(tmp_path: Path) -> None:
    keys_file, marker = tmp_path / "api-keys", tmp_path / "keys-reload"
    keys_file.write_text(f"{KEY_A}\n")
    marker.write_text("1\n")
    ring = KeyRing.from_environment({MASTER_KEY_VARIABLE: MASTER, KEYS_FILE_VARIABLE: str(keys_file),
                                     RELOAD_MARKER_VARIABLE: str(marker)})
    keys_file.write_text(f"{KEY_B}\n")
    (tmp_path / "new-marker").write_text("2\n")
    (tmp_path / "new-marker").replace(marker)
    assert opens(ring, KEY_B) and not opens(ring, KEY_A)


def test_environment_with_empty_keys_file_variable_gives_master_key_only() -> None:
    ring = KeyRing.from_environment({MASTER_KEY_VARIABLE: MASTER, KEYS_FILE_VARIABLE: ""})
    assert opens(ring, MASTER)
    assert not opens(ring, KEY_A)


def test_environment_without_master_key_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=MASTER_KEY_VARIABLE):
        KeyRing.from_environment({KEYS_FILE_VARIABLE: "/run/secrets/api-keys"})


def test_environment_keys_file_is_read(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"{KEY_A}\n")
    ring = KeyRing.from_environment({MASTER_KEY_VARIABLE: MASTER, KEYS_FILE_VARIABLE: str(keys_file)})
    assert source_of(ring, KEY_A) is KeySource.KEYS_FILE


# presented_key


@pytest.mark.parametrize(
    "headers",
    [
        [("authorization", f"Bearer {KEY_A}")],
        [("Authorization", f"bearer {KEY_A}")],
        [("authorization", f"BEARER   {KEY_A}  ")],
        [("x-api-key", KEY_A)],
        [("X-Api-Key", KEY_A)],
        [("api-key", KEY_A)],
        [("authorization", f"Bearer {KEY_A}"), ("x-api-key", KEY_A)],
        [("host", "proxy"), ("content-type", "application/json"), ("api-key", KEY_A)],
    ],
)
def test_key_is_taken_from_accepted_headers(headers: list[tuple[str, str]]) -> None:
    assert presented_key(headers) == KEY_A


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("host", "proxy")],
        [("x-goog-api-key", KEY_A)],
        [("x-litellm-api-key", f"Bearer {KEY_A}")],
        [("ocp-apim-subscription-key", KEY_A)],
    ],
)
def test_request_without_accepted_header_has_no_key(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(CredentialError, match="No API key"):
        presented_key(headers)


@pytest.mark.parametrize(
    "value",
    [
        f"Basic {KEY_A}",
        "Basic xyz",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        KEY_A,
        "sk-nobearer",
        f"Bearer {KEY_A} extra",
        f"Token {KEY_A}",
        "",
    ],
)
def test_malformed_authorization_header_is_refused(value: str) -> None:
    with pytest.raises(CredentialError, match="Malformed Authorization header") as caught:
        presented_key([("authorization", value)])
    assert KEY_A not in str(caught.value)


@pytest.mark.parametrize("name", ["x-api-key", "api-key"])
@pytest.mark.parametrize("value", ["", "   ", f"Bearer {KEY_A}", f"{KEY_A} {KEY_B}"])
def test_malformed_key_header_is_refused(name: str, value: str) -> None:
    with pytest.raises(CredentialError, match=f"Malformed {name} header") as caught:
        presented_key([(name, value)])
    assert KEY_A not in str(caught.value)


def test_malformed_authorization_wins_over_a_good_key_header() -> None:
    with pytest.raises(CredentialError, match="Malformed Authorization header"):
        presented_key([("authorization", "Basic xyz"), ("x-api-key", KEY_A)])


def test_different_keys_in_two_headers_are_refused() -> None:
    with pytest.raises(CredentialError, match="different keys") as caught:
        presented_key([("authorization", f"Bearer {MASTER}"), ("x-api-key", KEY_A)])
    assert MASTER not in str(caught.value) and KEY_A not in str(caught.value)


def test_repeated_authorization_headers_must_agree() -> None:
    with pytest.raises(CredentialError, match="different keys"):
        presented_key([("authorization", f"Bearer {KEY_A}"), ("authorization", f"Bearer {KEY_B}")])


def test_only_the_headers_that_may_carry_a_key_are_read() -> None:
    headers = [(b"host", b"x"), (b"Authorization", b"Bearer k"), (b"user-agent", b"\xff"), (b"x-api-key", b"k"),
               (b"api-key", b"k"), (b"x-api-key-2", b"other")]
    assert key_headers(headers) == [("Authorization", "Bearer k"), ("x-api-key", "k"), ("api-key", "k")]


# holder_in: who holds the key a request presents, or its refusal


def test_a_request_with_the_master_key_is_held_by_master() -> None:
    assert holder_in(KeyRing(MASTER), [("authorization", f"Bearer {MASTER}")]) is MASTER_HOLDER


def test_a_request_with_a_key_that_opens_nothing_is_refused_with_401() -> None:
    assert holder_in(KeyRing(MASTER), [("x-api-key", KEY_A)]) == Refused(401, WRONG_KEY, "wrong key")


def test_a_request_without_a_key_is_refused_with_401_and_the_reason_for_the_log() -> None:
    refused = holder_in(KeyRing(MASTER), [("host", "proxy")])
    assert isinstance(refused, Refused) and (refused.status, refused.reason) == (401, "no key")
    assert refused.message.startswith("No API key")


def test_a_refusal_for_a_key_is_an_auth_error_and_only_a_401_asks_for_a_bearer_key() -> None:
    status, headers, body = Refused(401, WRONG_KEY, "wrong key").answer().response()
    assert status == 401 and (b"www-authenticate", b"Bearer") in headers
    assert json.loads(body) == {"error": {"message": WRONG_KEY, "type": "auth_error", "param": None, "code": "401"}}
    status, headers, body = Refused(403, "Not this route.", "why").answer().response()
    assert status == 403 and not any(name == b"www-authenticate" for name, _ in headers)
    assert json.loads(body)["error"]["type"] == "auth_error"
