"""Unit tests of the probe files with a fake clock: which files exist, what
they say, the heartbeat's deadline, and that no temp file is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from entrypoint.errors import EXIT_BAD_CONFIG, EntryError
from entrypoint.probe_files import EXPIRED, HEARTBEAT, NOT_HEALTHY, NOT_READY, ProbeFiles, write_atomically

from fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.4)


@pytest.fixture
def probes(tmp_path: Path, clock: FakeClock) -> ProbeFiles:
    files = ProbeFiles(tmp_path / "probe", heartbeat_ttl=15.0, clock=clock)
    files.prepare()
    return files


def contents(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.iterdir())}


def test_prepare_creates_the_folder_saying_not_ready_before_any_heartbeat(tmp_path: Path, clock: FakeClock) -> None:
    files = ProbeFiles(tmp_path / "a" / "b" / "probe", heartbeat_ttl=15.0, clock=clock)
    files.prepare()
    # A probe that only tests `! -e not-ready` must not see "ready" here.
    assert contents(tmp_path / "a" / "b" / "probe") == {NOT_READY: "starting\n"}


def test_prepare_in_an_existing_folder_keeps_it(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "other").write_text("kept\n")
    ProbeFiles(tmp_path, heartbeat_ttl=15.0, clock=clock).prepare()
    assert contents(tmp_path) == {NOT_READY: "starting\n", "other": "kept\n"}


def test_prepare_under_a_regular_file_is_refused_with_the_way_out(tmp_path: Path, clock: FakeClock) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    files = ProbeFiles(blocker / "probe", heartbeat_ttl=15.0, clock=clock)
    with pytest.raises(EntryError) as raised:
        files.prepare()
    assert raised.value.exit_code == EXIT_BAD_CONFIG
    assert raised.value.message.startswith(f"probe dir {blocker / 'probe'} is not writable (Not a directory)")
    assert "--probe-dir (LLM_ENTRY_PROBE_DIR)" in raised.value.message


def test_prepare_on_a_probe_dir_that_is_a_file_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    blocker = tmp_path / "probe"
    blocker.write_text("")
    with pytest.raises(EntryError, match="is not writable"):
        ProbeFiles(blocker, heartbeat_ttl=15.0, clock=clock).prepare()


def test_starting_shows_not_ready_with_its_reason(probes: ProbeFiles) -> None:
    probes.show("starting", None)
    assert contents(probes.dir) == {HEARTBEAT: "1700000015\n", NOT_READY: "starting\n"}


def test_ready_removes_not_ready(probes: ProbeFiles) -> None:
    probes.show("starting", None)
    probes.show(None, None)
    assert contents(probes.dir) == {HEARTBEAT: "1700000015\n"}


def test_a_fatal_state_shows_both_files(probes: ProbeFiles) -> None:
    probes.show(None, None)
    probes.show("engine exited", "engine exited with status 1")
    assert contents(probes.dir) == {
        HEARTBEAT: "1700000015\n",
        NOT_READY: "engine exited\n",
        NOT_HEALTHY: "engine exited with status 1\n",
    }


def test_a_recovered_state_removes_both_files(probes: ProbeFiles) -> None:
    probes.show("hung", "hung")
    probes.show(None, None)
    assert set(contents(probes.dir)) == {HEARTBEAT}


def test_a_new_reason_replaces_the_old_text(probes: ProbeFiles) -> None:
    probes.show("starting", None)
    probes.show("engine failing checks (2 in a row)", None)
    assert (probes.dir / NOT_READY).read_text() == "engine failing checks (2 in a row)\n"


def test_a_reason_ending_in_newlines_gets_exactly_one(probes: ProbeFiles) -> None:
    probes.show("shutting down\n\n", None)
    assert (probes.dir / NOT_READY).read_text() == "shutting down\n"


def test_stale_files_from_an_earlier_run_are_cleared_by_the_first_show(tmp_path: Path, clock: FakeClock) -> None:
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / NOT_HEALTHY).write_text("hung\n")
    (folder / NOT_READY).write_text("hung\n")
    files = ProbeFiles(folder, heartbeat_ttl=15.0, clock=clock)
    files.prepare()
    files.show(None, None)
    assert set(contents(folder)) == {HEARTBEAT}


def test_the_heartbeat_is_the_clock_plus_the_ttl_truncated(probes: ProbeFiles, clock: FakeClock) -> None:
    clock.now = 1_700_000_100.9
    probes.show(None, None)
    assert (probes.dir / HEARTBEAT).read_text() == f"{int(1_700_000_100.9 + 15.0)}\n"


def test_the_heartbeat_moves_with_the_clock(probes: ProbeFiles, clock: FakeClock) -> None:
    probes.show(None, None)
    clock.now += 7
    probes.beat()
    assert (probes.dir / HEARTBEAT).read_text() == "1700000022\n"
    clock.now += 3
    probes.show(None, None)
    assert (probes.dir / HEARTBEAT).read_text() == "1700000025\n"


def test_the_same_second_does_not_rewrite_the_heartbeat(probes: ProbeFiles, clock: FakeClock) -> None:
    probes.beat()
    before = os.stat(probes.dir / HEARTBEAT).st_ino
    clock.now += 0.1
    probes.beat()
    assert os.stat(probes.dir / HEARTBEAT).st_ino == before


def test_expiring_stops_the_heartbeat_vouching_at_once_and_says_why(probes: ProbeFiles) -> None:
    probes.show("shutting down: received SIGTERM", None)
    probes.expire("stopped; exit code 0")
    assert EXPIRED == 0
    assert contents(probes.dir) == {HEARTBEAT: "0\n", NOT_READY: "stopped; exit code 0\n"}


def test_expiring_after_a_failure_keeps_not_healthy(probes: ProbeFiles) -> None:
    probes.show("engine exited (exit status 1)", "engine exited (exit status 1)")
    probes.expire("stopped; exit code 3 (engine exited (exit status 1))")
    assert contents(probes.dir) == {HEARTBEAT: "0\n", NOT_HEALTHY: "engine exited (exit status 1)\n",
                                    NOT_READY: "stopped; exit code 3 (engine exited (exit status 1))\n"}


def test_once_expired_no_beat_or_second_expiry_vouches_again(probes: ProbeFiles, clock: FakeClock) -> None:
    probes.show(None, None)
    probes.expire("stopped; exit code 0")
    clock.now += 5
    probes.beat()
    probes.expire("stopped: llm-entry failed, see its last lines on stderr")
    assert contents(probes.dir) == {HEARTBEAT: "0\n", NOT_READY: "stopped; exit code 0\n"}


def test_no_temp_file_is_left_behind(probes: ProbeFiles, clock: FakeClock) -> None:
    for step, state in enumerate([("starting", None), (None, None), ("x", "y"), (None, None), ("bye", None)]):
        clock.now += step
        probes.show(*state)
        assert all(not name.startswith(".") and not name.endswith(".tmp") for name in os.listdir(probes.dir))


def test_an_atomic_write_replaces_the_file_rather_than_rewriting_it(tmp_path: Path) -> None:
    target = tmp_path / "not-ready"
    target.write_text("old\n")
    reader = open(target)  # a probe that opened the old file keeps reading the old text whole
    try:
        write_atomically(target, "new\n")
        assert reader.read() == "old\n"
    finally:
        reader.close()
    assert target.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["not-ready"]

