"""The probe-file contract Kubernetes exec probes read.

- `not-ready`: present whenever the endpoint cannot serve (start-up, a failing
  check, a restart, shutdown); its text says why.
- `not-healthy`: present when only a container restart will help.
- `heartbeat`: the Unix time until which the monitor vouches for the two
  files above; the probe scripts fail once it has passed, so a frozen or dead
  monitor cannot leave a stale "ready" behind. It holds EXPIRED (0) once
  llm-entry has exited: nothing runs, nothing is vouched for, at once.

`ProbeFiles.show` is the only writer: the state is derived in one place and
every write is atomic (temp file + os.replace).

A probe dir removed under llm-entry (or replaced by an empty one) is made
again at the next write, with the mode it had when it was prepared, and the
files say again what they said, not-ready first; one line says so. One that
cannot be made again ends the run with ProbeDirLost (exit code 2, as a probe
dir that is not writable at start), since no probe could see the container.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from .errors import EntryError

NOT_READY = "not-ready"
NOT_HEALTHY = "not-healthy"
HEARTBEAT = "heartbeat"
EXPIRED = 0   # the heartbeat once nothing runs; the probe scripts say "llm-entry has exited"


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(temp, path)


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class ProbeDirLost(EntryError):
    """The probe dir went away and cannot be made again."""


def on_the_way_out(write: Callable[[], None]) -> None:
    """A probe-file write during the shutdown: a probe dir that broke (full
    disk, removed volume) must not stop the shutdown half way. The files then
    stay as they were and the heartbeat runs out, so the probes fail anyway."""
    try:
        write()
    except (OSError, ProbeDirLost):
        pass


class ProbeFiles:
    def __init__(self, probe_dir: Path, heartbeat_ttl: float, clock: Callable[[], float] = time.time,
                 say: Callable[[str], None] = lambda line: None):
        self.dir = probe_dir
        self._ttl = heartbeat_ttl
        self._clock = clock
        self._say = say
        self._mode: int | None = None   # the folder's mode once prepared
        self._shown: tuple[str | None, str | None] | None = None
        self._beat_until = -1
        self._expired = False

    def prepare(self) -> None:
        """Create the folder and prove we can write there, before anything starts.

        The proof is not-ready itself: a reader that only tests for not-ready
        (`test ! -e not-ready`) must never find the folder looking ready, not
        even between this and the first heartbeat.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.dir / NOT_READY, "starting\n")
            self._mode = stat.S_IMODE(self.dir.stat().st_mode)
        except OSError as error:
            raise EntryError(
                f"probe dir {self.dir} is not writable ({error.strerror}): run as a user who can "
                "write it, or pass --probe-dir (LLM_ENTRY_PROBE_DIR) to a writable folder."
            ) from error

    def show(self, not_ready: str | None, not_healthy: str | None) -> None:
        """Make the files say this: a reason string means present, None absent.

        not-ready is written before not-healthy is removed, so a reader never
        sees a moment where a broken container looks servable.
        """
        state = (not_ready, not_healthy)
        if state != self._shown:
            for name, reason in ((NOT_READY, not_ready), (NOT_HEALTHY, not_healthy)):
                if reason is not None:
                    self._write(name, reason.rstrip("\n") + "\n")
            for name, reason in ((NOT_HEALTHY, not_healthy), (NOT_READY, not_ready)):
                if reason is None:
                    remove(self.dir / name)
            self._shown = state
        self.beat()

    def expire(self, reason: str) -> None:
        """Once nothing runs any more: not-ready says why (not-healthy stays as
        it is), and the heartbeat stops vouching at once rather than for
        another --heartbeat-ttl. Later calls, and later beats, change nothing."""
        if self._expired:
            return
        self.show(reason, self._shown[1] if self._shown else None)
        self._write(HEARTBEAT, f"{EXPIRED}\n")
        self._beat_until, self._expired = EXPIRED, True

    def beat(self) -> None:
        if self._expired:
            return
        until = int(self._clock() + self._ttl)
        if until != self._beat_until:
            if self._mode is not None and self._files_gone():
                self._make_again("replaced" if self.dir.exists() else "removed")
            self._write(HEARTBEAT, f"{until}\n")
            self._beat_until = until

    # -- a probe dir removed under us ------------------------------------------------
    def _files_gone(self) -> bool:
        """The folder is gone, or has lost a file it should hold: an empty
        folder in its place would look ready."""
        if not self.dir.is_dir():
            return True
        shown = self._shown or (None, None)
        return any(reason is not None and not (self.dir / name).exists()
                   for name, reason in zip((NOT_READY, NOT_HEALTHY), shown, strict=True))

    def _write(self, name: str, text: str) -> None:
        try:
            write_atomically(self.dir / name, text)
        except (FileNotFoundError, NotADirectoryError):
            if self._mode is None:
                raise
            self._make_again("removed")
            write_atomically(self.dir / name, text)

    def _make_again(self, what: str) -> None:
        """Make the folder again as it was prepared, and say again what it said."""
        mode = self._mode
        assert mode is not None
        try:
            self.dir.mkdir(mode=mode, parents=True, exist_ok=True)
            os.chmod(self.dir, mode)   # mkdir's mode passes the umask
            shown, self._shown, self._beat_until = self._shown, None, -1
            if shown is not None:
                self.show(*shown)
        except OSError as error:
            raise ProbeDirLost(f"probe dir {self.dir} was {what} and cannot be made again "
                               f"({error.strerror}): no probe can see this container; stopping") from error
        self._say(f"probe dir {self.dir} was {what}: made it again (mode {mode:o}) with the probe files")
