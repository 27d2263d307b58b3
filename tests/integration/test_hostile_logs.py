"""llm-entry's own side under a flood of log lines and on bad days of the
keys file: SIGHUP applies at once however far behind the log is, SIGTERM
ends within --grace-period and says how many log lines it could not show,
and a keys file that gives no keys is said once, read 0 in the metrics, and
said again once repaired (issue: the public port under hostile traffic).

The flood is written into the proxy's log file in the private run folder,
as supervisord writes what the proxy prints: a proxy that logs faster than
the lines can be forwarded, without the test having to outrun the forwarder.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import requests

from bench.procs import wait_for

from harness import MASTER_KEY, Entry

KEY_A = "team-a-5d1c9e7b3a8f2c6e4b0d"
KEY_B = "team-b-8e2f6a0c4d9b1e7a3c5f"   # as long as KEY_A: the file keeps its size
FLOOD_LINE = b"WARNING entrypoint.inside.refusals: refused POST /v1/chat/completions from 10.0.0.7: wrong key\n"
FLOOD_LINES = 600_000   # ~60 MB: many seconds of forwarding
SIGHUP_DEADLINE = 3.0   # seconds from SIGHUP to the new key's first answer


def flood_the_proxy_log(entry: Entry) -> None:
    with (entry.run_dir() / "proxy.log").open("ab") as log:
        log.write(FLOOD_LINE * FLOOD_LINES)


def status_with(entry: Entry, key: str) -> int:
    return requests.get(entry.url("/v1/models"), headers=entry.headers(key), timeout=10).status_code


def replace_in_place_keeping_size_inode_and_time(path: Path, text: str) -> None:
    """What `cp -p` over the file does: only SIGHUP can tell the proxy."""
    before = path.stat()
    with path.open("r+") as file:
        file.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_sighup_applies_at_once_while_the_log_is_far_behind(entry_factory, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_A}\n")
    entry = entry_factory(args=["--api-keys-file", str(keys)])
    entry.start().wait_ready()
    assert status_with(entry, KEY_A) == 200
    flood_the_proxy_log(entry)
    replace_in_place_keeping_size_inode_and_time(keys, f"{KEY_B}\n")
    assert status_with(entry, KEY_B) == 401, "the proxy saw the change without SIGHUP: the test proves nothing"
    entry.send(signal.SIGHUP)
    asked = time.monotonic()
    wait_for(lambda: status_with(entry, KEY_B) == 200, SIGHUP_DEADLINE, "the new key to work after SIGHUP", poll=0.05)
    print(f"SIGHUP to the new key's first 200 under a log flood: {time.monotonic() - asked:.2f} s")
    assert status_with(entry, KEY_A) == 401
    assert entry.stop() == 0
    entry.assert_nothing_left()


def test_sigterm_with_a_log_backlog_ends_within_the_grace_period_and_says_what_was_not_shown(entry_factory):
    grace = 8.0
    entry = entry_factory(args=["--grace-period", str(grace)])
    entry.start().wait_ready()
    flood_the_proxy_log(entry)
    signalled = time.monotonic()
    entry.send(signal.SIGTERM)
    assert entry.wait_exit(60) == 0
    took = time.monotonic() - signalled
    print(f"SIGTERM to exit with a backlog of {FLOOD_LINES} log lines, --grace-period {grace:g}: {took:.1f} s")
    assert took < grace
    output = entry.output()
    assert " lines of the proxy's log were not shown (shutdown time budget)" in output
    assert output.rstrip().endswith("llm-entry | stopped; exit code 0")
    entry.assert_nothing_left()


def metrics_line(entry: Entry, name: str) -> str:
    page = requests.get(entry.url("/metrics"), headers=entry.headers(MASTER_KEY), timeout=10).text
    return next((line for line in page.splitlines() if line.startswith(name + " ")), "")


def deleted(path: Path) -> None:
    path.unlink()


def made_a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def garbage(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00\x81 not text\n")


def emptied(path: Path) -> None:
    path.write_text("")


def test_a_keys_file_that_gives_no_keys_is_said_once_shown_in_the_metrics_and_said_repaired(entry_factory, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_A}\n")
    entry = entry_factory(args=["--api-keys-file", str(keys)])
    entry.start().wait_ready()
    gauge = "llm_entry_keys_file_usable"
    assert metrics_line(entry, gauge) == f"{gauge} 1.0"
    said = {deleted: f"warning: cannot read --api-keys-file {keys} (No such file or directory)",
            made_a_folder: f"warning: cannot read --api-keys-file {keys} (Is a directory)",
            garbage: f"warning: cannot read --api-keys-file {keys} (not UTF-8 text)",
            emptied: f"warning: --api-keys-file {keys} holds no keys"}
    repaired = f"--api-keys-file {keys} gives keys again (1 key)"
    for number, (breaking, line) in enumerate(said.items(), start=1):
        breaking(keys)
        wait_for(lambda line=line: line in entry.output(), 10, f"the line for {breaking.__name__}")
        wait_for(lambda: metrics_line(entry, gauge) == f"{gauge} 0.0", 10, f"the gauge at 0 ({breaking.__name__})")
        wait_for(lambda: status_with(entry, KEY_A) == 401, 10, f"the file's key refused ({breaking.__name__})")
        assert status_with(entry, MASTER_KEY) == 200
        if keys.is_dir():
            keys.rmdir()
        keys.write_text(f"{KEY_A}\n")
        wait_for(lambda number=number: entry.output().count(repaired) == number, 10, "the line of the repair")
        wait_for(lambda: metrics_line(entry, gauge) == f"{gauge} 1.0", 10, "the gauge at 1 again")
        wait_for(lambda: status_with(entry, KEY_A) == 200, 10, "the file's key working again")
        assert entry.output().count(line) == 1, breaking.__name__
    assert entry.stop() == 0
    entry.assert_nothing_left()
