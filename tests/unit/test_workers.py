"""How many proxy workers `auto` gives, from usable CPUs and GPUs."""

import pytest

from entrypoint.workers import MAX_AUTO_WORKERS, choose_proxy_workers, quota_cpus, usable_cpus


@pytest.mark.parametrize("quota, period, cpus", [
    ("200000", "100000", 2.0), ("150000", "100000", 1.5), ("max", "100000", None),
    ("-1", "100000", None), ("", "", None), ("50000", "0", None),
])
def test_quota_cpus_reads_cgroup_quota_and_period(quota, period, cpus):
    assert quota_cpus(quota, period) == cpus


def test_usable_cpus_are_the_fewer_of_affinity_and_quota_rounded_up():
    assert usable_cpus(64, 1.5) == 2
    assert usable_cpus(2, 8.0) == 2
    assert usable_cpus(16, None) == 16
    assert usable_cpus(8, 0.2) == 1


@pytest.mark.parametrize("cpus, workers", [(1, 1), (2, 2), (3, 2), (64, 2)])
def test_auto_gives_a_gpu_node_one_worker_per_cpu_up_to_two(cpus, workers):
    assert MAX_AUTO_WORKERS == 2
    plan = choose_proxy_workers(None, cpus, gpus=1)
    assert plan.workers == workers
    assert f"{cpus} usable" in plan.reason


def test_auto_leaves_the_cpus_to_a_cpu_engine():
    plan = choose_proxy_workers(None, cpus=16, gpus=0)
    assert plan.workers == 1
    assert "CPU engine" in plan.reason


def test_an_explicit_count_wins_over_auto():
    assert choose_proxy_workers(3, cpus=1, gpus=0).workers == 3
