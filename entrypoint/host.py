"""What the monitor and the shutdown act on, as one object: supervisord, the
signals llm-entry received, the children it reaps, the process table and the
clock. Unit tests pass fakes of each (tests/fakes.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from .processes import ProcessTable, Reaper
from .signals import SignalQueue
from .supervision import Supervisor


class Clock(Protocol):
    """Monotonic seconds, and a way to wait for them."""

    def __call__(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def __call__(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Host:
    supervisor: Supervisor
    signals: SignalQueue
    reaper: Reaper
    processes: ProcessTable = field(default_factory=ProcessTable)
    clock: Clock = field(default_factory=SystemClock)
