"""The test support keeps its two promises: the folder sets a test's tier,
and a process a test started and left running is found at the end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.procs import wait_for

from leftovers import SESSION_MARK, left_running, marked
from repo_paths import REPO


@pytest.mark.parametrize("tier", ["integration", "e2e", "bench"])
def test_each_marked_tier_selects_exactly_its_folder(tier: str) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", tier],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    tests = [line for line in listed.stdout.splitlines() if "::" in line]
    assert tests, listed.stdout + listed.stderr
    assert all(line.startswith(f"tests/{tier}/") for line in tests), [
        line for line in tests if not line.startswith(f"tests/{tier}/")]


def test_no_test_file_sits_flat_in_tests() -> None:
    assert sorted(path.name for path in (REPO / "tests").glob("test_*.py")) == []


def test_a_process_left_running_is_found_by_the_mark_it_inherited() -> None:
    mark = f"support-test-{os.getpid()}"
    child = subprocess.Popen(["sleep", "60"], env={**os.environ, SESSION_MARK: mark})
    try:
        wait_for(lambda: marked(mark) == [child.pid], 10, "the marked sleep")
    finally:
        child.kill()
        child.wait(timeout=10)
    assert left_running(mark, grace=5) == []
