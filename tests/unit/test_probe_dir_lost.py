"""Unit tests of a probe dir removed or replaced under llm-entry: it is made
again with the mode it was prepared with and the files say again what they
said; one that cannot be made again raises ProbeDirLost, not a traceback."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from entrypoint.probe_files import HEARTBEAT, NOT_READY, ProbeDirLost, ProbeFiles

from fakes import FakeClock


def prepared(tmp_path: Path, said: list[str]) -> tuple[ProbeFiles, FakeClock]:
    folder = tmp_path / "probe"
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    clock = FakeClock(1_000_000.0)
    probes = ProbeFiles(folder, 15.0, clock=clock, say=said.append)
    probes.prepare()
    return probes, clock


def test_a_removed_probe_dir_is_made_again_as_it_was_with_not_ready_first(tmp_path: Path) -> None:
    said: list[str] = []
    probes, clock = prepared(tmp_path, said)
    probes.show("engine starting (3 s)", None)
    shutil.rmtree(probes.dir)
    clock.advance(1.0)
    probes.beat()
    assert stat.S_IMODE(probes.dir.stat().st_mode) == 0o750
    assert (probes.dir / NOT_READY).read_text() == "engine starting (3 s)\n"
    assert (probes.dir / HEARTBEAT).read_text() == f"{int(clock() + 15.0)}\n"
    assert said == [f"probe dir {probes.dir} was removed: made it again (mode 750) with the probe files"]


def test_a_probe_dir_replaced_by_an_empty_one_says_again_that_it_is_not_ready(tmp_path: Path) -> None:
    said: list[str] = []
    probes, clock = prepared(tmp_path, said)
    probes.show("proxy starting (1 s)", None)
    shutil.rmtree(probes.dir)
    probes.dir.mkdir()
    clock.advance(1.0)
    probes.beat()
    assert (probes.dir / NOT_READY).read_text() == "proxy starting (1 s)\n"
    assert said == [f"probe dir {probes.dir} was replaced: made it again (mode 750) with the probe files"]


def test_a_probe_dir_that_cannot_be_made_again_raises_probe_dir_lost(tmp_path: Path) -> None:
    probes, clock = prepared(tmp_path, [])
    probes.show(None, None)
    shutil.rmtree(probes.dir)
    probes.dir.write_text("a file where the folder was")
    clock.advance(1.0)
    with pytest.raises(ProbeDirLost, match=r"was replaced and cannot be made again \(File exists\)"):
        probes.beat()
