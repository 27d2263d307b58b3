"""The keys llm-entry itself holds at start: the master key (from
--master-key, its variables or --master-key-file, refused when weak), the
internal key between the proxy and the engine (new at every start), and
--api-keys-file checked before anything starts (its first bad line refuses
the start). Each is a Secret, which keeps a key out of every repr, log line
and traceback.

The supervising side only, since its failures are EntryErrors for `main`.
What the proxy reads as well (the keys file's grammar, which keys are too
weak) lives in entrypoint.inside.keys_file and entrypoint.inside.weak_keys.
"""

from __future__ import annotations

import secrets as _random  # the standard library module
from pathlib import Path

from .errors import EntryError
from .inside.keys_file import KeyEntry, failure_reason, read_keys_file
from .inside.weak_keys import MAKE_ONE, MIN_KEY_LENGTH, weakness


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


def read_key_file(path: Path, what: str) -> str:
    try:
        text = path.read_text()
    except OSError as error:
        raise EntryError(f"cannot read {what} {path} ({error.strerror}): is the secret mounted there?") from error
    # Secret files usually end in a newline; nothing else is trimmed.
    return text.rstrip("\r\n")


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
