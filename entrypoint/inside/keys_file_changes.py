"""A keys file followed as it changes: one stat per look, a read only when
the file's status changed or a look is forced, and what each read found new
(a failure, a recovery, lines set aside). The proxy's key ring looks at it
before its requests (entrypoint.inside.key_ring), llm-entry's key watch to
hide new keys from its log (entrypoint.key_watch). What a look calls to stat
and read a file is given (Files), so that tests give fakes.

Standard library only: the proxy imports it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from entrypoint.inside.keys_file import KeyEntry, LineProblem, failure_reason, read_keys_file


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


class Files(Protocol):
    """How the keys file and the reload marker are looked at (tests give fakes)."""

    def stat(self, path: Path) -> FileStatus: ...

    def read(self, path: Path) -> bytes: ...


@dataclass(frozen=True)
class LocalFiles:
    """The files themselves: what a KeyRing (entrypoint.inside.key_ring) looks at outside the tests."""

    stat: Callable[[Path], FileStatus] = os.stat
    read: Callable[[Path], bytes] = Path.read_bytes


LOCAL_FILES = LocalFiles()


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
