"""Signal handlers only record; the main loops act (gunicorn's rule).

SIGTERM and SIGINT ask for the shutdown and queue up for the monitor (a
second one hurries the shutdown along). SIGHUP asks for the keys file to be
read again: it is only counted, so it can never stop llm-entry (its default
action would, leaving the run folder behind); the key watch takes it.

The package records these three from the moment it is imported (see
entrypoint/__init__.py); install() takes over what came before it.
"""

from __future__ import annotations

import signal
from collections import deque

from . import early_signals

HANDLED = (signal.SIGTERM, signal.SIGINT)
RELOAD = signal.SIGHUP


class SignalQueue:
    def __init__(self):
        self._pending: deque[int] = deque()
        self.received = 0
        self._reloads = 0
        self._reloads_taken = 0

    def install(self) -> SignalQueue:
        for sig in HANDLED:
            signal.signal(sig, self._record)
        signal.signal(RELOAD, self._record_reload)
        # What the package's first handlers recorded, in order; from here on
        # the handlers above record.
        while early_signals:
            signum = early_signals.pop(0)
            if signum == RELOAD:
                self._record_reload(signum, None)
            else:
                self._record(signum, None)
        return self

    def _record(self, signum, frame) -> None:
        self._pending.append(signum)
        self.received += 1

    def _record_reload(self, signum, frame) -> None:
        self._reloads += 1

    def pop(self) -> int | None:
        """The next shutdown signal, if any (SIGHUP never shows here)."""
        return self._pending.popleft() if self._pending else None

    def take_reload(self) -> bool:
        """Whether SIGHUP came since the last call (several count as one)."""
        seen = self._reloads
        if seen == self._reloads_taken:
            return False
        self._reloads_taken = seen
        return True
