"""Keys: where the master key comes from, which keys are too weak, and a
wrapper that keeps a key out of every repr, log line and traceback."""

from __future__ import annotations

import secrets as _random  # the standard library module
from pathlib import Path

from .errors import EntryError

MIN_KEY_LENGTH = 16

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


def parse_keys_file(text: str) -> tuple[str, ...]:
    """Keys in a keys file: one per line; blank lines and lines starting with '#' are skipped."""
    keys = (line.strip() for line in text.removeprefix("\ufeff").splitlines())
    return tuple(key for key in keys if key and not key.startswith("#"))


def check_keys_file(path: Path) -> tuple[str, ...]:
    """The keys of --api-keys-file, refusing weak ones (by position: never echo a key)."""
    keys = parse_keys_file(read_key_file(path, "--api-keys-file"))
    for number, key in enumerate(keys, start=1):
        problem = weakness(key)
        if problem:
            raise EntryError(
                f"key {number} in --api-keys-file {path} {problem}: replace it with a random key "
                f"of at least {MIN_KEY_LENGTH} characters (openssl rand -hex 24)."
            )
    return keys


def resolve_master_key(flag_value: str | None, key_file: Path | None) -> Secret:
    """The master key from --master-key (or its variables) or --master-key-file."""
    if flag_value and key_file is not None:
        raise EntryError("both --master-key and --master-key-file are set: give the master key once.")
    if key_file is not None:
        value = read_key_file(key_file, "--master-key-file")
        source = f"--master-key-file {key_file}"
    elif flag_value is not None:
        value, source = flag_value, "--master-key"
    else:
        raise EntryError(
            "no master key: pass --master-key, --master-key-file, or set LITELLM_MASTER_KEY "
            "(generate one with: openssl rand -hex 24)."
        )
    problem = weakness(value)
    if problem:
        raise EntryError(
            f"the master key from {source} {problem}: use a random key of at least "
            f"{MIN_KEY_LENGTH} characters (openssl rand -hex 24)."
        )
    return Secret(value)


def new_internal_key() -> Secret:
    """The key between the proxy and the engine, new at every start."""
    return Secret("sk-internal-" + _random.token_urlsafe(32))
