"""Unit tests of the key watch on bad days and under load: a keys file that
cannot be read or holds no keys is said once when that begins and once when
it ends, and shown in llm-entry's metrics; SIGHUP is taken by the watch's own
thread while the log forwarder works through a backlog."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from entrypoint.config import Config
from entrypoint.gpus import NodeGpus
from entrypoint.key_watch import RELOAD_MARKER, KeyWatch
from entrypoint.logs import LogForwarder, LogTail
from entrypoint.own_metrics import KEYS_FILE_USABLE, OwnMetrics

from fakes import GIB, ReloadRequests, make_config, model_folder, quiet_console

KEY_A = "team-a-5d1c9e7b3a8f2c6e4b0d"
KEY_B = "team-b-8e2f6a0c4d9b1e7a3c5f"


def config_for(tmp_path: Path, keys_file: Path | None = None) -> Config:
    return make_config(model_folder(tmp_path, "model", heads=8), api_keys_file=keys_file,
                       node_gpus=NodeGpus(0, "none"), memory=8 * GIB)


class Written:
    """The metrics file's last text."""

    def __init__(self) -> None:
        self.text = ""

    def __call__(self, path: Path, text: str) -> None:
        self.text = text

    def usable(self) -> str:
        return next(line for line in self.text.splitlines() if line.startswith(KEYS_FILE_USABLE + " "))


def break_by_deleting(path: Path) -> None:
    path.unlink()


def break_by_a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def break_with_garbage(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00\x81 not text")


def break_by_emptying(path: Path) -> None:
    path.write_text("")


def repair(path: Path) -> None:
    if path.is_dir():
        path.rmdir()
    path.write_text(f"{KEY_A}\n{KEY_B}\n")


@pytest.mark.parametrize("breaking,said", [
    (break_by_deleting, "warning: cannot read --api-keys-file {path} (No such file or directory)"),
    (break_by_a_folder, "warning: cannot read --api-keys-file {path} (Is a directory)"),
    (break_with_garbage, "warning: cannot read --api-keys-file {path} (not UTF-8 text)"),
    (break_by_emptying, "warning: --api-keys-file {path} holds no keys"),
])
def test_a_keys_file_that_gives_no_keys_is_said_once_and_shown_in_the_metrics_until_repaired(
        tmp_path: Path, breaking: Callable[[Path], None], said: str) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"{KEY_A}\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    screen, written = quiet_console(), Written()
    metrics = OwnMetrics(run_dir / "own.prom", ("engine", "proxy"), write=written)
    watch = KeyWatch(config_for(tmp_path, keys_file), screen.console, run_dir / RELOAD_MARKER, ReloadRequests(),
                     metrics)
    watch.poll()
    metrics.write()
    assert written.usable() == f"{KEYS_FILE_USABLE} 1.0" and "warning" not in screen.text()
    breaking(keys_file)
    for _ in range(3):
        watch.poll()
        watch.look()
    assert screen.text().count("warning") == 1
    assert f"llm-entry | {said.format(path=keys_file)}: only the master key works" in screen.text()
    assert written.usable() == f"{KEYS_FILE_USABLE} 0.0"
    repair(keys_file)
    watch.poll()
    watch.poll()
    assert screen.text().count(f"llm-entry | --api-keys-file {keys_file} gives keys again (2 keys)") == 1
    assert written.usable() == f"{KEYS_FILE_USABLE} 1.0"
    assert screen.console.redact(KEY_B) == "***"


def test_without_a_keys_file_the_metrics_have_no_keys_file_gauge(tmp_path: Path) -> None:
    written = Written()
    metrics = OwnMetrics(tmp_path / "own.prom", ("engine", "proxy"), write=written)
    KeyWatch(config_for(tmp_path), quiet_console().console, tmp_path / RELOAD_MARKER, ReloadRequests(), metrics)
    metrics.write()
    assert KEYS_FILE_USABLE not in written.text


def test_sighup_is_taken_within_a_second_while_the_forwarder_works_through_a_backlog(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"{KEY_A}\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = run_dir / "proxy.log"
    log.write_text("WARNING entrypoint.inside.refusals: refused POST /v1/chat/completions: wrong key\n" * 100_000)
    screen, requests = quiet_console(), ReloadRequests()
    marker = run_dir / RELOAD_MARKER
    watch = KeyWatch(config_for(tmp_path, keys_file), screen.console, marker, requests).start()
    forwarder = LogForwarder([LogTail("proxy", log, screen.console)], before_pump=watch.look)
    pumping = threading.Thread(target=forwarder.pump)
    pumping.start()
    try:
        watch.take_signals()
        first = marker.stat().st_ino
        requests.pending = True
        asked = time.monotonic()
        while marker.stat().st_ino == first:
            assert time.monotonic() - asked < 1.0, "SIGHUP waited for the log backlog"
            time.sleep(0.01)
        assert pumping.is_alive(), "the backlog was gone already: the test proves nothing"
    finally:
        watch.stop()
        pumping.join()
