"""Unit tests of the keys file's lines: a key, then its name and limits in any
order; every problem is told by line, never by showing a key; at start the
first problem refuses the start, on a reload the line is set aside and the
others apply."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from entrypoint.errors import EntryError
from entrypoint.inside.keys_file import KeyEntry, KeyLimits, LineProblem, Quota, default_key_name, screen_keys
from entrypoint.inside.keys_file_changes import KeysFile
from entrypoint.keys import check_keys_file

from fakes import FakeStatus

KEY_A = "team-a-5d1c9e7b3a8f2c6e4b0d"
KEY_B = "team-b-8e2f6a0c4d9b1e7a3c5f"
KEY_C = "team-c-1a7e4c9b2d6f0a3e8c5b"
# Keys that read like a name or a field: a message that echoed a word of
# the line would show them.
NAME_LIKE_KEY = "analytics-batch-jobs"
FIELD_LIKE_KEY = "rpmx=7f3c9e2a1b4d8e6f"
KEYS = (KEY_A, KEY_B, KEY_C, NAME_LIKE_KEY, FIELD_LIKE_KEY)
KEYS_FILE = Path("/run/secrets/api-keys")
RANDOM_KEY_FIX = "replace it with a random key of at least 16 characters (openssl rand -hex 24)"
LIMIT_FIX = "a limit is a whole number of 1 or more"
FIELDS = "name=<name>, rpm=<n>, tpm=<n>, max_parallel=<n> and quota=<tokens>/<period>"
QUOTA_FIX = ("a quota is a whole number of tokens of 1 or more, a slash and a period (hour, day, week or month), "
             "e.g. quota=2000000/month")


def entries(text: str) -> tuple[KeyEntry, ...]:
    screened = screen_keys(text)
    assert screened.rejected == ()
    return screened.entries


def problem(line: str) -> LineProblem:
    """The one problem of a file whose second line is `line`."""
    screened = screen_keys(f"{KEY_C} name=first\n{line}\n")
    assert [entry.line for entry in screened.entries] == [1]
    (found,) = screened.rejected
    assert found.line == 2
    return found


def shows_no_key(*texts: str) -> bool:
    return not any(key in text for key in KEYS for text in texts)


# --- lines -----------------------------------------------------------------------

def test_a_bare_key_gets_its_default_name_and_no_limits() -> None:
    assert entries(f"{KEY_A}\n") == (KeyEntry(KEY_A, default_key_name(KEY_A), KeyLimits(), 1),)


def test_the_default_name_is_key_and_the_first_8_hex_digits_of_the_sha256_of_the_key() -> None:
    assert default_key_name(KEY_A) == "key-" + hashlib.sha256(KEY_A.encode()).hexdigest()[:8]
    assert default_key_name(KEY_A) == default_key_name(KEY_A)
    assert default_key_name(KEY_A) != default_key_name(KEY_B)
    assert shows_no_key(default_key_name(KEY_A), default_key_name(NAME_LIKE_KEY))


def test_a_line_gives_its_name_and_every_limit() -> None:
    (entry,) = entries(f"{KEY_A} name=team-a rpm=5 tpm=1000 max_parallel=2\n")
    assert (entry.key, entry.name, entry.line) == (KEY_A, "team-a", 1)
    assert entry.limits == KeyLimits(rpm=5, tpm=1000, max_parallel=2)


def test_a_line_may_carry_one_quota_per_period_in_any_order() -> None:
    (entry,) = entries(f"{KEY_A} quota=2000000/month name=team-a quota=100000/day quota=5000/hour\n")
    assert entry.limits.quotas == (Quota(5000, "hour"), Quota(100000, "day"), Quota(2000000, "month"))
    assert entry.limits.describe() == "quota=5000/hour quota=100000/day quota=2000000/month"
    assert not entry.limits.unlimited


def test_fields_come_in_any_order_and_each_may_be_left_out() -> None:
    assert entries(f"{KEY_A} max_parallel=2 name=team-a tpm=1000\n{KEY_B} rpm=7\n") == (
        KeyEntry(KEY_A, "team-a", KeyLimits(tpm=1000, max_parallel=2), 1),
        KeyEntry(KEY_B, default_key_name(KEY_B), KeyLimits(rpm=7), 2),
    )


def test_fields_are_separated_by_any_white_space() -> None:
    (entry,) = entries(f"  {KEY_A}\t name=team-a    rpm=5\t\n")
    assert (entry.key, entry.name, entry.limits) == (KEY_A, "team-a", KeyLimits(rpm=5))


def test_comment_and_blank_lines_are_skipped_and_lines_numbered_as_an_editor_shows_them() -> None:
    text = f"# team keys\r\n\r\n{KEY_A} name=a\r\n   \r\n  # indented comment\r\n{KEY_B} name=b\r\n# end"
    assert [(entry.name, entry.line) for entry in entries(text)] == [("a", 3), ("b", 6)]


def test_a_hash_inside_a_key_is_part_of_the_key() -> None:
    assert [entry.key for entry in entries("abc#def-5d1c9e7b3a8f\n")] == ["abc#def-5d1c9e7b3a8f"]


def test_a_byte_order_mark_at_the_start_is_tolerated() -> None:
    assert [(entry.key, entry.name) for entry in entries(f"\ufeff{KEY_A} name=a\n")] == [(KEY_A, "a")]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  # and another\n"])
def test_a_file_without_a_key_line_has_no_entries(text: str) -> None:
    assert entries(text) == ()


@pytest.mark.parametrize("name", ["a", "A.b_c-9", "x" * 64, "Master", "key-0123abcd"])
def test_a_name_is_1_to_64_letters_digits_dots_underscores_or_dashes(name: str) -> None:
    assert [entry.name for entry in entries(f"{KEY_A} name={name}\n")] == [name]


def test_a_large_limit_and_leading_zeros_are_whole_numbers() -> None:
    (entry,) = entries(f"{KEY_A} rpm=007 tpm=100000000000\n")
    assert entry.limits == KeyLimits(rpm=7, tpm=100000000000)


# --- problems of a line ------------------------------------------------------------

@pytest.mark.parametrize("line,why,fix", [
    (f"{KEY_A} rpm=", "has rpm=", LIMIT_FIX),
    (f"{KEY_A} rpm=0", "has rpm=0", LIMIT_FIX),
    (f"{KEY_A} tpm=-5", "has tpm=-5", LIMIT_FIX),
    (f"{KEY_A} max_parallel=+2", "has max_parallel=+2", LIMIT_FIX),
    (f"{KEY_A} rpm=1.5", "has rpm=1.5", LIMIT_FIX),
    (f"{KEY_A} rpm=five", "has rpm= that is not a number", LIMIT_FIX),
    (f"{KEY_A} rpm=\u0663", "has rpm= that is not a number", LIMIT_FIX),
    (f"{KEY_A} rpm=5 tpm=0", "has tpm=0", LIMIT_FIX),
    (f"{KEY_A} foo", "has a word that is not a field (the 1st word after the key)",
     f"write fields as {FIELDS}, and the key in one piece"),
    (f"{KEY_A} name=a # a comment", "has a word that is not a field (the 2nd word after the key)",
     f"write fields as {FIELDS}, and the key in one piece"),
    (f"{KEY_A} name=a rpm=1 foo=1", "has an unknown field (the 3rd word after the key)",
     f"the fields are {FIELDS}"),
    (f"{KEY_A} rpm_limit=5", "has an unknown field (the 1st word after the key)",
     f"the fields are {FIELDS}"),
    (f"{KEY_A} rpm=1 rpm=2", "has rpm= twice", "give each field once"),
    (f"{KEY_A} quota=100/days", "has quota=100/days", QUOTA_FIX),
    (f"{KEY_A} quota=0/day", "has quota=0/day", QUOTA_FIX),
    (f"{KEY_A} quota=100", "has quota=100", QUOTA_FIX),
    (f"{KEY_A} quota=2M/month", "has a quota= that is not a quota", QUOTA_FIX),
    (f"{KEY_A} quota=1,000/day", "has quota=1,000/day", QUOTA_FIX),
    (f"{KEY_A} quota=/month", "has quota=/month", QUOTA_FIX),
    (f"{KEY_A} quota={KEY_B}", "has a quota= that is not a quota", QUOTA_FIX),
    (f"{KEY_A} quota=5/day rpm=1 quota=6/day", "has two quotas per day", "give one quota per period"),
    (f"{KEY_A} name=a tpm=1 name=b", "has name= twice", "give each field once"),
    (f"{KEY_A} name=", "has a name= that is not a name",
     "a name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"),
    (f"{KEY_A} name={'x' * 65}", "has a name= that is not a name",
     "a name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"),
    (f"{KEY_A} name=team/a", "has a name= that is not a name",
     "a name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"),
    (f"{KEY_A} name=\u00e9quipe", "has a name= that is not a name",
     "a name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"),
    (f"{KEY_A} name=master", "has name=master", "choose another name, since master is the master key's"),
    ("sk-1234 name=a", "is a well-known example key", RANDOM_KEY_FIX),
    ("short-key-42", "is shorter than 16 characters", RANDOM_KEY_FIX),
    ("name=team-alpha-squad-one", "is a field, not a key", "put the key first on the line, then its fields"),
    ("rpm=5 " + KEY_A, "is a field, not a key", "put the key first on the line, then its fields"),
])
def test_each_problem_sets_its_line_aside_with_why_and_what_to_do(line: str, why: str, fix: str) -> None:
    assert problem(line) == LineProblem(2, why, fix)


def test_the_same_key_twice_sets_the_later_line_aside() -> None:
    screened = screen_keys(f"{KEY_A} name=a\n{KEY_B} name=b\n{KEY_A} name=c rpm=9\n")
    assert [entry.name for entry in screened.entries] == ["a", "b"]
    assert screened.rejected == (LineProblem(
        3, "is the same key as on line 1", "remove one of the two lines, since a key belongs to one holder"),)


def test_a_key_said_twice_is_refused_even_when_its_first_line_has_a_problem_too() -> None:
    # Which line's limits would the key get? Neither, until the file says it once.
    screened = screen_keys(f"{KEY_A} rpm=0\n{KEY_A} rpm=5\n")
    assert screened.entries == ()
    assert [(found.line, found.why) for found in screened.rejected] == [
        (1, "has rpm=0"), (2, "is the same key as on line 1")]


def test_the_same_name_twice_sets_the_later_line_aside() -> None:
    screened = screen_keys(f"{KEY_A} name=team\n{KEY_B} name=team\n")
    assert [entry.key for entry in screened.entries] == [KEY_A]
    assert screened.rejected == (LineProblem(2, "has the same name as the key on line 1",
                                             "give each key its own name"),)


def test_a_bare_key_whose_default_name_is_taken_is_told_to_take_a_name() -> None:
    screened = screen_keys(f"{KEY_A} name={default_key_name(KEY_B)}\n{KEY_B}\n")
    assert screened.rejected == (LineProblem(
        2, "has no name= and its default name is taken by the key on line 1", "give it a name="),)


def test_a_name_that_is_a_key_of_the_file_is_refused() -> None:
    screened = screen_keys(f"{KEY_A} name={NAME_LIKE_KEY}\n{NAME_LIKE_KEY} name=batch\n")
    assert [entry.name for entry in screened.entries] == ["batch"]
    assert screened.rejected == (LineProblem(
        1, "has a name that is a key of this file", "choose another name, since names show in logs and metrics"),)


def test_a_line_with_several_problems_is_told_by_its_first() -> None:
    assert problem(f"{KEY_A} rpm=0 name=master").why == "has rpm=0"


# --- keys never show ---------------------------------------------------------------

BAD_LINES = "\n".join([
    f"{NAME_LIKE_KEY} rpm=0",
    f"{FIELD_LIKE_KEY} name=x name=y",
    f"{KEY_A} {KEY_B}",                      # two keys on one line: the second is told by its place
    "5d1c9e7b3a8f 2c6e4b0d9a7c=",            # a key with a stray space in it
    f"{KEY_B} name={KEY_C}",
    f"{KEY_C} foo={NAME_LIKE_KEY}",
    f"{KEY_C} name=z",
    "sk-1234",
])


def test_no_problem_shows_a_key_or_a_piece_of_one() -> None:
    screened = screen_keys(BAD_LINES)
    assert len(screened.rejected) == 8
    said = [f"{found.why}: {found.fix}" for found in screened.rejected]
    assert shows_no_key(*said)
    assert not any("5d1c9e7b3a8f" in text or "2c6e4b0d9a7c" in text for text in said)
    assert not any("sk-1234" in text for text in said)


def test_no_repr_shows_a_key() -> None:
    screened = screen_keys(f"{KEY_A} name=a rpm=5\n{NAME_LIKE_KEY}\n{KEY_B} rpm=0\n")
    assert screened.keys == (KEY_A, NAME_LIKE_KEY)
    assert screened.withheld == (KEY_B,)
    assert shows_no_key(repr(screened), repr(screened.entries[0]), str(screened.entries[1]))
    assert "name='a'" in repr(screened.entries[0]) and "rpm=5" in repr(screened.entries[0])


def test_the_keys_of_lines_set_aside_are_withheld_unless_they_are_weak() -> None:
    screened = screen_keys(f"{KEY_A} rpm=0\nchangeme rpm=5\n{KEY_A}\n{KEY_B} name=master\n")
    assert screened.entries == ()
    assert screened.withheld == (KEY_A, KEY_A, KEY_B)


# --- limits --------------------------------------------------------------------------

def test_limits_say_whether_there_are_any_and_describe_themselves() -> None:
    assert KeyLimits().unlimited and KeyLimits().describe() == "no limits"
    assert not KeyLimits(max_parallel=1).unlimited
    assert KeyLimits(rpm=5, tpm=1000).describe() == "rpm=5 tpm=1000"
    assert KeyLimits(rpm=5, tpm=1000, max_parallel=2).describe() == "rpm=5 tpm=1000 max_parallel=2"


# --- at start ------------------------------------------------------------------------

def test_the_start_gives_the_entries_of_the_file(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(f"# teams\n{KEY_A} name=team-a rpm=5\n{KEY_B}\n")
    assert check_keys_file(keys) == (KeyEntry(KEY_A, "team-a", KeyLimits(rpm=5), 2),
                                     KeyEntry(KEY_B, default_key_name(KEY_B), KeyLimits(), 3))


def test_the_start_is_refused_on_the_first_bad_line_in_one_sentence(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(f"{KEY_A} name=team-a\n# more\n{NAME_LIKE_KEY} rpm=0\n{KEY_B} name=master\n")
    with pytest.raises(EntryError) as caught:
        check_keys_file(keys)
    assert caught.value.message == (
        f"the key on line 3 of --api-keys-file {keys} has rpm=0: a limit is a whole number of 1 or more.")


def test_a_duplicate_name_refuses_the_start_naming_both_lines(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(f"{KEY_A} name=team\n{KEY_B} name=team\n")
    with pytest.raises(EntryError) as caught:
        check_keys_file(keys)
    assert caught.value.message == (f"the key on line 2 of --api-keys-file {keys} has the same name as the key "
                                    "on line 1: give each key its own name.")


# --- on a reload ---------------------------------------------------------------------

class FakeFile:
    """One keys file whose every write is a new modification time."""

    def __init__(self, text: str) -> None:
        self.text, self.mtime = text, 1

    def write(self, text: str) -> None:
        self.text, self.mtime = text, self.mtime + 1

    def stat(self, path: Path) -> FakeStatus:
        if path != KEYS_FILE:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        return FakeStatus(1, 7, len(self.text.encode()), self.mtime)

    def read(self, path: Path) -> bytes:
        return self.text.encode()


def watched(text: str) -> tuple[FakeFile, KeysFile]:
    fake = FakeFile(text)
    keys_file = KeysFile(KEYS_FILE, stat=fake.stat, read=fake.read)
    keys_file.look()
    return fake, keys_file


def test_a_reload_sets_a_bad_line_aside_and_applies_the_others() -> None:
    fake, keys_file = watched(f"{KEY_A} name=a\n")
    fake.write(f"{KEY_A} name=a rpm=5\n{KEY_B} name=b rpm=0\n{KEY_C} name=c\n")
    change = keys_file.look()
    assert change is not None and change.rejected == (LineProblem(2, "has rpm=0", LIMIT_FIX),)
    assert [(entry.name, entry.limits) for entry in keys_file.entries] == [("a", KeyLimits(rpm=5)),
                                                                            ("c", KeyLimits())]
    assert keys_file.keys == (KEY_A, KEY_C)
    assert keys_file.withheld == (KEY_B,)


def test_a_changed_limit_or_name_is_seen_on_the_next_look() -> None:
    fake, keys_file = watched(f"{KEY_A} name=a rpm=5\n")
    fake.write(f"{KEY_A} name=a rpm=6\n")     # same size: the modification time tells
    keys_file.look()
    assert keys_file.entries == (KeyEntry(KEY_A, "a", KeyLimits(rpm=6), 1),)
    fake.write(f"{KEY_A} name=renamed tpm=10\n")
    keys_file.look()
    assert keys_file.entries == (KeyEntry(KEY_A, "renamed", KeyLimits(tpm=10), 1),)


def test_an_unchanged_file_gives_no_change() -> None:
    _, keys_file = watched(f"{KEY_A} name=a\n")
    assert keys_file.look() is None
