"""Signals from the first instant: llm-entry records SIGHUP, SIGTERM and
SIGINT from the moment its package is imported, so a SIGHUP at any moment of
the start never stops it, and a SIGTERM or SIGINT during the imports, while
the config is built or as the programs start stops it cleanly: exit 0,
nothing left running, no traceback. The config is made slow on purpose, by a
`nvidia-smi` on PATH that takes its time (llm-entry asks it how many GPUs the
node has), so that "while the config is built" is a moment a test can hit."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bench.procs import alive, cmdline, descendants, wait_for

from harness import Entry

SLOW_NVIDIA_SMI = "#!/bin/sh\nsleep 1.5\necho 'No devices were found'\nexit 6\n"
AFTER_SUPERVISORD = (0.1, 0.3, 0.6, 1.0)   # seconds: the programs are starting


def slow_config_entry(entry_factory, tmp_path: Path) -> Entry:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(SLOW_NVIDIA_SMI)
    smi.chmod(0o755)
    path = f"{folder}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    return entry_factory(env={"PATH": path})


def catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for `sig` (its SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (sig - 1) & 1)


def asking_nvidia_smi(entry: Entry) -> bool:
    return any(b"nvidia-smi" in b" ".join(cmdline(pid)) for pid in descendants(entry.pid))


def wait_for_moment(entry: Entry, moment: str) -> None:
    """Until llm-entry is at `moment` of its start."""
    if moment == "imports":    # the package is imported: nothing else may be yet
        wait_for(lambda: catches(entry.pid, signal.SIGHUP), 10, "llm-entry's first signal handlers")
    elif moment == "config":   # the config asks the node for its GPUs
        wait_for(lambda: asking_nvidia_smi(entry), 10, "llm-entry to ask nvidia-smi")
    else:                      # supervisord starts the programs
        wait_for(entry.supervisord_pid, 20, "supervisord under llm-entry", poll=0.01)


def test_sighup_at_any_moment_of_the_start_never_stops_llm_entry(entry_factory, tmp_path):
    entry = slow_config_entry(entry_factory, tmp_path).start()
    began = time.monotonic()
    for moment in ("imports", "config"):
        wait_for_moment(entry, moment)
        assert catches(entry.pid, signal.SIGHUP) and catches(entry.pid, signal.SIGTERM), moment
        entry.send(signal.SIGHUP)
    wait_for_moment(entry, "programs")
    started = time.monotonic()
    for after in AFTER_SUPERVISORD:
        wait_for(lambda after=after: time.monotonic() >= started + after, 5, f"{after} s after supervisord")
        entry.send(signal.SIGHUP)
    entry.wait_ready()
    assert entry.output().count("SIGHUP: there is no --api-keys-file to read again; ignored") >= 1
    assert time.monotonic() - began > 1.5, "the config was not slow: the moments prove nothing"
    assert entry.stop() == 0
    entry.assert_nothing_left()


@pytest.mark.parametrize("moment,sig", [
    ("imports", signal.SIGTERM), ("imports", signal.SIGINT), ("config", signal.SIGTERM),
    ("programs", signal.SIGTERM),
])
def test_a_stop_signal_at_any_moment_of_the_start_stops_llm_entry_cleanly(entry_factory, tmp_path, moment, sig):
    entry = slow_config_entry(entry_factory, tmp_path).start()
    entry.seen.add(entry.pid)
    wait_for_moment(entry, moment)
    entry.send(sig)
    assert entry.wait_exit(60) == 0, entry.output()
    assert "Traceback" not in entry.output()
    entry.assert_nothing_left()
    assert not alive(entry.pid)
    if moment != "programs":
        assert "stop requested before the start: nothing was started; exit code 0" in entry.output()
        assert entry.probe_text("heartbeat") in ("", "0\n")
