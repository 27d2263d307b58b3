"""Notes the moment each of several conditions first holds, polling in a thread.

Used for the probe files (not-ready gone, not-healthy there) and for exits:
the thread polls every 10 ms, so a reaction is timed to about 10 ms while the
main thread is busy sending requests or signals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

POLL = 0.01


class Watch:
    def __init__(self, conditions: dict[str, Callable[[], bool]], poll: float = POLL):
        self.conditions = dict(conditions)
        self.poll = poll
        self.times: dict[str, float] = {}     # time.monotonic() when first true
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.times) < len(self.conditions):
            for name, condition in self.conditions.items():
                if name not in self.times:
                    try:
                        held = condition()
                    except OSError:
                        held = False
                    if held:
                        self.times[name] = time.monotonic()
            self._stop.wait(self.poll)

    def wait(self, name: str, timeout: float) -> float | None:
        """When `name` first held, or None if it did not within `timeout` s."""
        deadline = time.monotonic() + timeout
        while name not in self.times and time.monotonic() < deadline:
            time.sleep(self.poll)
        return self.times.get(name)

    def since(self, name: str, start: float) -> float | None:
        at = self.times.get(name)
        return None if at is None else at - start


def probe_ready(probe_dir: Path) -> bool:
    """What probes/readiness checks: a heartbeat in the future and no not-ready."""
    try:
        until = int((probe_dir / "heartbeat").read_text().strip() or "0")
    except (OSError, ValueError):
        return False
    return until >= int(time.time()) and not (probe_dir / "not-ready").exists()
