"""Forwards what the engine and the proxy write to the container's stdout.

supervisord writes each program's output to a file in the run folder; a
thread follows those files (across supervisord's rotation) and prints each
line behind the program's name. The last lines of each are kept for the
one-line summary when a program dies. Before each round it lets the key
watch look at the keys file, so that redaction knows a new key before any
line can carry it.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Callable

from .console import Console

KEPT_LINES = 30


class LogTail:
    def __init__(self, name: str, path: Path, console: Console):
        self.name = name
        self.path = path
        self.console = console
        self.recent: deque[str] = deque(maxlen=KEPT_LINES)
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def pump(self, final: bool = False) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._inode, self._offset = stat.st_ino, 0  # rotated or new
        if stat.st_size > self._offset:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read(stat.st_size - self._offset)
            self._offset += len(data)
            self._emit(data)
        if final and self._partial:
            self._emit(b"\n")

    def _emit(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            text = raw.decode(errors="replace").rstrip("\r")
            # vLLM redraws progress bars with \r: keep only the last frame.
            text = text.rsplit("\r", 1)[-1]
            self.recent.append(self.console.redact(text))
            self.console.line(self.name, text)

    def last_lines(self, count: int = 5) -> list[str]:
        lines = [line for line in self.recent if line.strip()]
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

    def start(self) -> "LogForwarder":
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

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.pump(final=True)
