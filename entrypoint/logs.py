"""Forwards what the engine and the proxy write to the container's stdout.

supervisord writes each program's output to a file in the run folder; a
thread follows those files (across supervisord's rotation) and prints each
line behind the program's name. The last lines of each are kept for the
one-line summary when a program dies.

It works in rounds of at most CHUNK bytes of each log: read, let the key
watch look at the keys file (a key in what was read was in the file before
the read, so redaction knows it before the line is printed), print. A
backlog holds nobody up for longer than a round: the shutdown's flushes
take turns with the thread, and each flush has a deadline. What the last
flush cannot print in its time is counted, and one line says how much.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .console import Console

KEPT_LINES = 200   # enough for last_words.HISTORY_LINES: vLLM ends with dozens of lines of noise
CHUNK = 1 << 16    # bytes of each log per round: a few hundred lines
STOP_FLUSH = 2.0   # seconds for the last flush when the caller gives no deadline
# Terminal control sequences (colours, cursor moves): LiteLLM colours its start-up
# lines whatever the output is; a container log shows them as "[32m" litter.
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class LogTail:
    """Follows one program's log file by an open handle, like `tail -F`:
    after supervisord's rotation (a rename, then a new file) the old handle
    still reads the last lines written before it, then the new file is opened."""

    def __init__(self, name: str, path: Path, console: Console):
        self.name = name
        self.path = path
        self.console = console
        self.recent: deque[str] = deque(maxlen=KEPT_LINES)
        self._file: BinaryIO | None = None
        self._partial = b""
        self._kept = 0        # lines ever kept in `recent`
        self._run_from = 0    # ... when the program's current run began

    def pump(self, final: bool = False) -> None:
        """Print all that is new; with final, a last line without its newline too."""
        while True:
            data = self.read(CHUNK)
            self.emit(data)
            if len(data) < CHUNK:
                break
        if final:
            self.end_partial()

    def read(self, limit: int) -> bytes:
        """Up to `limit` new bytes, across a rotation: what the old file got
        after the last read and before the rename, then the new file."""
        file = self._file or self._open()
        if file is None:
            return b""
        if os.fstat(file.fileno()).st_size < file.tell():
            file.seek(0)  # truncated in place
        data = file.read(limit)
        if len(data) < limit and self._rotated(file):
            data += file.read(limit - len(data))
            if len(data) < limit:   # the old file is done with
                file.close()
                new = self._open()
                if new is not None:
                    data += new.read(limit - len(data))
        return data

    def _rotated(self, file: BinaryIO) -> bool:
        try:
            return self.path.stat().st_ino != os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            return False  # between the rename and the new file: next round

    def end_partial(self) -> None:
        """The program has stopped: its last line will get no newline."""
        if self._partial:
            self.emit(b"\n")

    def skip(self) -> int:
        """Drop all that is new unprinted; how many lines that was."""
        lines, last = 0, self._partial[-1:]
        while True:
            data = self.read(CHUNK)
            lines += data.count(b"\n")
            last = data[-1:] or last
            if len(data) < CHUNK:
                break
        self._partial = b""
        return lines + (last not in (b"", b"\n"))   # a last line without its newline

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> BinaryIO | None:
        try:
            self._file = self.path.open("rb")
        except FileNotFoundError:
            self._file = None
        return self._file

    def emit(self, data: bytes) -> None:
        if not data:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            text = raw.decode(errors="replace").rstrip("\r")
            # vLLM redraws progress bars with \r: keep only the last frame.
            text = ANSI.sub("", text.rsplit("\r", 1)[-1])
            if not text.strip():
                continue   # LiteLLM frames its banner in empty lines: nothing to read
            redacted = self.console.redact(text)      # once: it is the costly part of a line
            self.recent.append(redacted)
            self._kept += 1
            self.console.line_redacted(self.name, redacted)

    def begin_run(self) -> None:
        """The program is restarted: what it wrote before is no longer its
        story (an exit summary quotes only the run that exited)."""
        self._run_from = self._kept

    def last_lines(self, count: int = 5) -> list[str]:
        """The last non-blank lines of the program's current run."""
        this_run = min(self._kept - self._run_from, len(self.recent))
        lines = [line for line in list(self.recent)[len(self.recent) - this_run:] if line.strip()]
        return lines[-count:]


class LogForwarder:
    def __init__(self, tails: list[LogTail], interval: float = 0.1,
                 before_pump: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic):
        self.tails = {tail.name: tail for tail in tails}
        self._interval = interval
        self._before_pump = before_pump   # after each round's reads, before its lines are printed
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # Callers waiting for the lock: the thread lets them go first between two
        # rounds (a lock is not fair: the thread would take it again at once).
        self._turn = threading.Condition()
        self._wanted = 0
        self._thread = threading.Thread(target=self._run, name="log-forwarder", daemon=True)

    def start(self) -> LogForwarder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            more = True
            while more and not self._stop.is_set():
                with self._turn:   # a round at a time: a flush of the shutdown comes between two
                    self._turn.wait_for(lambda: self._wanted == 0 or self._stop.is_set())
                with self._lock:
                    more = self._round()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock, for a caller other than the thread: before the thread's next round."""
        with self._turn:
            self._wanted += 1
        try:
            with self._lock:
                yield
        finally:
            with self._turn:
                self._wanted -= 1
                self._turn.notify_all()

    def _round(self, ended: Callable[[LogTail], bool] = lambda tail: False) -> bool:
        """Read up to CHUNK of each log, let the key watch look, print (the
        last line of an `ended` program's log too, once it is all read).
        Whether a log had more than that."""
        data = {tail: tail.read(CHUNK) for tail in self.tails.values()}
        self._before_pump()
        for tail, chunk in data.items():
            tail.emit(chunk)
            if len(chunk) < CHUNK and ended(tail):
                tail.end_partial()
        return any(len(chunk) == CHUNK for chunk in data.values())

    def _drain(self, ended: Callable[[LogTail], bool], until: float | None) -> bool:
        """Rounds until every log is printed, or until the deadline; whether all was."""
        while self._round(ended):
            if until is not None and self._clock() >= until:
                return False
        return True

    def pump(self, final: bool = False, within: float | None = None) -> None:
        """Print what is new; within `within` seconds, if given (the rest waits
        for the thread's next rounds)."""
        until = None if within is None else self._clock() + within
        with self._locked():
            self._drain(lambda tail: final, until)

    def finish(self, name: str, until: float | None = None) -> None:
        """Print all that `name` wrote, its last line too when it ends without
        a newline (vLLM's last line, nanobind's "See https://..." , does): the
        program has stopped, nothing more comes to complete it. By `until`,
        if given: what is left then waits for the next flush."""
        with self._locked():
            self._drain(lambda tail: tail.name == name, until)

    def stop(self, until: float | None = None) -> None:
        """The last flush, once, by `until` (STOP_FLUSH from now if not given):
        lines it cannot print by then are counted and said. Later calls (the
        run's `finally`) do nothing, since a closed tail would open its file
        again and print it twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        until = self._clock() + STOP_FLUSH if until is None else until
        if self._thread.is_alive():
            self._thread.join(timeout=max(0.0, until - self._clock()))
        with self._locked():
            if not self._drain(lambda tail: True, until):
                for tail in self.tails.values():
                    unshown = tail.skip()
                    if unshown:
                        tail.console.say(f"{unshown} line{'' if unshown == 1 else 's'} of the {tail.name}'s log "
                                         "were not shown (shutdown time budget)")
            for tail in self.tails.values():
                tail.close()
