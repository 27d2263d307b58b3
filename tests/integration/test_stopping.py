"""A clean stop as an operator reads it: every program's last lines before
the line that says it stopped, and probe files that stop vouching the moment
llm-entry has exited (issue: what an operator reads)."""

import subprocess
import sys

import pytest
from last_words_engine import LAST_WORDS

from harness import Entry
from repo_paths import REPO

WRAPPED_ENGINE = f"{sys.executable} {REPO / 'tests' / 'last_words_engine.py'}"


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Entry:
    entry = Entry(tmp_path_factory.mktemp("stopping"), engine_cmd=WRAPPED_ENGINE)
    try:
        entry.start()
        entry.wait_ready()
        assert entry.stop() == 0, entry.output()
        yield entry
    finally:
        entry.kill_everything()


def stdout_lines(entry: Entry) -> list[str]:
    return entry.out_path.read_text(errors="replace").splitlines()


def test_the_engines_last_line_comes_before_the_line_that_says_it_stopped(stopped: Entry) -> None:
    lines = stdout_lines(stopped)
    last_words = lines.index(f"engine    | {LAST_WORDS}")
    stopped_at = next(at for at, line in enumerate(lines) if line.startswith("llm-entry | engine stopped in "))
    assert last_words < stopped_at, "\n".join(lines[-15:])


def test_the_proxys_last_line_comes_before_the_line_that_says_it_stopped(stopped: Entry) -> None:
    lines = stdout_lines(stopped)
    stopped_at = next(at for at, line in enumerate(lines) if line.startswith("llm-entry | proxy stopped in "))
    assert not [line for line in lines[stopped_at:] if line.startswith("proxy     | ")], "\n".join(lines[-15:])
    assert lines[stopped_at - 1].startswith("proxy     | "), "\n".join(lines[-15:])


def test_the_last_line_is_llm_entrys_own(stopped: Entry) -> None:
    assert stdout_lines(stopped)[-1] == "llm-entry | stopped; exit code 0"


@pytest.mark.parametrize("name", ["liveness", "readiness", "startup"])
def test_after_a_clean_exit_every_probe_fails_at_once_and_says_llm_entry_exited(stopped: Entry, name: str) -> None:
    probe = subprocess.run([str(REPO / "probes" / name), str(stopped.probe_dir)], capture_output=True, text=True,
                           timeout=10)
    assert (probe.returncode, probe.stderr) == (1, "llm-entry has exited: stopped; exit code 0\n")
