"""Forwards what the engine and the proxy write to the container's stdout.

supervisord writes each program's output to a file in the run folder; a
thread follows those files (across supervisord's rotation) and prints each
line behind the program's name. The last lines of each are kept for the
one-line summary when a program dies. Before each round it lets the key
watch look at the keys file, so that redaction knows a new key before any
line can carry it.
"""

from __future__ import annotations

import os
import re
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .console import Console

KEPT_LINES = 200   # enough for exits.HISTORY_LINES: vLLM ends with dozens of lines of noise
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
        file = self._file or self._open()
        if file is None:
            return
        self._drain(file)
        try:
            rotated = self.path.stat().st_ino != os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            rotated = False  # between the rename and the new file: next round
        if rotated:
            self._drain(file)  # what came after the read above and before the rename
            file.close()
            new = self._open()
            if new is not None:
                self._drain(new)
        if final and self._partial:
            self._emit(b"\n")

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

    def _drain(self, file: BinaryIO) -> None:
        if os.fstat(file.fileno()).st_size < file.tell():
            file.seek(0)  # truncated in place
        data = file.read()
        if data:
            self._emit(data)

    def _emit(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            text = raw.decode(errors="replace").rstrip("\r")
            # vLLM redraws progress bars with \r: keep only the last frame.
            text = ANSI.sub("", text.rsplit("\r", 1)[-1])
            if not text.strip():
                continue   # LiteLLM frames its banner in empty lines: nothing to read
            self.recent.append(self.console.redact(text))
            self._kept += 1
            self.console.line(self.name, text)

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
                 before_pump: Callable[[], None] = lambda: None):
        self.tails = {tail.name: tail for tail in tails}
        self._interval = interval
        self._before_pump = before_pump
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-forwarder", daemon=True)

    def start(self) -> LogForwarder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.pump()

    def pump(self, final: bool = False) -> None:
        with self._lock:
            self._before_pump()
            for tail in self.tails.values():
                tail.pump(final)

    def finish(self, name: str) -> None:
        """Print all that `name` wrote, its last line too when it ends without
        a newline (vLLM's last line, nanobind's "See https://..." , does): the
        program has stopped, nothing more comes to complete it."""
        with self._lock:
            self._before_pump()
            for tail in self.tails.values():
                tail.pump(final=tail.name == name)

    def stop(self) -> None:
        """The last pump, once: later calls (the run's `finally`) do nothing,
        since a closed tail would open its file again and print it twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.pump(final=True)
        for tail in self.tails.values():
            tail.close()
