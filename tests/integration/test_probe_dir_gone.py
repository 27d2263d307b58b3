"""The probe dir removed under a running llm-entry: it is made again, with
its files, and one line says so; replaced by a file, so that it cannot be
made again, llm-entry stops with one line and exit code 2, no traceback,
nothing left running."""

from __future__ import annotations

import shutil
import stat
import subprocess

from bench.procs import wait_for

from repo_paths import REPO

EXIT_BAD_CONFIG = 2


def readiness_probe(entry) -> int:
    return subprocess.run([str(REPO / "probes" / "readiness"), str(entry.probe_dir)], capture_output=True).returncode


def test_a_removed_probe_dir_is_made_again_and_one_that_cannot_be_ends_the_run_with_one_line(entry_factory):
    entry = entry_factory()
    entry.probe_dir.mkdir(mode=0o750)
    entry.probe_dir.chmod(0o750)
    entry.start().wait_ready()
    shutil.rmtree(entry.probe_dir)
    line = f"llm-entry | probe dir {entry.probe_dir} was removed: made it again (mode 750) with the probe files"
    wait_for(lambda: line in entry.output(), 10, "the line that says the probe dir was made again")
    wait_for(lambda: readiness_probe(entry) == 0, 10, "the readiness probe to pass again")
    assert stat.S_IMODE(entry.probe_dir.stat().st_mode) == 0o750
    assert entry.output().count(line) == 1
    entry.record_tree()
    shutil.rmtree(entry.probe_dir)
    entry.probe_dir.write_text("a file where the folder was\n")
    assert entry.wait_exit(60) == EXIT_BAD_CONFIG, entry.output()
    assert (f"llm-entry: probe dir {entry.probe_dir} was replaced and cannot be made again (File exists): "
            "no probe can see this container; stopping\n") in entry.stderr()
    assert "Traceback" not in entry.output()
    entry.assert_nothing_left()
