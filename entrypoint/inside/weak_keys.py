"""Which keys are too weak to guard a model: empty, with white space, short,
repetitive, or copied from documentation. The master key is judged by it at
start (entrypoint.keys), every line of a keys file at start and on every
reload (entrypoint.inside.keys_file).

Standard library only: the proxy imports it too.
"""

from __future__ import annotations

MIN_KEY_LENGTH = 16
MAKE_ONE = "openssl rand -hex 24"

# Keys copied from documentation and tutorials: anyone can guess them.
WELL_KNOWN_KEYS = frozenset({
    "sk-1234", "sk-12345", "sk-123456", "sk-1234567890", "sk-master", "sk-master-key",
    "sk-test", "sk-xxx", "sk-xxxx", "token-abc123", "changeme", "change-me", "password",
    "secret", "master-key", "masterkey", "test", "admin", "EMPTY", "sk-my-master-key",
    "sk-litellm-master-key", "sk-0000000000000000",
})


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
