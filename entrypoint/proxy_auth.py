"""API key check run inside the LiteLLM proxy (``general_settings.custom_auth``).

Owns which keys open the proxy: the master key plus the keys listed in an
optional keys file, re-read when the file changes so that a key removed from it
stops working without a restart. LiteLLM alone cannot do this without a
database: it knows one master key and answers any other key with 400
"No connected db".

The proxy process gets its inputs from llm-entry through two environment
variables, read once when LiteLLM looks up ``user_api_key_auth``. Everything
else here is pure and takes its inputs as arguments.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from entrypoint.keys import parse_keys_file

MASTER_KEY_VARIABLE = "LLM_ENTRY_MASTER_KEY"
KEYS_FILE_VARIABLE = "LLM_ENTRY_API_KEYS_FILE"
RECHECK_INTERVAL_SECONDS = 1.0

# The label LiteLLM records for a caller (spend logs, failure callbacks), never
# the key itself: LiteLLM hashes only keys that start with "sk-".
MASTER_KEY_LABEL = "llm-entry-master-key"
KEYS_FILE_LABEL = "llm-entry-keys-file"

_KEY_HEADERS = ("x-api-key", "api-key")
_MISSING_KEY = (
    "No API key: send it as 'Authorization: Bearer <key>' (or in an 'x-api-key' or 'api-key' header)."
)

logger = logging.getLogger(__name__)


class KeySource(enum.Enum):
    MASTER = "master key"
    KEYS_FILE = "keys file"


class FileStatus(Protocol):
    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int


def _digest(key: str) -> bytes:
    # Comparing fixed-length digests keeps the length of the keys out of the timing.
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The keys that open the proxy, with the keys file re-read when it changes.

    The file is looked at (one stat) at most once per ``recheck_interval`` and read
    again only when its device, inode, size or modification time changed. A file
    that is missing or unreadable contributes no keys until it is readable again;
    the master key always works.
    """

    def __init__(
        self,
        master_key: str,
        keys_file: Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        stat: Callable[[Path], FileStatus] = os.stat,
        read: Callable[[Path], bytes] = Path.read_bytes,
        recheck_interval: float = RECHECK_INTERVAL_SECONDS,
    ) -> None:
        if not master_key:
            raise ValueError("the master key is empty")
        self._master_digest = _digest(master_key)
        self._keys_file = keys_file
        self._clock = clock
        self._stat = stat
        self._read = read
        self._recheck_interval = recheck_interval
        self._file_digests: tuple[bytes, ...] = ()
        self._file_signature: tuple[int, ...] | None = None
        self._file_failing = False
        self._next_check = clock()
        self._refresh()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> KeyRing:
        master_key = environ.get(MASTER_KEY_VARIABLE, "")
        if not master_key:
            raise RuntimeError(
                f"{MASTER_KEY_VARIABLE} is not set in the LiteLLM proxy's environment: "
                "start the proxy through llm-entry, which sets it."
            )
        keys_file = environ.get(KEYS_FILE_VARIABLE, "")
        return cls(master_key, Path(keys_file) if keys_file else None)

    def allows(self, presented_key: str) -> bool:
        return self.source_of(presented_key) is not None

    def source_of(self, presented_key: str) -> KeySource | None:
        """Where the key comes from, or None when it opens nothing.

        Every known key is compared, with no early exit, so the time taken does
        not tell which key (if any) matched.
        """
        if not presented_key:
            return None
        self._refresh()
        presented = _digest(presented_key)
        is_master = hmac.compare_digest(self._master_digest, presented)
        in_file = False
        for known in self._file_digests:
            in_file |= hmac.compare_digest(known, presented)
        if is_master:
            return KeySource.MASTER
        return KeySource.KEYS_FILE if in_file else None

    def _refresh(self) -> None:
        now = self._clock()
        if self._keys_file is None or now < self._next_check:
            return
        self._next_check = now + self._recheck_interval
        try:
            status = self._stat(self._keys_file)
            signature = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
            if signature != self._file_signature:
                # Stat before reading: a write during the read leaves a newer
                # signature behind, so the next check reads the file again.
                keys = parse_keys_file(self._read(self._keys_file).decode("utf-8"))
                self._file_digests = tuple(_digest(key) for key in keys)
                self._file_signature = signature
        except (OSError, UnicodeDecodeError) as error:
            self._file_digests = ()
            self._file_signature = None
            if not self._file_failing:
                logger.warning(
                    "llm-entry: cannot read the API keys file %s (%s): "
                    "only the master key is accepted until it is readable again",
                    self._keys_file,
                    _reason(error),
                )
            self._file_failing = True
            return
        if self._file_failing:
            logger.warning("llm-entry: the API keys file %s is readable again", self._keys_file)
        self._file_failing = False


def _reason(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else type(error).__name__


class CredentialError(Exception):
    """The request carries no usable key; the message is safe to show to the client."""


def presented_key(headers: Iterable[tuple[str, str]]) -> str:
    """The one key a request presents in its headers.

    Accepted: 'Authorization: Bearer <key>', 'x-api-key: <key>', 'api-key: <key>'.
    Every such header must be well formed and all must carry the same key.
    Query strings and other schemes (Basic, a bare key in Authorization) are not keys here.
    """
    found: set[str] = set()
    for name, value in headers:
        name = name.lower()
        if name == "authorization":
            scheme, _, key = value.strip().partition(" ")
            key = key.strip()
            if scheme.lower() != "bearer" or not key or any(c.isspace() for c in key):
                raise CredentialError("Malformed Authorization header: expected 'Authorization: Bearer <key>'.")
            found.add(key)
        elif name in _KEY_HEADERS:
            key = value.strip()
            if not key or any(c.isspace() for c in key):
                raise CredentialError(f"Malformed {name} header: expected '{name}: <key>'.")
            found.add(key)
    if not found:
        raise CredentialError(_MISSING_KEY)
    if len(found) > 1:
        raise CredentialError("The request carries different keys in its headers: send one key.")
    return found.pop()


def proxy_authenticator(key_ring: KeyRing) -> Callable[[Any, str], Awaitable[Any]]:
    """The coroutine function LiteLLM calls as custom auth for every authenticated route.

    LiteLLM passes ``api_key`` already stripped of any 'Bearer '/'Basic ' prefix,
    so the headers are read again from the request to reject malformed ones.
    """
    # Imported here, not at module top: importing litellm takes seconds, and the
    # pure parts above are used (and tested) without it.
    from litellm.proxy._types import LitellmUserRoles, ProxyErrorTypes, ProxyException, UserAPIKeyAuth

    def refusal(message: str) -> ProxyException:
        return ProxyException(
            message=message,
            type=ProxyErrorTypes.auth_error.value,
            param=None,
            code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def user_api_key_auth(request: Any, api_key: str) -> UserAPIKeyAuth:
        try:
            key = presented_key(request.headers.items())
        except CredentialError as error:
            raise refusal(str(error)) from None
        source = key_ring.source_of(key)
        if source is KeySource.MASTER:
            return UserAPIKeyAuth(api_key=MASTER_KEY_LABEL, user_role=LitellmUserRoles.PROXY_ADMIN)
        if source is KeySource.KEYS_FILE:
            return UserAPIKeyAuth(api_key=KEYS_FILE_LABEL, user_role=LitellmUserRoles.INTERNAL_USER)
        raise refusal("Invalid API key: it is not a key this server accepts.")

    return user_api_key_auth


def __getattr__(name: str) -> Any:
    # LiteLLM resolves `custom_auth` with getattr on this module (or on the shim that
    # re-exports it), once, while it loads its config: the environment is read then,
    # and a missing master key stops the proxy from booting. Importing the module
    # alone (tests, llm-entry itself) reads nothing.
    if name == "user_api_key_auth":
        authenticate = proxy_authenticator(KeyRing.from_environment(os.environ))
        globals()[name] = authenticate
        return authenticate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
