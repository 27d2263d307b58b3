"""How many LiteLLM worker processes the proxy runs.

One worker is one process with one GIL: on the benchmark machine it tops
out near 110 requests/s whatever the concurrency, and a second worker on a
second core doubled that with the same latency at concurrency 1 (see
BENCHMARKS.md, "Proxy workers"). Each worker is a fresh interpreter of
about 0.5 GB. So `auto` gives a GPU node one worker per usable CPU, up to
MAX_AUTO_WORKERS (memory, and nothing measured beyond); on a CPU-only node
the engine itself needs the cores, so the proxy keeps one.

Usable CPUs are the fewer of the CPUs this process may run on and the
container's CPU limit (cgroup quota): Kubernetes limits a pod by quota, not
by affinity, so `os.cpu_count()` alone would count the whole node.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

MAX_AUTO_WORKERS = 4
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    reason: str   # one line for the log


def quota_cpus(quota: str | None, period: str | None) -> float | None:
    """CPUs a cgroup quota allows ("max" or a negative quota: no limit)."""
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def usable_cpus(affinity: int, quota: float | None) -> int:
    limit = affinity if quota is None else min(affinity, math.ceil(quota))
    return max(1, limit)


def choose_proxy_workers(requested: int | None, cpus: int, gpus: int) -> WorkerPlan:
    if requested is not None:
        return WorkerPlan(requested, f"proxy: {requested} worker(s), as asked")
    if gpus == 0:
        return WorkerPlan(1, f"proxy: 1 worker ({cpus} usable CPUs left to the CPU engine)")
    workers = min(cpus, MAX_AUTO_WORKERS)
    return WorkerPlan(workers, f"proxy: {workers} worker(s), one per usable CPU up to {MAX_AUTO_WORKERS} "
                               f"({cpus} usable)")


def read_usable_cpus() -> int:
    """The one place that looks at the machine; tests pass a number instead."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    return usable_cpus(affinity, _read_quota())


def _read_quota() -> float | None:
    try:
        quota, period = CGROUP_V2_CPU_MAX.read_text().split()[:2]
        return quota_cpus(quota, period)
    except (OSError, ValueError):
        pass
    try:
        return quota_cpus(CGROUP_V1_QUOTA.read_text().strip(), CGROUP_V1_PERIOD.read_text().strip())
    except OSError:
        return None
