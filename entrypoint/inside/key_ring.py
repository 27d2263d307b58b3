"""Who holds the key a request presents, in every proxy worker.

Owns which keys open the proxy, who holds them and what they open: the
master key opens everything; the keys listed in an optional keys file open
only the routes that reach the model, each under its line's name and limits.
The file is re-read when it changes, so that a key removed from it stops
working without a restart and a changed limit applies from the next request;
lines with a problem (a weak key, a bad field) are set aside with a warning
that names their line, never the key. LiteLLM alone cannot do this without a
database: it knows one master key and answers any other key with 400 "No
connected db".

The key is taken from the request's headers alone (KEY_HEADERS), before a
byte of the body is read. The front (entrypoint.inside.proxy_front) and
LiteLLM's custom auth (entrypoint.inside.litellm_auth) ask the one ring of
their worker (shared_key_ring), made from the environment llm-entry gives
the proxy; everything else here takes its inputs as arguments.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from entrypoint.inside.keys_file import MASTER_NAME, KeyEntry, KeyLimits, LineProblem
from entrypoint.inside.keys_file_changes import LOCAL_FILES, Files, KeysChange, KeysFile
from entrypoint.inside.names import API_KEYS_FILE_VARIABLE as KEYS_FILE_VARIABLE
from entrypoint.inside.names import KEYS_RELOAD_MARKER_VARIABLE as RELOAD_MARKER_VARIABLE
from entrypoint.inside.names import MASTER_KEY_VARIABLE, QUOTAS_DURABLE_VARIABLE
from entrypoint.inside.refusals import WRONG_KEY, WRONG_KEY_REASON, Refused

RECHECK_INTERVAL_SECONDS = 1.0

# The label LiteLLM records for a caller (spend logs, failure callbacks, its
# counters), never the key itself: LiteLLM hashes only keys that start with "sk-".
MASTER_KEY_LABEL = "llm-entry-master-key"
KEY_LABEL_PREFIX = "llm-entry-key-"   # + the key's name in the keys file

# The headers a key may come in: 'Authorization: Bearer <key>', or the bare key in one of KEY_HEADERS.
AUTHORIZATION = "authorization"
KEY_HEADERS = ("x-api-key", "api-key")
# The same names as ASGI servers give them (bytes, lower case).
KEY_HEADER_NAMES = frozenset(name.encode("latin-1") for name in (AUTHORIZATION, *KEY_HEADERS))
_MISSING_KEY = (
    "No API key: send it as 'Authorization: Bearer <key>' (or in an 'x-api-key' or 'api-key' header)."
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
        files: Files = LOCAL_FILES,
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
        self._quotas_durable = True
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
        ring = cls(master_key, Path(keys_file) if keys_file else None,
                   reload_marker=Path(marker) if marker else None)
        if environ.get(QUOTAS_DURABLE_VARIABLE) != "1":
            ring.refuse_quotas()
        return ring

    def refuse_quotas(self) -> None:
        """Set aside, from now on, every line with a quota: this container keeps
        no counts across a restart (the start refuses such a line; a reload
        that brings one sets it aside with a warning)."""
        self._quotas_durable = False
        self._refresh(force=True)

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

    def limited_names(self) -> list[tuple[str, KeyLimits]]:
        """(name, limits) of every key of the file, as it is now."""
        self._refresh()
        return [(holder.name, holder.limits) for holder in self._file_holders.values()]

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
            entries, undurable = _durable_only(self._file.entries, self._quotas_durable)
            self._file_holders = {_digest(entry.key): Holder(KeySource.KEYS_FILE, entry.name, entry.limits)
                                  for entry in entries}
            _report(self._file.path, dataclasses.replace(change, rejected=(*change.rejected, *undurable)))


def _durable_only(entries: tuple[KeyEntry, ...], durable: bool) -> tuple[tuple[KeyEntry, ...], list[LineProblem]]:
    """The entries, less those with a quota when counts would not survive a
    restart (the start refuses such a line; a reload sets it aside)."""
    if durable:
        return entries, []
    kept = tuple(entry for entry in entries if not entry.limits.quotas)
    return kept, [LineProblem(entry.line, "has a quota, but this container keeps no counts across a restart",
                              "start llm-entry with --state-dir or --redis-url to give keys quotas")
                  for entry in entries if entry.limits.quotas]


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


def presented_key(headers: Iterable[tuple[str, str]]) -> str:
    """The one key a request presents in its headers.

    Accepted: 'Authorization: Bearer <key>', 'x-api-key: <key>', 'api-key: <key>'.
    Every such header must be well formed and all must carry the same key.
    Query strings and other schemes (Basic, a bare key in Authorization) are not keys here.
    """
    found: set[str] = set()
    for name, value in headers:
        name = name.lower()
        if name == AUTHORIZATION:
            scheme, _, key = value.strip().partition(" ")
            key = key.strip()
            if scheme.lower() != "bearer" or not key or any(c.isspace() for c in key):
                raise CredentialError("Malformed Authorization header: expected 'Authorization: Bearer <key>'.",
                                      "malformed Authorization header")
            found.add(key)
        elif name in KEY_HEADERS:
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


def key_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Only the headers that may carry a key, decoded: the others are most of
    a request's headers, and decoding them all cost 8% of the proxy's CPU."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
            if name.lower() in KEY_HEADER_NAMES]


def holder_in(key_ring: KeyRing, headers: Iterable[tuple[str, str]]) -> Holder | Refused:
    """Who holds the key the headers present, or why the request gets 401."""
    try:
        key = presented_key(headers)
    except CredentialError as error:
        return Refused(401, str(error), error.reason)
    holder = key_ring.holder_of(key)
    return holder if holder is not None else Refused(401, WRONG_KEY, WRONG_KEY_REASON)


_shared_ring: KeyRing | None = None


def shared_key_ring() -> KeyRing:
    """The one key ring of this proxy worker, made from its environment on first
    use: LiteLLM's custom auth and the front (entrypoint.inside.proxy_front) both
    ask it, so both follow the same file reloads."""
    global _shared_ring
    if _shared_ring is None:
        _shared_ring = KeyRing.from_environment(os.environ)
    return _shared_ring
