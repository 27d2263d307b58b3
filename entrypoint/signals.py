"""Signal handlers only record; the main loop acts (gunicorn's rule)."""

from __future__ import annotations

import signal
from collections import deque

HANDLED = (signal.SIGTERM, signal.SIGINT)


class SignalQueue:
    def __init__(self):
        self._pending: deque[int] = deque()
        self.received = 0

    def install(self) -> "SignalQueue":
        for sig in HANDLED:
            signal.signal(sig, self._record)
        return self

    def _record(self, signum, frame) -> None:
        self._pending.append(signum)
        self.received += 1

    def pop(self) -> int | None:
        return self._pending.popleft() if self._pending else None
