"""The program board: what llm-entry knows about each supervised program, under
one lock.

The checker threads report into it; the monitor reads verdicts from it and
notes the process groups it sees; a restart moves a program to its next
generation here. Every result is tagged with the generation (the start) it
belongs to, so a result from before a restart is dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from .config import Timing
from .health import Verdict, Vitals, assess
from .own_metrics import OwnMetrics


@dataclass
class Program:
    """One program across its restarts."""

    name: str
    vitals: Vitals
    generation: int = 0
    pgids: set[int] = field(default_factory=set)     # groups it leads or led, not yet seen gone
    restarts: deque = field(default_factory=deque)   # monotonic times of restarts
    restart_pending_since: float | None = None       # old group killed, new start not asked yet


class ProgramBoard:
    def __init__(self, names: tuple[str, ...], started: float, metrics: OwnMetrics):
        self.started = started
        self.programs = {name: Program(name, Vitals(name, started)) for name in names}
        # What /metrics shows of llm-entry itself (entrypoint.own_metrics).
        self.metrics = metrics
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Program:
        return self.programs[name]

    def __iter__(self) -> Iterator[Program]:
        return iter(self.programs.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.programs)

    # -- called from the checker threads ------------------------------------
    def report(self, name: str, generation: int, ok: bool, detail: str, at: float) -> None:
        with self._lock:
            program = self.programs[name]
            current = generation == program.generation
            if current:
                began = program.vitals.checking_since
                program.vitals.record(ok, detail, at)
        if current:
            self.metrics.checked(name, ok, at - began if began is not None else 0.0)

    def began(self, name: str, generation: int, at: float) -> None:
        with self._lock:
            program = self.programs[name]
            if generation == program.generation:
                program.vitals.begin(at)

    # -- called from the monitor's loop -----------------------------------------
    def verdicts(self, now: float, timing: Timing) -> list[Verdict]:
        with self._lock:
            return [assess(program.vitals, now, timing) for program in self.programs.values()]

    def next_generation(self, program: Program, now: float) -> None:
        """A new start of the program: results of the old one no longer count."""
        with self._lock:
            program.generation += 1
            program.vitals = Vitals(program.name, now)
