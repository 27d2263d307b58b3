"""How many LiteLLM worker processes the proxy runs.

The model routes are relayed by llm-entry inside each worker
(entrypoint.inside.proxy_relay): on the benchmark machine one worker spends about
0.2 ms of CPU per request and 0.04 ms per streamed chunk (BENCHMARKS.md,
"The request path"), so one core carries about 5,000 requests/s or 25,000
streamed chunks/s, more than one engine's answers on most nodes. `auto`
gives a GPU node MAX_AUTO_WORKERS = 2: the second worker is headroom for a
node streaming tens of thousands of tokens per second, and keeps the model
routes answering while the other worker is busy with one of LiteLLM's own,
slower routes (about 10 ms each). Each worker is a fresh interpreter of about
0.5 GB, so more would only cost memory. On a CPU-only node the engine itself
needs the cores, so the proxy keeps one.

Usable CPUs are the fewer of the CPUs this process may run on and the
container's CPU limit (cgroup quota): Kubernetes limits a pod by quota, not
by affinity, so `os.cpu_count()` alone would count the whole node.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

MAX_AUTO_WORKERS = 2
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
                               f"({cpus} usable; one carries thousands of requests/s)")


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
