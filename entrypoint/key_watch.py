"""llm-entry's side of --api-keys-file: its log redaction follows the file,
and SIGHUP makes every proxy worker read the file again before its next answer.

The keys are checked in the proxy's workers (proxy_auth.KeyRing), which look
at the file at most once a second. SIGHUP reaches llm-entry only and is not
passed on: uvicorn's supervisor takes SIGHUP as "restart the workers", and a
lone worker dies of it. llm-entry replaces a marker file in the private run
folder instead; every worker stats it on each request and reads the keys
file again when it changed.

The log forwarder calls `poll` before it prints, so a key added to the file
is hidden before any line can carry it; a key removed stays hidden, and so
does the key of a line set aside for a bad field (it is still a secret).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .config import Config
from .console import Console
from .keys import FileStatus, KeysFile

RELOAD_MARKER = "keys-reload"


class KeyWatch:
    def __init__(self, config: Config, console: Console, marker: Path,
                 reload_requested: Callable[[], bool], *,
                 stat: Callable[[Path], FileStatus] = os.stat,
                 read: Callable[[Path], bytes] = Path.read_bytes):
        self._file = (KeysFile(config.api_keys_file, stat=stat, read=read)
                      if config.api_keys_file is not None else None)
        self._console = console
        self.marker = marker
        self._reload_requested = reload_requested
        self._generation = 0
        console.hide(*(entry.key for entry in config.api_keys))

    def start(self) -> KeyWatch:
        """Write the first marker, so the proxy's workers have one to compare with."""
        self._replace_marker()
        return self

    def poll(self) -> None:
        forced = self._reload_requested()
        if self._file is None:
            if forced:
                self._console.say("SIGHUP: there is no --api-keys-file to read again; ignored")
            return
        if self._file.look(force=forced) is not None:
            self._console.hide(*self._file.keys, *self._file.withheld)
        if forced:
            # After our own read, so that the keys are hidden before any worker uses them.
            self._replace_marker()
            self._console.say(self._reload_summary())

    def _reload_summary(self) -> str:
        assert self._file is not None
        if self._file.failure is not None:
            return (f"SIGHUP: cannot read --api-keys-file {self._file.path} ({self._file.failure}): "
                    "only the master key works until it is readable")
        count = len(self._file.keys)
        return (f"SIGHUP: read --api-keys-file again ({count} key{'' if count == 1 else 's'}); "
                "the proxy uses it from its next request")

    def _replace_marker(self) -> None:
        self._generation += 1
        temporary = self.marker.with_name(self.marker.name + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(f"{self._generation}\n")
            # A new inode each time: the workers compare (inode, mtime).
            os.replace(temporary, self.marker)
        except OSError as error:
            self._console.say(f"cannot replace the key reload marker {self.marker} ({error.strerror}): "
                              "the proxy's workers read the file again only when its status changes")
