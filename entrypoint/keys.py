"""Keys: where the master key comes from, which keys are too weak, how a keys
file is read (at start and on every change, by llm-entry and by the proxy
alike): its lines, each a key with an optional name and limits, and a wrapper
that keeps a key out of every repr, log line and traceback.

Standard library only: the proxy imports this module too.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets as _random  # the standard library module
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from .errors import EntryError

MIN_KEY_LENGTH = 16
MAKE_ONE = "openssl rand -hex 24"

# Keys copied from documentation and tutorials: anyone can guess them.
WELL_KNOWN_KEYS = frozenset({
    "sk-1234", "sk-12345", "sk-123456", "sk-1234567890", "sk-master", "sk-master-key",
    "sk-test", "sk-xxx", "sk-xxxx", "token-abc123", "changeme", "change-me", "password",
    "secret", "master-key", "masterkey", "test", "admin", "EMPTY", "sk-my-master-key",
    "sk-litellm-master-key", "sk-0000000000000000",
})


class Secret:
    """A key that only shows itself when asked to by name."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and _random.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)


def weakness(key: str) -> str | None:
    """Why a key is too weak to guard a model, or None when it is fine."""
    if not key.strip():
        return "is empty"
    if key != key.strip() or any(ch.isspace() for ch in key):
        return "contains white space (a stray newline from a secret file?)"
    if key in WELL_KNOWN_KEYS or key.lower() in WELL_KNOWN_KEYS:
        return "is a well-known example key"
    if len(key) < MIN_KEY_LENGTH:
        return f"is shorter than {MIN_KEY_LENGTH} characters"
    if len(set(key.removeprefix("sk-"))) < 4:
        return "repeats too few characters to be random"
    return None


def read_key_file(path: Path, what: str) -> str:
    try:
        text = path.read_text()
    except OSError as error:
        raise EntryError(f"cannot read {what} {path} ({error.strerror}): is the secret mounted there?") from error
    # Secret files usually end in a newline; nothing else is trimmed.
    return text.rstrip("\r\n")


# --- keys files ----------------------------------------------------------------
#
# One key a line, then its fields in any order, each at most once:
#   <key> [name=<name>] [rpm=<n>] [tpm=<n>] [max_parallel=<n>]
# A problem is told by line and by field, never by showing the key, a part
# of it, or a word that could be one (a key with a stray space in it).

MASTER_NAME = "master"    # the master key's name: no line may take it
LIMIT_FIELDS = ("rpm", "tpm", "max_parallel")
FIELDS = ("name", *LIMIT_FIELDS)
FIELDS_HELP = "name=<name>, rpm=<n>, tpm=<n> and max_parallel=<n>"
NAME_RULE = "1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
LIMIT_RULE = "a limit is a whole number of 1 or more"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_WHOLE_NUMBER = re.compile(r"[0-9]+")
_SHOWN_VALUE = re.compile(r"[-+]?[0-9.]{0,12}")   # a mistyped number: short, and never a key


@dataclass(frozen=True)
class KeyLimits:
    rpm: int | None = None            # requests per minute
    tpm: int | None = None            # tokens (prompt + completion) per minute
    max_parallel: int | None = None   # requests in flight at once

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_parallel is None

    def describe(self) -> str:
        """'rpm=5 tpm=1000', or 'no limits'."""
        said = [f"{name}={getattr(self, name)}" for name in LIMIT_FIELDS if getattr(self, name) is not None]
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


def _fields(words: list[str]) -> dict[str, str] | tuple[str, str]:
    """The fields after the key by name, or (why, fix) for the first bad one.
    A word that is no known field is told by its place: it may be a piece of
    a key with a space in it."""
    found: dict[str, str] = {}
    for position, word in enumerate(words, start=1):
        name, equals, value = word.partition("=")
        where = f"(the {_ordinal(position)} word after the key)"
        if not equals:
            return (f"has a word that is not a field {where}",
                    f"write fields as {FIELDS_HELP}, and the key in one piece")
        if name not in FIELDS:
            return f"has an unknown field {where}", f"the fields are {FIELDS_HELP}"
        if name in found:
            return f"has {name}= twice", "give each field once"
        found[name] = value
    return found


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
    limits = {}
    for field_name in LIMIT_FIELDS:
        if field_name in fields:
            limit = _limit(field_name, fields[field_name])
            if isinstance(limit, tuple):
                return limit
            limits[field_name] = limit
    name = fields.get("name")
    if name is not None and not _NAME.fullmatch(name):
        return "has a name= that is not a name", f"a name is {NAME_RULE}"
    if name == MASTER_NAME:
        return f"has name={MASTER_NAME}", f"choose another name, since {MASTER_NAME} is the master key's"
    return KeyEntry(key, name or default_key_name(key), KeyLimits(**limits), number)


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
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else type(error).__name__


def check_keys_file(path: Path) -> tuple[KeyEntry, ...]:
    """The entries of --api-keys-file at start, refusing the first line with a problem."""
    try:
        screened = read_keys_file(path)
    except (OSError, UnicodeDecodeError) as error:
        raise EntryError(f"cannot read --api-keys-file {path} ({failure_reason(error)}): "
                         "is the secret mounted there?") from error
    if screened.rejected:
        number, why, fix = screened.rejected[0]
        raise EntryError(f"the key on line {number} of --api-keys-file {path} {why}: {fix}.")
    return screened.entries


class FileStatus(Protocol):
    # Read-only, as os.stat_result's are.
    @property
    def st_dev(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...


@dataclass(frozen=True)
class KeysChange:
    """What one look at a keys file found new."""

    failure: str | None = None                 # why it cannot be read (it now gives no keys)
    recovered: bool = False                    # readable again after a failure
    rejected: tuple[LineProblem, ...] = ()     # lines set aside


class KeysFile:
    """A keys file as it is now, read again only when it changed.

    A change is a new (device, inode, size, modification time): an edit, or
    Kubernetes' swap of the `..data` symlink, which gives a new inode. A forced
    look reads the file whatever its status (SIGHUP). A file that cannot be
    read gives no keys until it can.
    """

    def __init__(self, path: Path, *, stat: Callable[[Path], FileStatus] = os.stat,
                 read: Callable[[Path], bytes] = Path.read_bytes):
        self.path = path
        self.entries: tuple[KeyEntry, ...] = ()
        self.withheld: tuple[str, ...] = ()    # keys of lines set aside that are not weak
        self.failure: str | None = None
        self._stat = stat
        self._read = read
        self._signature: tuple[int, ...] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(entry.key for entry in self.entries)

    def look(self, force: bool = False) -> KeysChange | None:
        """One stat, and a read when needed; what changed, or None."""
        try:
            status = self._stat(self.path)
            signature = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
            if signature == self._signature and not force:
                return None
            # Stat before reading: a write during the read leaves a newer
            # signature behind, so the next look reads the file again.
            screened = read_keys_file(self.path, self._read)
        except (OSError, UnicodeDecodeError) as error:
            already_failing = self.failure is not None
            self.entries, self._signature, self.failure = (), None, failure_reason(error)
            return None if already_failing else KeysChange(failure=self.failure)
        recovered = self.failure is not None
        self.entries, self.withheld = screened.entries, screened.withheld
        self._signature, self.failure = signature, None
        return KeysChange(recovered=recovered, rejected=screened.rejected)


def resolve_master_key(flag_value: str | None, key_file: Path | None,
                       flag_on_command_line: bool = False, flag_source: str = "--master-key") -> Secret:
    """The master key from --master-key (or its variables) or --master-key-file.

    flag_source names where flag_value came from (the flag, or the variable
    that set it), so that a message about the key points at the right place.
    A file named explicitly beats a key that only came from a variable (say a
    LITELLM_MASTER_KEY exported for other tools); two explicit keys are refused."""
    if flag_value and key_file is not None and flag_on_command_line:
        raise EntryError("both --master-key and --master-key-file are set: give the master key once.")
    if key_file is not None:
        value = read_key_file(key_file, "--master-key-file")
        source = f"--master-key-file {key_file}"
    elif flag_value is not None:
        value, source = flag_value, flag_source
    else:
        raise EntryError(
            "no master key: pass --master-key-file or --master-key, or set LLM_ENTRY_MASTER_KEY or "
            f"LITELLM_MASTER_KEY (generate one with: {MAKE_ONE})."
        )
    problem = weakness(value)
    if problem:
        raise EntryError(
            f"the master key from {source} {problem}: use a random key of at least "
            f"{MIN_KEY_LENGTH} characters ({MAKE_ONE})."
        )
    return Secret(value)


def new_internal_key() -> Secret:
    """The key between the proxy and the engine, new at every start."""
    return Secret("sk-internal-" + _random.token_urlsafe(32))
