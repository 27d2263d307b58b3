"""Keys: where the master key comes from, which keys are too weak, how a keys
file is read (at start and on every change, by llm-entry and by the proxy
alike), and a wrapper that keeps a key out of every repr, log line and
traceback."""

from __future__ import annotations

import os
import secrets as _random  # the standard library module
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

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
        raise EntryError(f"cannot read {what} {path} ({error.strerror}): is the secret mounted there?")
    # Secret files usually end in a newline; nothing else is trimmed.
    return text.rstrip("\r\n")


# --- keys files ----------------------------------------------------------------

def numbered_keys(text: str) -> tuple[tuple[int, str], ...]:
    """(line number, key) for each key of a keys file: one per line, trimmed;
    blank lines and lines starting with '#' are skipped."""
    found = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        key = line.strip()
        if key and not key.startswith("#"):
            found.append((number, key))
    return tuple(found)


def parse_keys_file(text: str) -> tuple[str, ...]:
    return tuple(key for _, key in numbered_keys(text))


@dataclass(frozen=True)
class ScreenedKeys:
    keys: tuple[str, ...]                 # strong enough to open the proxy
    weak: tuple[tuple[int, str], ...]     # (line number, why) of the others: never the key


def screen_keys(text: str) -> ScreenedKeys:
    """The keys of a keys file, weak ones set aside by line number."""
    keys, weak = [], []
    for number, key in numbered_keys(text):
        problem = weakness(key)
        if problem:
            weak.append((number, problem))
        else:
            keys.append(key)
    return ScreenedKeys(tuple(keys), tuple(weak))


def read_keys_file(path: Path, read: Callable[[Path], bytes] = Path.read_bytes) -> ScreenedKeys:
    """Raises OSError or UnicodeDecodeError: callers decide what a failure means."""
    return screen_keys(read(path).decode("utf-8"))


def failure_reason(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else type(error).__name__


def check_keys_file(path: Path) -> tuple[str, ...]:
    """The keys of --api-keys-file at start, refusing weak ones (by line: never echo a key)."""
    try:
        screened = read_keys_file(path)
    except (OSError, UnicodeDecodeError) as error:
        raise EntryError(f"cannot read --api-keys-file {path} ({failure_reason(error)}): "
                         "is the secret mounted there?")
    if screened.weak:
        number, problem = screened.weak[0]
        raise EntryError(
            f"the key on line {number} of --api-keys-file {path} {problem}: replace it with a random key "
            f"of at least {MIN_KEY_LENGTH} characters ({MAKE_ONE})."
        )
    return screened.keys


class FileStatus(Protocol):
    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int


@dataclass(frozen=True)
class KeysChange:
    """What one look at a keys file found new."""

    failure: str | None = None                 # why it cannot be read (it now gives no keys)
    recovered: bool = False                    # readable again after a failure
    weak: tuple[tuple[int, str], ...] = ()     # lines set aside as too weak


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
        self.keys: tuple[str, ...] = ()
        self.failure: str | None = None
        self._stat = stat
        self._read = read
        self._signature: tuple[int, ...] | None = None

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
            self.keys, self._signature, self.failure = (), None, failure_reason(error)
            return None if already_failing else KeysChange(failure=self.failure)
        recovered = self.failure is not None
        self.keys, self._signature, self.failure = screened.keys, signature, None
        return KeysChange(recovered=recovered, weak=screened.weak)


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
