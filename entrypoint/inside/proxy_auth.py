"""API key check run inside the LiteLLM proxy (``general_settings.custom_auth``).

Owns which keys open the proxy, who holds them and what they open: the
master key opens everything; the keys listed in an optional keys file open
only the routes that reach the model, each under its line's name and limits.
The file is re-read when it changes, so that a key removed from it stops
working without a restart and a changed limit applies from the next request;
lines with a problem (a weak key, a bad field) are set aside with a warning
that names their line, never the key. LiteLLM alone cannot do this without a
database: it knows one master key and answers any other key with 400 "No
connected db".

The proxy process gets its inputs from llm-entry through environment
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from entrypoint.inside.log_lines import field
from entrypoint.inside.names import API_KEYS_FILE_VARIABLE as KEYS_FILE_VARIABLE
from entrypoint.inside.names import KEYS_RELOAD_MARKER_VARIABLE as RELOAD_MARKER_VARIABLE
from entrypoint.inside.names import MASTER_KEY_VARIABLE
from entrypoint.keys import MASTER_NAME, FileStatus, KeyLimits, KeysChange, KeysFile

RECHECK_INTERVAL_SECONDS = 1.0

# The label LiteLLM records for a caller (spend logs, failure callbacks, its
# counters), never the key itself: LiteLLM hashes only keys that start with "sk-".
MASTER_KEY_LABEL = "llm-entry-master-key"
KEY_LABEL_PREFIX = "llm-entry-key-"   # + the key's name in the keys file

_KEY_HEADERS = ("x-api-key", "api-key")
_MISSING_KEY = (
    "No API key: send it as 'Authorization: Bearer <key>' (or in an 'x-api-key' or 'api-key' header)."
)
MODEL_ROUTES_ONLY = (
    "This key opens only the routes that reach the model (/v1/chat/completions, /v1/completions, "
    "/v1/embeddings, /v1/models, ...): other routes need the master key."
)

logger = logging.getLogger(__name__)


class KeySource(enum.Enum):
    MASTER = "master key"
    KEYS_FILE = "keys file"


@dataclass(frozen=True)
class Holder:
    """Who presents a key: where the key comes from, its name and its limits."""

    source: KeySource
    name: str
    limits: KeyLimits

    @property
    def label(self) -> str:
        """What LiteLLM records as the caller's key: llm-entry's own id, never the key."""
        return MASTER_KEY_LABEL if self.source is KeySource.MASTER else KEY_LABEL_PREFIX + self.name


MASTER_HOLDER = Holder(KeySource.MASTER, MASTER_NAME, KeyLimits())   # the master key has no limits


class Files(Protocol):
    """How the keys file and the reload marker are looked at (tests give fakes)."""

    def stat(self, path: Path) -> FileStatus: ...

    def read(self, path: Path) -> bytes: ...


@dataclass(frozen=True)
class LocalFiles:
    """The files themselves: what a KeyRing looks at outside the tests."""

    stat: Callable[[Path], FileStatus] = os.stat
    read: Callable[[Path], bytes] = Path.read_bytes


def _digest(key: str) -> bytes:
    # Comparing fixed-length digests keeps the length of the keys out of the timing.
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The keys that open the proxy, with the keys file re-read when it changes.

    The file is looked at (one stat) at most once per ``recheck_interval`` and read
    again only when its device, inode, size or modification time changed, or at
    once when the reload marker changed (llm-entry replaces it on SIGHUP; one
    stat per request). A file that is missing or unreadable contributes no keys
    until it is readable again; the master key always works.
    """

    def __init__(
        self,
        master_key: str,
        keys_file: Path | None = None,
        *,
        reload_marker: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        files: Files = LocalFiles(),
        recheck_interval: float = RECHECK_INTERVAL_SECONDS,
    ) -> None:
        if not master_key:
            raise ValueError("the master key is empty")
        self._master_digest = _digest(master_key)
        self._file = KeysFile(keys_file, stat=files.stat, read=files.read) if keys_file is not None else None
        self._reload_marker = reload_marker
        self._clock = clock
        self._stat = files.stat
        self._recheck_interval = recheck_interval
        self._file_holders: dict[bytes, Holder] = {}
        self._marker_signature = self._marker_status()
        self._next_check = clock()
        self._refresh(force=True)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> KeyRing:
        master_key = environ.get(MASTER_KEY_VARIABLE, "")
        if not master_key:
            raise RuntimeError(
                f"{MASTER_KEY_VARIABLE} is not set in the LiteLLM proxy's environment: "
                "start the proxy through llm-entry, which sets it."
            )
        keys_file = environ.get(KEYS_FILE_VARIABLE, "")
        marker = environ.get(RELOAD_MARKER_VARIABLE, "")
        return cls(master_key, Path(keys_file) if keys_file else None,
                   reload_marker=Path(marker) if marker else None)

    def allows(self, presented_key: str) -> bool:
        return self.source_of(presented_key) is not None

    def source_of(self, presented_key: str) -> KeySource | None:
        """Where the key comes from, or None when it opens nothing."""
        holder = self.holder_of(presented_key)
        return holder.source if holder is not None else None

    def holder_of(self, presented_key: str) -> Holder | None:
        """Who holds the key, or None when it opens nothing.

        One lookup by the key's SHA-256 digest, whatever the number of keys
        (a scan of 50,000 digests cost 5.5 ms of CPU a request). The table
        is keyed by digests, which a client cannot steer, so the lookup's
        time tells nothing about a key; the master key is compared in
        constant time. The master key wins over the same key in the file.
        """
        if not presented_key:
            return None
        self._refresh()
        presented = _digest(presented_key)
        if hmac.compare_digest(self._master_digest, presented):
            return MASTER_HOLDER
        return self._file_holders.get(presented)

    def _marker_status(self) -> tuple[int, int] | None:
        if self._reload_marker is None:
            return None
        try:
            status = self._stat(self._reload_marker)
        except OSError:
            return None
        return (status.st_ino, status.st_mtime_ns)

    def _refresh(self, force: bool = False) -> None:
        if self._file is None:
            return
        marker = self._marker_status()
        if marker != self._marker_signature:
            self._marker_signature, force = marker, True
        now = self._clock()
        if not force and now < self._next_check:
            return
        self._next_check = now + self._recheck_interval
        change = self._file.look(force=force)
        if change is not None:
            self._file_holders = {_digest(entry.key): Holder(KeySource.KEYS_FILE, entry.name, entry.limits)
                                  for entry in self._file.entries}
            _report(self._file.path, change)


def _report(path: Path, change: KeysChange) -> None:
    """Warnings for the proxy's log: the file and line, never a key."""
    if change.failure is not None:
        logger.warning("llm-entry: cannot read the API keys file %s (%s): only the master key "
                       "is accepted until it is readable again", path, change.failure)
    if change.recovered:
        logger.warning("llm-entry: the API keys file %s is readable again", path)
    for number, why, fix in change.rejected:
        logger.warning("llm-entry: the key on line %d of the API keys file %s %s: it is not accepted; %s",
                       number, path, why, fix)


class CredentialError(Exception):
    """The request carries no usable key; the message is safe to show to the client,
    the reason (a few words) to write in the log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


WRONG_KEY = "Invalid API key: it is not a key this server accepts."
WRONG_KEY_REASON = "wrong key"
NOT_ALLOWED_REASON = "a keys-file key on a route for the master key only"


def refusal_line(method: str, route: str, client: str, reason: str) -> str:
    """The one log line a refused request makes: who, where, why; never the key.
    The method and the path are the client's: each stays one token (log_lines.field)."""
    return f"refused {field(method)} {field(route)} from {field(client)}: {reason}"


def log_refusal(method: str, route: str, client: str, reason: str) -> None:
    # WARNING, not ERROR: a scanner hitting the port is the world, not a fault here.
    logger.warning(refusal_line(method, route, client, reason))


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
                raise CredentialError("Malformed Authorization header: expected 'Authorization: Bearer <key>'.",
                                      "malformed Authorization header")
            found.add(key)
        elif name in _KEY_HEADERS:
            key = value.strip()
            if not key or any(c.isspace() for c in key):
                raise CredentialError(f"Malformed {name} header: expected '{name}: <key>'.",
                                      f"malformed {name} header")
            found.add(key)
    if not found:
        raise CredentialError(_MISSING_KEY, "no key")
    if len(found) > 1:
        raise CredentialError("The request carries different keys in its headers: send one key.",
                              "different keys in two headers")
    return found.pop()


def proxy_authenticator(key_ring: KeyRing,
                        reaches_model: Callable[[str], bool] | None = None) -> Callable[[Any, str], Awaitable[Any]]:
    """The coroutine function LiteLLM calls as custom auth for every authenticated route.

    LiteLLM passes ``api_key`` already stripped of any 'Bearer '/'Basic ' prefix,
    so the headers are read again from the request to reject malformed ones.
    Keys from the file open only the routes ``reaches_model`` accepts (LiteLLM's
    LLM API routes): with custom auth LiteLLM checks no routes itself, and some
    management routes (/model/new) took such a key and failed only for want of
    a database.
    """
    # Imported here, not at module top: importing litellm takes seconds, and the
    # pure parts above are used (and tested) without it.
    from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
    from litellm.proxy.auth.auth_utils import get_request_route
    from litellm.proxy.auth.route_checks import RouteChecks

    reaches_model = reaches_model or RouteChecks.is_llm_api_route
    refusal = _litellm_refusal()

    async def user_api_key_auth(request: Any, api_key: str) -> UserAPIKeyAuth:
        try:
            key = presented_key(request.headers.items())
        except CredentialError as error:
            raise refusal(request, str(error), error.reason) from None
        holder = key_ring.holder_of(key)
        if holder is None:
            raise refusal(request, WRONG_KEY, WRONG_KEY_REASON)
        if holder.source is KeySource.MASTER:
            return UserAPIKeyAuth(api_key=holder.label, key_alias=holder.name,
                                  user_role=LitellmUserRoles.PROXY_ADMIN)
        if not reaches_model(get_request_route(request)):
            raise refusal(request, MODEL_ROUTES_ONLY, NOT_ALLOWED_REASON, code=403)
        # No rpm_limit, tpm_limit or max_parallel_requests here: llm-entry's own
        # limiter counts every request in front of LiteLLM; LiteLLM's would
        # count the same requests a second time.
        return UserAPIKeyAuth(api_key=holder.label, key_alias=holder.name,
                              user_role=LitellmUserRoles.INTERNAL_USER)

    return user_api_key_auth


# The flag on a refusal's ProxyException (LiteLLM's own class) that llm-entry has logged it.
LOGGED_BY_LLM_ENTRY = "logged_by_llm_entry"


def _litellm_refusal() -> Callable[..., Exception]:
    """What custom auth raises to refuse a request: LiteLLM's auth error, after
    llm-entry's one log line for it; LiteLLM's own lines for it are left out
    of its log from now on."""
    from litellm.proxy._types import ProxyErrorTypes, ProxyException
    from litellm.proxy.auth.auth_utils import get_request_route

    logging.getLogger("LiteLLM Proxy").addFilter(_without_logged_refusals)

    def refusal(request: Any, message: str, reason: str, code: int = 401) -> ProxyException:
        client = request.client.host if request.client else "unknown"
        log_refusal(request.method, get_request_route(request), client, reason)
        refused = ProxyException(message=message, type=ProxyErrorTypes.auth_error.value, param=None, code=code,
                                 headers={"WWW-Authenticate": "Bearer"} if code == 401 else None)
        setattr(refused, LOGGED_BY_LLM_ENTRY, True)   # LiteLLM's own ERROR lines for it are dropped
        return refused

    return refusal


def _without_logged_refusals(record: logging.LogRecord) -> bool:
    """A logging filter for LiteLLM's proxy logger: LiteLLM logs every refused
    request at ERROR, over two lines (the exception, then the client's address);
    llm-entry has written its own one line for the refusals it made."""
    args = record.args if isinstance(record.args, tuple) else ()
    return not any(getattr(arg, LOGGED_BY_LLM_ENTRY, False) for arg in args)


_shared_ring: KeyRing | None = None


def shared_key_ring() -> KeyRing:
    """The one key ring of this proxy worker, made from its environment on first
    use: LiteLLM's custom auth and the model relay (entrypoint.inside.proxy_relay) both
    ask it, so both follow the same file reloads."""
    global _shared_ring
    if _shared_ring is None:
        _shared_ring = KeyRing.from_environment(os.environ)
    return _shared_ring


def __getattr__(name: str) -> Any:
    # LiteLLM resolves `custom_auth` with getattr on this module (or on the shim that
    # re-exports it), once, while it loads its config: the environment is read then,
    # and a missing master key stops the proxy from booting. Importing the module
    # alone (tests, llm-entry itself) reads nothing.
    if name == "user_api_key_auth":
        authenticate = proxy_authenticator(shared_key_ring())
        globals()[name] = authenticate
        return authenticate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
