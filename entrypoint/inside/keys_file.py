"""The keys file's grammar: one key a line, then its fields in any order,
each at most once:

    <key> [name=<name>] [rpm=<n>] [tpm=<n>] [max_parallel=<n>] [quota=<tokens>/<period> ...]

`quota` alone may come several times, once per period (hour, day, week, month).

Read the same way by llm-entry at start (entrypoint.keys.check_keys_file,
which refuses the first bad line) and by the proxy on every change
(entrypoint.inside.keys_file_changes, which sets a bad line aside). A
problem is told by line and by field, never by showing the key, a part of
it, or a word that could be one (a key with a stray space in it).

Standard library only: the proxy imports it too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from entrypoint.inside.quota_periods import PERIODS, PERIODS_HELP
from entrypoint.inside.weak_keys import MAKE_ONE, MIN_KEY_LENGTH, weakness

MASTER_NAME = "master"    # the master key's name: no line may take it
LIMIT_FIELDS = ("rpm", "tpm", "max_parallel")
QUOTA_FIELD = "quota"
FIELDS = ("name", *LIMIT_FIELDS, QUOTA_FIELD)
REPEATABLE = (QUOTA_FIELD,)
FIELDS_HELP = "name=<name>, rpm=<n>, tpm=<n>, max_parallel=<n> and quota=<tokens>/<period>"
QUOTA_RULE = (f"a quota is a whole number of tokens of 1 or more, a slash and a period ({PERIODS_HELP}), "
              "e.g. quota=2000000/month")
NAME_RULE = "1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
LIMIT_RULE = "a limit is a whole number of 1 or more"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_WHOLE_NUMBER = re.compile(r"[0-9]+")
_SHOWN_VALUE = re.compile(r"[-+]?[0-9.]{0,12}")   # a mistyped number: short, and never a key
_QUOTA = re.compile(r"([0-9]+)/([a-z]+)")
_SHOWN_QUOTA = re.compile(r"[-+]?[0-9.,_]{0,12}/?[a-z]{0,8}")   # a mistyped quota: short, and never a key


@dataclass(frozen=True)
class Quota:
    """A token quota: this many tokens (prompt + completion) per calendar period."""

    tokens: int
    period: str        # one of quota_periods.PERIODS

    def __str__(self) -> str:
        return f"{self.tokens}/{self.period}"


@dataclass(frozen=True)
class KeyLimits:
    rpm: int | None = None            # requests per minute
    tpm: int | None = None            # tokens (prompt + completion) per minute
    max_parallel: int | None = None   # requests in flight at once
    quotas: tuple[Quota, ...] = ()    # token quotas, at most one per period, in PERIODS' order

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_parallel is None and not self.quotas

    def describe(self) -> str:
        """'rpm=5 tpm=1000 quota=2000000/month', or 'no limits'."""
        said = [f"{name}={getattr(self, name)}" for name in LIMIT_FIELDS if getattr(self, name) is not None]
        said += [f"{QUOTA_FIELD}={quota}" for quota in self.quotas]
        return " ".join(said) or "no limits"


@dataclass(frozen=True)
class KeyEntry:
    """One line of a keys file."""

    key: str = field(repr=False)
    name: str
    limits: KeyLimits
    line: int


class LineProblem(NamedTuple):
    """Why a line of a keys file is set aside, said of "the key on line N"; never the key."""

    line: int
    why: str    # "has rpm=0"
    fix: str    # "a limit is a whole number of 1 or more"


def default_key_name(key: str) -> str:
    """The name of a key given without one: stable, and it tells nothing of the key."""
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _fields(words: list[str]) -> dict[str, list[str]] | tuple[str, str]:
    """The fields after the key by name (each value of a repeatable field),
    or (why, fix) for the first bad one. A word that is no known field is told
    by its place: it may be a piece of a key with a space in it."""
    found: dict[str, list[str]] = {}
    for position, word in enumerate(words, start=1):
        name, equals, value = word.partition("=")
        where = f"(the {_ordinal(position)} word after the key)"
        if not equals:
            return (f"has a word that is not a field {where}",
                    f"write fields as {FIELDS_HELP}, and the key in one piece")
        if name not in FIELDS:
            return f"has an unknown field {where}", f"the fields are {FIELDS_HELP}"
        if name in found and name not in REPEATABLE:
            return f"has {name}= twice", "give each field once"
        found.setdefault(name, []).append(value)
    return found


def _quotas(values: list[str]) -> list[Quota] | tuple[str, str]:
    """The quotas of a line in PERIODS' order, or (why, fix) for the first bad one."""
    quotas: dict[str, Quota] = {}
    for value in values:
        match = _QUOTA.fullmatch(value)
        if match is None or int(match.group(1)) < 1 or match.group(2) not in PERIODS:
            shown = f"quota={value}" if _SHOWN_QUOTA.fullmatch(value) else "a quota= that is not a quota"
            return f"has {shown}", QUOTA_RULE
        period = match.group(2)
        if period in quotas:
            return f"has two quotas per {period}", "give one quota per period"
        quotas[period] = Quota(int(match.group(1)), period)
    return [quotas[period] for period in PERIODS if period in quotas]


def _limit(field_name: str, value: str) -> int | tuple[str, str]:
    if _WHOLE_NUMBER.fullmatch(value) and int(value) >= 1:
        return int(value)
    shown = f"{field_name}={value}" if _SHOWN_VALUE.fullmatch(value) else f"{field_name}= that is not a number"
    return f"has {shown}", LIMIT_RULE


def _entry(number: int, key: str, words: list[str]) -> KeyEntry | tuple[str, str]:
    """The entry of one line, or (why, fix); duplicates are the caller's to find."""
    if "=" in key and key.partition("=")[0] in FIELDS:
        return "is a field, not a key", "put the key first on the line, then its fields"
    problem = weakness(key)
    if problem:
        return problem, f"replace it with a random key of at least {MIN_KEY_LENGTH} characters ({MAKE_ONE})"
    fields = _fields(words)
    if isinstance(fields, tuple):
        return fields
    limits: dict[str, int] = {}
    for field_name in LIMIT_FIELDS:
        if field_name in fields:
            limit = _limit(field_name, fields[field_name][0])
            if isinstance(limit, tuple):
                return limit
            limits[field_name] = limit
    quotas = _quotas(fields.get(QUOTA_FIELD, []))
    if isinstance(quotas, tuple):
        return quotas
    name = fields.get("name", [None])[0]
    if name is not None and not _NAME.fullmatch(name):
        return "has a name= that is not a name", f"a name is {NAME_RULE}"
    if name == MASTER_NAME:
        return f"has name={MASTER_NAME}", f"choose another name, since {MASTER_NAME} is the master key's"
    return KeyEntry(key, name or default_key_name(key), KeyLimits(**limits, quotas=tuple(quotas)), number)


@dataclass(frozen=True)
class ScreenedKeys:
    entries: tuple[KeyEntry, ...]            # the lines that open the proxy
    rejected: tuple[LineProblem, ...] = ()   # the lines set aside, and why
    # The keys of lines set aside that are not weak: still secrets, to hide in logs.
    withheld: tuple[str, ...] = field(default=(), repr=False)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(entry.key for entry in self.entries)


def _key_lines(text: str) -> list[tuple[int, list[str]]]:
    """(line number, words) of each line that is neither blank nor a comment,
    numbered as an editor shows them."""
    found = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        words = line.split()
        if words and not words[0].startswith("#"):
            found.append((number, words))
    return found


def _clash(entry: KeyEntry, key_line: int, name_lines: dict[str, int], keys: set[str],
           named: bool) -> KeyEntry | tuple[str, str]:
    """The entry, or (why, fix) when its key or name is another line's too."""
    name_line = name_lines.setdefault(entry.name, entry.line)
    if key_line != entry.line:
        return (f"is the same key as on line {key_line}",
                "remove one of the two lines, since a key belongs to one holder")
    if entry.name in keys:
        return "has a name that is a key of this file", "choose another name, since names show in logs and metrics"
    if name_line != entry.line:
        if named:
            return f"has the same name as the key on line {name_line}", "give each key its own name"
        return f"has no name= and its default name is taken by the key on line {name_line}", "give it a name="
    return entry


def screen_keys(text: str) -> ScreenedKeys:
    """The entries of a keys file, with the lines that have a problem set aside.

    A key said twice sets the later line aside, whatever else is wrong with
    the earlier one: a key belongs to one holder. A name belongs to the first
    line that is otherwise well formed."""
    lines = _key_lines(text)
    keys = {words[0] for _, words in lines}
    entries, rejected, withheld = [], [], []
    key_lines: dict[str, int] = {}
    name_lines: dict[str, int] = {}
    for number, (key, *fields) in lines:
        found = _entry(number, key, fields)
        key_line = key_lines.setdefault(key, number)
        if isinstance(found, KeyEntry):
            named = any(word.startswith("name=") for word in fields)
            found = _clash(found, key_line, name_lines, keys, named)
        if isinstance(found, KeyEntry):
            entries.append(found)
        else:
            rejected.append(LineProblem(number, *found))
            if weakness(key) is None:
                withheld.append(key)
    return ScreenedKeys(tuple(entries), tuple(rejected), tuple(withheld))


def read_keys_file(path: Path, read: Callable[[Path], bytes] = Path.read_bytes) -> ScreenedKeys:
    """Raises OSError or UnicodeDecodeError: callers decide what a failure means."""
    return screen_keys(read(path).decode("utf-8"))


def failure_reason(error: OSError | UnicodeDecodeError) -> str:
    """Why read_keys_file failed, in a few words that show nothing of the file."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else type(error).__name__

