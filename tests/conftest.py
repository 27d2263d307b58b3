"""The tiers come from the folders, and the session leaves nothing running.

- tests/unit/: no real llm-entry, supervisord or LiteLLM process.
- tests/integration/: the real llm-entry with the engine test double.
- tests/e2e/: the real vLLM CPU engine.
- tests/bench/: the benchmark command's quick mode.
- tests/container/: the CPU image built and run with podman; the GPU image's
  install step checked with pip's resolver.
- tests/browser/: the page at / in headless chromium, against the real llm-entry.

The folder sets the marker, so `-m "not e2e and not bench"` selects by folder
and a test cannot claim a tier it does not sit in."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from harness import Entry
from leftovers import SESSION_MARK, describe, kill, left_running
from repo_paths import TESTS

TIERS = ("unit", "integration", "e2e", "bench", "container", "browser")
MARKED_TIERS = frozenset(TIERS) - {"unit"}
# What a process still running when the session ends gets to finish exiting.
LEFTOVER_GRACE = 15.0


def tier_of(path: Path) -> str | None:
    parts = path.resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_MARK] = f"{os.getpid()}-{secrets.token_hex(4)}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            raise pytest.UsageError(f"{item.path} is outside the tier folders: move it into "
                                    f"tests/{', tests/'.join(TIERS)}")
        claimed = {mark.name for mark in item.iter_markers()} & MARKED_TIERS
        if claimed - {tier}:
            raise pytest.UsageError(f"{item.nodeid} is marked {', '.join(sorted(claimed))} but sits in "
                                    f"tests/{tier}/: the folder sets the tier, so move the test")
        if tier in MARKED_TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = left_running(os.environ[SESSION_MARK], LEFTOVER_GRACE)
    if not left:
        return
    lines = "\n".join(describe(pid) for pid in left)
    kill(left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (f"{len(left)} process(es) started by the tests were still running at the end "
               f"(killed now; the test support must stop them):\n{lines}")
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def entry_factory(request, tmp_path):
    """Make llm-entry runs that are always cleaned up, whatever the test did."""
    if tier_of(request.node.path) == "unit":
        pytest.fail("a unit test may not start llm-entry: move it into tests/integration/")
    made: list[Entry] = []

    def make(**kwargs) -> Entry:
        folder = tmp_path / f"run{len(made)}"
        folder.mkdir()
        entry = Entry(folder, **kwargs)
        made.append(entry)
        return entry

    yield make
    for entry in made:
        entry.kill_everything()
