"""llm-entry's own metrics: whether the container is ready and healthy, how
long it took to become ready, restarts per program, the health checks'
durations and failures, and whether --api-keys-file gives keys, kept in a Prometheus text file that the proxy's
/metrics page appends (entrypoint.inside.metrics_page).

The numbers live here and a collector of our own renders them through a
private CollectorRegistry. prometheus_client's metric classes are not used:
they choose their storage at import from PROMETHEUS_MULTIPROC_DIR, and with
that variable in llm-entry's environment they would write files into the
proxy workers' folder, where the page would count them a second time.

Only numbers and program names go into the file, never a check's detail
text, so nothing a check saw (an error message that quotes a key) can reach
the page.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from .probe_files import write_atomically

READY = "llm_entry_ready"
HEALTHY = "llm_entry_healthy"
SECONDS_TO_READY = "llm_entry_seconds_to_ready"
RESTARTS = "llm_entry_restarts"                # rendered with _total: a counter
CHECK_SECONDS = "llm_entry_check_seconds"
CHECK_FAILURES = "llm_entry_check_failures"    # rendered with _total: a counter
# 1 while --api-keys-file can be read and holds at least one key; 0 while it
# cannot be read (gone, a folder, not UTF-8) or holds none: only the master key
# works then. Only with --api-keys-file.
KEYS_FILE_USABLE = "llm_entry_keys_file_usable"
PROGRAM_LABEL = "program"

# From 5 ms (a healthy loopback check) to 10 s (past any sensible --check-timeout).
CHECK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WRITE_EVERY = 1.0   # seconds: write_if_due writes at most this often


class _Durations:
    """One program's check durations, as a histogram keeps them."""

    def __init__(self) -> None:
        self.counts = [0] * (len(CHECK_BUCKETS) + 1)   # per bucket, the last one past 10 s
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(CHECK_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        running, result = 0, list[tuple[str, float]]()
        for bound, count in zip((*CHECK_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            result.append((floatToGoString(bound), running))
        return result


class OwnMetrics:
    """The metrics of one llm-entry run. Every method may be called from any
    thread (the checks report from their own threads); writing never raises,
    since a metrics file that cannot be written must not stop the container:
    the file then keeps the last values written, and the next write tries again."""

    def __init__(self, path: Path, programs: Iterable[str], *, clock: Callable[[], float] = time.monotonic,
                 write: Callable[[Path, str], None] = write_atomically):
        self.path = path
        self._programs = tuple(programs)
        self._clock = clock
        self._write = write
        self._lock = threading.Lock()          # the numbers below
        self._write_lock = threading.Lock()    # one write at a time: the temp file's name is per process
        self._ready = False
        self._healthy = False
        self._seconds_to_ready: float | None = None
        self._restarts = dict.fromkeys(self._programs, 0)
        self._failures = dict.fromkeys(self._programs, 0)
        self._durations = {program: _Durations() for program in self._programs}
        self._keys_file_usable: bool | None = None   # None: no --api-keys-file
        self._changed = True                   # nothing written yet
        self._written_at: float | None = None
        self._registry = CollectorRegistry()
        self._registry.register(self)

    # -- what happened ------------------------------------------------------------
    def state(self, ready: bool, healthy: bool) -> None:
        with self._lock:
            if (ready, healthy) != (self._ready, self._healthy):
                self._ready, self._healthy = ready, healthy
                self._changed = True

    def ready_after(self, seconds: float) -> None:
        """The container first became ready this long after llm-entry started;
        a later call (ready again after a restart) keeps the first value."""
        with self._lock:
            if self._seconds_to_ready is None:
                self._seconds_to_ready = seconds
                self._changed = True

    def restarted(self, program: str) -> None:
        with self._lock:
            self._restarts[program] += 1
            self._changed = True

    def checked(self, program: str, ok: bool, seconds: float) -> None:
        with self._lock:
            self._durations[program].observe(seconds)
            if not ok:
                self._failures[program] += 1
            self._changed = True

    def keys_file(self, usable: bool) -> None:
        """Whether --api-keys-file gives keys now (entrypoint.key_watch)."""
        with self._lock:
            if usable != self._keys_file_usable:
                self._keys_file_usable = usable
                self._changed = True

    # -- the file -------------------------------------------------------------------
    def write_if_due(self) -> None:
        """Write the file if something changed and the last write is at least
        WRITE_EVERY old: the main loop may call this on every tick."""
        now = self._clock()
        with self._lock:
            due = self._changed and (self._written_at is None or now - self._written_at >= WRITE_EVERY)
        if due:
            self.write()

    def write(self) -> None:
        """Write the file now (at shutdown, after a change that matters)."""
        with self._write_lock:
            with self._lock:
                # Cleared before rendering: a change while the text is made is written next time.
                self._changed, self._written_at = False, self._clock()
            try:
                self._write(self.path, self.text())
            except OSError:
                with self._lock:
                    self._changed = True

    def text(self) -> str:
        return generate_latest(self._registry).decode()

    # -- the collector the registry asks ------------------------------------------
    def collect(self) -> Iterator[Metric]:
        with self._lock:
            ready, healthy, seconds_to_ready = self._ready, self._healthy, self._seconds_to_ready
            restarts, failures = dict(self._restarts), dict(self._failures)
            durations = {program: (d.buckets(), d.total) for program, d in self._durations.items()}
            keys_file_usable = self._keys_file_usable
        yield GaugeMetricFamily(READY, "1 while the container can serve (no not-ready probe file), else 0.",
                                value=int(ready))
        yield GaugeMetricFamily(HEALTHY, "1 unless only a container restart will help (the not-healthy probe "
                                         "file), else 0.", value=int(healthy))
        if seconds_to_ready is not None:
            yield GaugeMetricFamily(SECONDS_TO_READY, "Seconds from llm-entry's start until the container "
                                                      "first became ready.", value=seconds_to_ready)
        family = CounterMetricFamily(RESTARTS, "Restarts of each program by llm-entry.", labels=[PROGRAM_LABEL])
        for program, count in restarts.items():
            family.add_metric([program], count)
        yield family
        histogram = HistogramMetricFamily(CHECK_SECONDS, "Duration of llm-entry's health checks of each "
                                                         "program, in seconds.", labels=[PROGRAM_LABEL])
        for program, (buckets, total) in durations.items():
            histogram.add_metric([program], buckets, total)
        yield histogram
        if keys_file_usable is not None:
            yield GaugeMetricFamily(KEYS_FILE_USABLE, "1 while --api-keys-file can be read and holds a key, else 0 "
                                                      "(only the master key works then).",
                                    value=int(keys_file_usable))
        family = CounterMetricFamily(CHECK_FAILURES, "Failed health checks of each program.", labels=[PROGRAM_LABEL])
        for program, count in failures.items():
            family.add_metric([program], count)
        yield family
