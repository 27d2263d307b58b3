"""llm-entry's own metrics file: its values, its names, when and how it is written."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from entrypoint.own_metrics import CHECK_BUCKETS, WRITE_EVERY, OwnMetrics

from fakes import FakeClock
from repo_paths import REPO

PROGRAMS = ("engine", "proxy")


class Writes:
    """The injected writer: keeps every (path, text) it was given."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, path: Path, text: str) -> None:
        self.texts.append(text)

    def samples(self) -> dict[tuple[str, tuple], float]:
        return samples_of(self.texts[-1])


def samples_of(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def clock():
    return FakeClock(100.0)


@pytest.fixture
def writes():
    return Writes()


@pytest.fixture
def metrics(tmp_path, clock, writes):
    return OwnMetrics(tmp_path / "llm-entry.prom", PROGRAMS, clock=clock, write=writes)


def test_every_labelled_series_exists_at_zero_from_the_start(metrics, writes):
    metrics.write()
    samples = writes.samples()
    assert value(samples, "llm_entry_ready") == 0 and value(samples, "llm_entry_healthy") == 0
    for program in PROGRAMS:
        assert value(samples, "llm_entry_restarts_total", program=program) == 0
        assert value(samples, "llm_entry_check_failures_total", program=program) == 0
        assert value(samples, "llm_entry_check_seconds_count", program=program) == 0
        assert value(samples, "llm_entry_check_seconds_sum", program=program) == 0
        assert value(samples, "llm_entry_check_seconds_bucket", program=program, le="+Inf") == 0


def test_the_names_labels_and_types_are_exactly_these_and_nothing_else(metrics, writes):
    metrics.ready_after(3.0)
    metrics.checked("engine", False, 0.2)
    metrics.write()
    families = {f.name: f.type for f in text_string_to_metric_families(writes.texts[-1])}
    assert families == {
        "llm_entry_ready": "gauge", "llm_entry_healthy": "gauge", "llm_entry_seconds_to_ready": "gauge",
        "llm_entry_restarts": "counter", "llm_entry_check_seconds": "histogram",
        "llm_entry_check_failures": "counter",
    }
    samples = writes.samples()
    assert {name for name, _ in samples} == {
        "llm_entry_ready", "llm_entry_healthy", "llm_entry_seconds_to_ready", "llm_entry_restarts_total",
        "llm_entry_check_seconds_bucket", "llm_entry_check_seconds_count", "llm_entry_check_seconds_sum",
        "llm_entry_check_failures_total",
    }
    for name, labels in samples:
        labels = dict(labels)
        if name in ("llm_entry_ready", "llm_entry_healthy", "llm_entry_seconds_to_ready"):
            assert labels == {}
        elif name == "llm_entry_check_seconds_bucket":
            assert set(labels) == {"program", "le"} and labels["program"] in PROGRAMS
        else:
            assert set(labels) == {"program"} and labels["program"] in PROGRAMS, name
    assert [dict(labels)["le"] for name, labels in samples if name == "llm_entry_check_seconds_bucket"
            and dict(labels)["program"] == "engine"] == [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"]


def test_the_check_buckets_run_from_5_ms_to_10_s():
    assert CHECK_BUCKETS[0] == 0.005 and CHECK_BUCKETS[-1] == 10.0
    assert list(CHECK_BUCKETS) == sorted(set(CHECK_BUCKETS))


def test_state_sets_ready_and_healthy(metrics, writes):
    metrics.state(ready=True, healthy=True)
    metrics.write()
    assert value(writes.samples(), "llm_entry_ready") == 1 and value(writes.samples(), "llm_entry_healthy") == 1
    metrics.state(ready=False, healthy=True)
    metrics.write()
    assert value(writes.samples(), "llm_entry_ready") == 0 and value(writes.samples(), "llm_entry_healthy") == 1


def test_seconds_to_ready_is_absent_until_ready_and_keeps_the_first_time(metrics, writes):
    metrics.write()
    assert not any(name == "llm_entry_seconds_to_ready" for name, _ in writes.samples())
    metrics.ready_after(41.5)
    metrics.ready_after(90.0)   # ready again after a restart
    metrics.write()
    assert value(writes.samples(), "llm_entry_seconds_to_ready") == 41.5


def test_restarts_count_per_program(metrics, writes):
    metrics.restarted("engine")
    metrics.restarted("engine")
    metrics.restarted("proxy")
    metrics.write()
    assert value(writes.samples(), "llm_entry_restarts_total", program="engine") == 2
    assert value(writes.samples(), "llm_entry_restarts_total", program="proxy") == 1


def test_a_check_lands_in_its_duration_bucket_and_a_failed_one_counts_as_a_failure(metrics, writes):
    metrics.checked("engine", True, 0.004)
    metrics.checked("engine", False, 3.0)
    metrics.checked("proxy", False, 12.0)   # past the last bucket
    metrics.write()
    samples = writes.samples()

    def bucket(program, le):
        return value(samples, "llm_entry_check_seconds_bucket", program=program, le=le)

    assert bucket("engine", "0.005") == 1 and bucket("engine", "2.5") == 1 and bucket("engine", "5.0") == 2
    assert bucket("engine", "+Inf") == 2 and bucket("proxy", "10.0") == 0 and bucket("proxy", "+Inf") == 1
    assert value(samples, "llm_entry_check_seconds_count", program="engine") == 2
    assert value(samples, "llm_entry_check_seconds_sum", program="engine") == pytest.approx(3.004)
    assert value(samples, "llm_entry_check_failures_total", program="engine") == 1
    assert value(samples, "llm_entry_check_failures_total", program="proxy") == 1


def test_a_program_not_named_at_the_start_is_refused(metrics):
    with pytest.raises(KeyError):
        metrics.checked("limiter", True, 0.01)
    with pytest.raises(KeyError):
        metrics.restarted("limiter")


def test_checks_from_many_threads_all_count(metrics, writes):
    def check_many():
        for _ in range(2000):
            metrics.checked("proxy", False, 0.01)

    threads = [threading.Thread(target=check_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metrics.write()
    assert value(writes.samples(), "llm_entry_check_seconds_count", program="proxy") == 8000
    assert value(writes.samples(), "llm_entry_check_failures_total", program="proxy") == 8000


def test_it_writes_at_most_once_a_second(metrics, writes, clock):
    metrics.write_if_due()
    assert len(writes.texts) == 1
    metrics.restarted("engine")
    clock.now += WRITE_EVERY - 0.01
    metrics.write_if_due()
    assert len(writes.texts) == 1
    clock.now += 0.01
    metrics.write_if_due()
    assert len(writes.texts) == 2
    assert value(writes.samples(), "llm_entry_restarts_total", program="engine") == 1


def test_nothing_is_written_while_nothing_changed(metrics, writes, clock):
    metrics.state(ready=True, healthy=True)
    metrics.write_if_due()
    for _ in range(5):
        clock.now += 5 * WRITE_EVERY
        metrics.state(ready=True, healthy=True)   # the main loop says the same on every tick
        metrics.write_if_due()
    assert len(writes.texts) == 1


def test_write_writes_at_once_even_within_the_second(metrics, writes, clock):
    metrics.write_if_due()
    metrics.state(ready=True, healthy=True)
    metrics.write()
    assert len(writes.texts) == 2
    assert value(writes.samples(), "llm_entry_ready") == 1


def test_a_write_that_fails_never_raises_and_is_tried_again(tmp_path, clock):
    attempts = []

    def full_disk(path, text):
        attempts.append(text)
        if len(attempts) == 1:
            raise OSError(28, "No space left on device")

    metrics = OwnMetrics(tmp_path / "llm-entry.prom", PROGRAMS, clock=clock, write=full_disk)
    metrics.write()
    clock.now += WRITE_EVERY
    metrics.write_if_due()
    assert len(attempts) == 2


def test_the_file_is_readable_by_its_owner_and_written_by_temp_file_and_rename(tmp_path, clock):
    path = tmp_path / "llm-entry.prom"
    metrics = OwnMetrics(path, PROGRAMS, clock=clock)
    metrics.state(ready=True, healthy=True)
    metrics.write()
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & stat.S_IRUSR and mode & stat.S_IWUSR
    assert value(samples_of(path.read_text()), "llm_entry_ready") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["llm-entry.prom"], "a temp file was left behind"


def test_a_reader_never_sees_a_half_written_file(tmp_path):
    path = tmp_path / "llm-entry.prom"
    metrics = OwnMetrics(path, PROGRAMS)
    metrics.write()
    last_line = metrics.text().splitlines()[-1].rsplit(" ", 1)[0]   # the proxy's failures, whatever the count
    seen, deadline = [], time.monotonic() + 10.0

    def read_while_it_writes():
        while len(seen) < 300 and time.monotonic() < deadline:
            seen.append(path.read_text())

    reader = threading.Thread(target=read_while_it_writes)
    reader.start()
    written = 0
    while reader.is_alive():
        metrics.checked("proxy", False, 0.01)   # each write differs from the one before
        metrics.write()
        written += 1
    reader.join()
    assert len(seen) == 300 and written > 1
    for text in seen:
        assert text.endswith("\n") and text.splitlines()[-1].startswith(last_line)
        assert len(list(text_string_to_metric_families(text))) == 5


def test_own_metrics_never_write_into_the_proxy_workers_folder(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR in llm-entry's environment, prometheus_client's
    metric classes would keep their values as files there, and the page would
    count them again as the proxy's."""
    workers_dir = tmp_path / "metrics"
    workers_dir.mkdir()
    code = ("import sys; from pathlib import Path; from entrypoint.own_metrics import OwnMetrics; "
            "m = OwnMetrics(Path(sys.argv[1]), ['engine', 'proxy']); "
            "m.state(True, True); m.restarted('engine'); m.checked('proxy', False, 0.02); m.write()")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "llm-entry.prom")], cwd=REPO,
                            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(workers_dir)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert list(workers_dir.iterdir()) == []
    assert value(samples_of((tmp_path / "llm-entry.prom").read_text()), "llm_entry_restarts_total",
                 program="engine") == 1
