"""llm-entry's side of --api-keys-file: its log redaction follows the file,
SIGHUP makes every proxy worker read the file again before its next answer,
and a file that gives no keys is said once and shown in llm-entry's metrics.

The keys are checked in the proxy's workers (inside.key_ring.KeyRing), which look
at the file at most once a second. SIGHUP reaches llm-entry only and is not
passed on: uvicorn's supervisor takes SIGHUP as "restart the workers", and a
lone worker dies of it. llm-entry replaces a marker file in the private run
folder instead; every worker stats it on each request and reads the keys
file again when it changed.

SIGHUP is taken by the key watch's own thread, ten times a second, whatever
the log forwarder is doing (a backlog of log lines must not hold a reload
back). The forwarder calls `look` after it has read a round of log lines and
before it prints them, so a key added to the file is hidden before any line
can carry it; a key removed stays hidden, and so does the key of a line set
aside for a bad field (it is still a secret). On SIGHUP the keys are hidden
before the marker is replaced, so no worker uses a key the redaction does not
know. One lock of the watch's own orders the two threads.

A file that cannot be read (gone, a folder, not UTF-8) or holds no keys
(emptied) fails closed: the workers accept only the master key. The watch
says so once when that begins and once when it ends, and
`llm_entry_keys_file_usable` (entrypoint.own_metrics) reads 0 meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from .config import Config
from .console import Console
from .inside.keys_file_changes import KeysFile
from .own_metrics import OwnMetrics

RELOAD_MARKER = "keys-reload"
TAKE_EVERY = 0.1   # seconds between two looks for SIGHUP by the watch's thread


class KeyWatch:
    def __init__(self, config: Config, console: Console, marker: Path,
                 reload_requested: Callable[[], bool], metrics: OwnMetrics | None = None):
        self._file = KeysFile(config.api_keys_file) if config.api_keys_file is not None else None
        self._console = console
        self.marker = marker
        self._reload_requested = reload_requested
        self._metrics = metrics
        self._generation = 0
        # Why the file gives no keys, once said (an empty file at start is said by the config's warnings).
        self._problem: str | None = None if config.api_keys else "no keys"
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="key-watch", daemon=True)
        console.hide(*(entry.key for entry in config.api_keys))
        if metrics is not None and self._file is not None:
            metrics.keys_file(usable=self._problem is None)

    def start(self) -> KeyWatch:
        """Write the first marker, so the proxy's workers have one to compare with."""
        self._replace_marker()
        return self

    def take_signals(self) -> KeyWatch:
        """From now on, SIGHUP is taken within TAKE_EVERY by a thread of the watch's own."""
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stopped.wait(TAKE_EVERY):
            self.poll()

    def look(self) -> None:
        """One stat of the file, a read when it changed: its keys are hidden from then on."""
        with self._lock:
            self._look(force=False)

    def poll(self) -> None:
        """Take a SIGHUP if one came (read the file whatever its status, hide
        its keys, then replace the marker), else look at the file."""
        with self._lock:
            forced = self._reload_requested()
            if self._file is None:
                if forced:
                    self._console.say("SIGHUP: there is no --api-keys-file to read again; ignored")
                return
            self._look(force=forced)
            if forced:
                # After our own read, so that the keys are hidden before any worker uses them.
                self._replace_marker()
                self._console.say(self._reload_summary())

    def _look(self, force: bool) -> None:
        if self._file is None:
            return
        if self._file.look(force=force) is not None:
            self._console.hide(*self._file.keys, *self._file.withheld)
        self._tell_problem()

    def _tell_problem(self) -> None:
        """One line when the file stops giving keys, one when it gives them again."""
        assert self._file is not None
        path, failure = self._file.path, self._file.failure
        problem = None if self._file.entries else (failure or "no keys")
        if (problem is None) == (self._problem is None):
            return
        self._problem = problem
        if self._metrics is not None:
            self._metrics.keys_file(usable=problem is None)
            self._metrics.write()
        if failure is not None:
            self._console.say(f"warning: cannot read --api-keys-file {path} ({failure}): only the master key "
                              "works until it can be read again")
        elif problem is not None:
            self._console.say(f"warning: --api-keys-file {path} holds no keys: only the master key works "
                              "until keys are added")
        else:
            count = len(self._file.entries)
            self._console.say(f"--api-keys-file {path} gives keys again ({count} key{'' if count == 1 else 's'})")

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
