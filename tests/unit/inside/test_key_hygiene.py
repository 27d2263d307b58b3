"""Unit tests of llm-entry's own key hygiene: log redaction (known keys and
key headers), redaction that follows --api-keys-file, SIGHUP as a reload that
never stops llm-entry, the reload marker the proxy watches, the internal key,
and the warning for a master key on the command line."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from entrypoint.config import Config
from entrypoint.console import Console
from entrypoint.gpus import NodeGpus
from entrypoint.key_watch import RELOAD_MARKER, KeyWatch
from entrypoint.keys import new_internal_key
from entrypoint.logs import LogForwarder, LogTail
from entrypoint.run import announce
from entrypoint.signals import SignalQueue

from fakes import GIB, MASTER_KEY, ReloadRequests, make_config, model_folder, quiet_console

KEY_A = "team-a-5d1c9e7b3a8f2c6e4b0d"
KEY_B = "team-b-8e2f6a0c4d9b1e7a3c5f"
KEY_C = "team-c-1a7e4c9b2d6f0a3e8c5b"


def config_for(tmp_path: Path, keys_file: Path | None = None, **options) -> Config:
    """A CPU node's config for a small local model, with `keys_file` as --api-keys-file."""
    return make_config(model_folder(tmp_path, "model", heads=8), api_keys_file=keys_file,
                       node_gpus=NodeGpus(0, "none"), memory=8 * GIB, **options)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(f"# team a\n{KEY_A}\n")
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    return folder


# --- redaction by pattern ---------------------------------------------------------

@pytest.mark.parametrize("line,shown", [
    ("Authorization: Bearer sk-unknown-1234567890", "Authorization: Bearer ***"),
    ("headers={'authorization': 'Bearer sk-unknown-1', 'x-api-key': 'k2'}",
     "headers={'authorization': 'Bearer ***', 'x-api-key': '***'}"),
    ('{"Authorization": "Bearer abc.def", "api-key": "zzz"}', '{"Authorization": "Bearer ***", "api-key": "***"}'),
    ("x-api-key: wrong-key-123", "x-api-key: ***"),
    ("API-KEY: wrong-key-123 rest", "API-KEY: *** rest"),
    ("[(b'host', b'proxy'), (b'authorization', b'Bearer sk-zz')]",
     "[(b'host', b'proxy'), (b'authorization', b'Bearer ***')]"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
])
def test_key_header_values_are_masked_in_any_line(line: str, shown: str) -> None:
    screen = quiet_console()
    screen.console.line("proxy", line)
    assert screen.text() == f"proxy     | {shown}\n"


@pytest.mark.parametrize("line", [
    "No API key: send it as 'Authorization: Bearer <key>' (or in an 'x-api-key' or 'api-key' header).",
    "Malformed Authorization header: expected a bearer token",
    "INFO: 127.0.0.1 GET /v1/models 200",
])
def test_lines_without_a_key_value_are_left_alone(line: str) -> None:
    assert Console().redact(line) == line


def test_known_keys_are_masked_anywhere_in_a_line() -> None:
    console = Console()
    console.hide(KEY_A)
    assert console.redact(f"prompt was {KEY_A}!") == "prompt was ***!"


# --- redaction follows the keys file -------------------------------------------

def test_the_keys_of_the_config_are_hidden_from_the_start(tmp_path: Path, keys_file: Path, run_dir: Path) -> None:
    screen = quiet_console()
    KeyWatch(config_for(tmp_path, keys_file), screen.console, run_dir / RELOAD_MARKER, ReloadRequests())
    assert screen.console.redact(KEY_A) == "***"


def test_a_key_added_to_the_file_is_hidden_before_the_next_line_is_printed(
        tmp_path: Path, keys_file: Path, run_dir: Path) -> None:
    screen = quiet_console()
    watch = KeyWatch(config_for(tmp_path, keys_file), screen.console, run_dir / RELOAD_MARKER, ReloadRequests()).start()
    log = run_dir / "proxy.log"
    log.write_text("")
    forwarder = LogForwarder([LogTail("proxy", log, screen.console)], before_pump=watch.poll)
    forwarder.pump()
    keys_file.write_text(f"{KEY_A}\n{KEY_B}\n")
    log.write_text(f"a line that shows {KEY_B}\n")
    forwarder.pump()
    assert KEY_B not in screen.text()
    assert "a line that shows ***" in screen.text()


def test_a_key_removed_from_the_file_stays_hidden(tmp_path: Path, keys_file: Path, run_dir: Path) -> None:
    screen = quiet_console()
    watch = KeyWatch(config_for(tmp_path, keys_file), screen.console, run_dir / RELOAD_MARKER, ReloadRequests())
    keys_file.write_text(f"{KEY_B}\n")
    watch.poll()
    assert screen.console.redact(f"{KEY_A} {KEY_B}") == "*** ***"


def test_weak_keys_are_not_hidden_since_they_open_nothing(tmp_path: Path, keys_file: Path, run_dir: Path) -> None:
    screen = quiet_console()
    watch = KeyWatch(config_for(tmp_path, keys_file), screen.console, run_dir / RELOAD_MARKER, ReloadRequests())
    keys_file.write_text(f"{KEY_A}\ntest\n")
    watch.poll()
    assert screen.console.redact("a test line") == "a test line"


def test_the_key_of_a_line_set_aside_for_a_bad_field_is_still_hidden(
        tmp_path: Path, keys_file: Path, run_dir: Path) -> None:
    screen = quiet_console()
    watch = KeyWatch(config_for(tmp_path, keys_file), screen.console, run_dir / RELOAD_MARKER, ReloadRequests())
    keys_file.write_text(f"{KEY_A} name=team-a\n{KEY_B} name=team-b rpm=0\n")
    watch.poll()
    assert screen.console.redact(f"{KEY_A} {KEY_B}") == "*** ***"


def test_the_keys_of_named_and_limited_lines_are_hidden_from_the_start(tmp_path: Path, run_dir: Path) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"{KEY_A} name=team-a rpm=5\n{KEY_B} tpm=1000 max_parallel=2\n")
    screen = quiet_console()
    KeyWatch(config_for(tmp_path, keys_file), screen.console, run_dir / RELOAD_MARKER, ReloadRequests())
    assert screen.console.redact(f"{KEY_A} {KEY_B} team-a") == "*** *** team-a"


def test_a_keys_file_that_vanished_keeps_its_keys_hidden_and_raises_nothing(
        tmp_path: Path, keys_file: Path, run_dir: Path) -> None:
    screen = quiet_console()
    watch = KeyWatch(config_for(tmp_path, keys_file), screen.console, run_dir / RELOAD_MARKER, ReloadRequests())
    keys_file.unlink()
    watch.poll()
    watch.poll()
    assert screen.console.redact(KEY_A) == "***"


# --- SIGHUP ----------------------------------------------------------------------

@pytest.fixture
def restore_signals():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_sighup_is_a_reload_request_not_a_shutdown(restore_signals) -> None:
    signals = SignalQueue().install()
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGHUP)
    assert signals.pop() is None
    assert signals.take_reload() is True
    assert signals.take_reload() is False, "two SIGHUPs before a look count as one"
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.pop() == signal.SIGTERM


def test_sighup_reads_the_file_and_replaces_the_marker(tmp_path: Path, keys_file: Path, run_dir: Path) -> None:
    screen, requests = quiet_console(), ReloadRequests()
    marker = run_dir / RELOAD_MARKER
    watch = KeyWatch(config_for(tmp_path, keys_file), screen.console, marker, requests).start()
    before = marker.stat().st_ino
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    watch.poll()
    assert marker.stat().st_ino == before, "no SIGHUP, no new marker"
    keys_file.write_text(f"{KEY_A}\n{KEY_C}\n")
    requests.pending = True
    watch.poll()
    assert marker.stat().st_ino != before
    assert screen.console.redact(KEY_C) == "***"
    assert "llm-entry | SIGHUP: read --api-keys-file again (2 keys)" in screen.text()
    assert [p.name for p in run_dir.iterdir()] == [RELOAD_MARKER]


def test_sighup_without_a_keys_file_is_ignored_with_a_line(tmp_path: Path, run_dir: Path) -> None:
    screen, requests = quiet_console(), ReloadRequests()
    watch = KeyWatch(config_for(tmp_path), screen.console, run_dir / RELOAD_MARKER, requests).start()
    requests.pending = True
    watch.poll()
    assert screen.text() == "llm-entry | SIGHUP: there is no --api-keys-file to read again; ignored\n"


# --- the internal key and the master key's warning -----------------------------

def test_the_internal_key_differs_at_every_start() -> None:
    keys = {new_internal_key().reveal() for _ in range(20)}
    assert len(keys) == 20
    assert all(key.startswith("sk-internal-") and len(key) >= 40 for key in keys)


def test_a_master_key_from_the_command_line_is_warned_about_at_start(tmp_path: Path) -> None:
    screen = quiet_console()
    announce(config_for(tmp_path, master_key_on_command_line=True), screen.console)
    first = screen.out.getvalue().splitlines()[0]
    assert first.startswith("llm-entry | warning: --master-key on the command line is visible to anyone")
    assert MASTER_KEY not in screen.text()
