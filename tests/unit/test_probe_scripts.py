"""The Kubernetes exec probes (probes/readiness, liveness, startup) run as
subprocesses under every POSIX shell on the machine, against probe folders in
each state the monitor can leave behind."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from entrypoint.probe_files import HEARTBEAT, NOT_HEALTHY, NOT_READY, ProbeFiles

from repo_paths import REPO

PROBES = REPO / "probes"
PROBE_NAMES = ("readiness", "liveness", "startup")
BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}


def available_shells() -> list[str]:
    """`sh` always; dash, bash and busybox sh wherever the machine has them;
    "direct" runs the script through its own #! line."""
    shells = ["sh", "direct"]
    for name in ("dash", "bash", "busybox"):
        if shutil.which(name):
            shells.append(name)
    return shells


SHELLS = available_shells()


def run_probe(name: str, shell: str, probe_dir: Path | None, env_dir: Path | None) -> subprocess.CompletedProcess:
    script = str(PROBES / name)
    if shell == "direct":
        argv = [script]
    elif shell == "busybox":
        argv = ["busybox", "sh", script]
    else:
        argv = [shell, script]
    if probe_dir is not None:
        argv.append(str(probe_dir))
    env = dict(BASE_ENV)
    if env_dir is not None:
        env["LLM_ENTRY_PROBE_DIR"] = str(env_dir)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)


def exit_codes(folder: Path, shell: str = "sh", via: str = "argument") -> dict[str, int]:
    probe_dir, env_dir = (folder, None) if via == "argument" else (None, folder)
    return {name: run_probe(name, shell, probe_dir, env_dir).returncode for name in PROBE_NAMES}


def make_probe_dir(folder: Path, heartbeat: str | None, not_ready: str | None = None,
                   not_healthy: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if heartbeat is not None:
        (folder / HEARTBEAT).write_text(heartbeat)
    if not_ready is not None:
        (folder / NOT_READY).write_text(not_ready)
    if not_healthy is not None:
        (folder / NOT_HEALTHY).write_text(not_healthy)
    return folder


def fresh() -> str:
    return f"{int(time.time()) + 60}\n"


def stale() -> str:
    return f"{int(time.time()) - 60}\n"


# state -> (files, expected readiness, liveness, startup)
STATES = {
    "ready": (lambda: (fresh(), None, None), (0, 0, 0)),
    "starting": (lambda: (fresh(), "starting\n", None), (1, 0, 1)),
    "not healthy": (lambda: (fresh(), "engine exited\n", "engine exited\n"), (1, 1, 1)),
    "only not-healthy": (lambda: (fresh(), None, "engine exited\n"), (0, 1, 1)),
    "stale heartbeat": (lambda: (stale(), None, None), (1, 1, 1)),
    "stale heartbeat while starting": (lambda: (stale(), "starting\n", None), (1, 1, 1)),
    "prepared only": (lambda: ("0\n", None, None), (1, 1, 1)),
    "missing heartbeat": (lambda: (None, None, None), (1, 1, 1)),
    "empty heartbeat": (lambda: ("", None, None), (1, 1, 1)),
    "blank heartbeat": (lambda: ("\n", None, None), (1, 1, 1)),
    "garbage heartbeat": (lambda: ("soon\n", None, None), (1, 1, 1)),
    "heartbeat with a suffix": (lambda: (fresh().strip() + "x\n", None, None), (1, 1, 1)),
    "negative heartbeat": (lambda: ("-99999999999\n", None, None), (1, 1, 1)),
}


@pytest.mark.parametrize("via", ["argument", "variable"])
@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("state", list(STATES))
def test_each_probe_exits_as_the_state_demands(tmp_path: Path, state: str, shell: str, via: str) -> None:
    files, expected = STATES[state]
    folder = make_probe_dir(tmp_path / "probe dir", *files())
    assert exit_codes(folder, shell, via) == dict(zip(PROBE_NAMES, expected, strict=False))


def test_the_argument_wins_over_the_variable(tmp_path: Path) -> None:
    ready = make_probe_dir(tmp_path / "ready", fresh())
    starting = make_probe_dir(tmp_path / "starting", fresh(), "starting\n")
    assert run_probe("readiness", "sh", ready, starting).returncode == 0
    assert run_probe("readiness", "sh", starting, ready).returncode == 1


def test_a_missing_probe_dir_fails_every_probe(tmp_path: Path) -> None:
    assert exit_codes(tmp_path / "nowhere") == {"readiness": 1, "liveness": 1, "startup": 1}


def test_without_argument_or_variable_the_probes_read_etc_probe(tmp_path: Path) -> None:
    if Path("/etc/probe").exists():
        pytest.skip("/etc/probe exists on this machine")
    result = run_probe("readiness", "sh", None, None)
    assert result.returncode == 1
    assert "no heartbeat in /etc/probe" in result.stderr


def test_readiness_tells_why_it_is_not_ready(tmp_path: Path) -> None:
    folder = make_probe_dir(tmp_path / "probe", fresh(), "engine starting (12 s): connection refused\n")
    result = run_probe("readiness", "sh", folder, None)
    assert result.returncode == 1
    assert result.stderr == "not-ready: engine starting (12 s): connection refused\n"
    assert result.stdout == ""


def test_liveness_tells_why_a_restart_is_needed(tmp_path: Path) -> None:
    folder = make_probe_dir(tmp_path / "probe", fresh(), "hung\n", "engine has not passed a check for 31 s\n")
    result = run_probe("liveness", "sh", folder, None)
    assert result.returncode == 1
    assert result.stderr == "not-healthy: engine has not passed a check for 31 s\n"


def test_a_stale_heartbeat_says_the_monitor_is_stuck(tmp_path: Path) -> None:
    folder = make_probe_dir(tmp_path / "probe", stale())
    result = run_probe("liveness", "sh", folder, None)
    assert result.returncode == 1
    assert "heartbeat stale by" in result.stderr
    assert "monitor is stuck or gone" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("name", PROBE_NAMES)
def test_an_empty_heartbeat_fails_every_probe_and_says_why(tmp_path: Path, shell: str, name: str) -> None:
    folder = make_probe_dir(tmp_path / "probe", "")
    result = run_probe(name, shell, folder, None)
    assert (result.returncode, result.stderr) == (
        1, f"heartbeat in {folder} is empty (llm-entry never writes it so): is another process writing there?\n")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("name", PROBE_NAMES)
def test_an_expired_heartbeat_says_llm_entry_has_exited_and_why(tmp_path: Path, shell: str, name: str) -> None:
    folder = make_probe_dir(tmp_path / "probe", "0\n", "stopped; exit code 0\n")
    result = run_probe(name, shell, folder, None)
    assert (result.returncode, result.stderr) == (1, "llm-entry has exited: stopped; exit code 0\n")


def test_a_heartbeat_that_is_no_time_says_so(tmp_path: Path) -> None:
    folder = make_probe_dir(tmp_path / "probe", "soon\n")
    result = run_probe("liveness", "sh", folder, None)
    assert (result.returncode, result.stderr) == (
        1, f"heartbeat in {folder} is not a Unix time: is another process writing there?\n")


def test_a_ready_probe_prints_nothing(tmp_path: Path) -> None:
    folder = make_probe_dir(tmp_path / "probe", fresh())
    for name in PROBE_NAMES:
        result = run_probe(name, "sh", folder, None)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_heartbeat_without_a_final_newline_is_still_read(tmp_path: Path) -> None:
    folder = make_probe_dir(tmp_path / "probe", fresh().strip())
    assert exit_codes(folder) == {"readiness": 0, "liveness": 0, "startup": 0}


# --- the files ProbeFiles writes, read by the real scripts ----------------------

@pytest.mark.parametrize("state,expected", [
    (("starting", None), (1, 0, 1)),
    ((None, None), (0, 0, 0)),
    (("engine failing checks (2 in a row)", None), (1, 0, 1)),
    (("engine exited with status 1", "engine exited with status 1"), (1, 1, 1)),
    (("shutting down: SIGTERM", None), (1, 0, 1)),
])
def test_the_probes_read_what_probe_files_show(tmp_path: Path, state: tuple, expected: tuple) -> None:
    files = ProbeFiles(tmp_path / "probe", heartbeat_ttl=15.0)
    files.prepare()
    assert exit_codes(files.dir) == {"readiness": 1, "liveness": 1, "startup": 1}
    files.show(*state)
    assert exit_codes(files.dir) == dict(zip(PROBE_NAMES, expected, strict=False))


def test_after_llm_entry_expired_the_heartbeat_every_probe_fails(tmp_path: Path) -> None:
    files = ProbeFiles(tmp_path / "probe", heartbeat_ttl=15.0)
    files.prepare()
    files.show(None, None)
    files.expire("stopped; exit code 0")
    assert exit_codes(files.dir) == {"readiness": 1, "liveness": 1, "startup": 1}


# --- however Kubernetes or an operator names the script -------------------------

def test_a_probe_run_from_its_own_folder_finds_its_helpers(tmp_path: Path) -> None:
    """`sh readiness DIR` inside probes/: $0 has no slash."""
    folder = make_probe_dir(tmp_path / "probe", fresh(), "starting\n")
    for name, expected in zip(PROBE_NAMES, (1, 0, 1), strict=False):
        result = subprocess.run(["sh", name, str(folder)], cwd=PROBES, env=BASE_ENV,
                                capture_output=True, text=True, timeout=10)
        assert (name, result.returncode) == (name, expected), result.stderr
        assert "common.sh" not in result.stderr


def test_a_probe_found_on_path_finds_its_helpers(tmp_path: Path) -> None:
    folder = make_probe_dir(tmp_path / "probe", fresh())
    env = dict(BASE_ENV, PATH=f"{PROBES}:{BASE_ENV['PATH']}")
    for name in PROBE_NAMES:
        result = subprocess.run([name, str(folder)], env=env, capture_output=True, text=True, timeout=10)
        assert (name, result.returncode, result.stderr) == (name, 0, "")


def test_a_probe_installed_in_a_folder_with_spaces_finds_its_helpers(tmp_path: Path) -> None:
    installed = tmp_path / "opt with spaces" / "probes"
    shutil.copytree(PROBES, installed)
    folder = make_probe_dir(tmp_path / "probe", fresh(), "starting\n", "engine exited\n")
    for name in PROBE_NAMES:
        result = subprocess.run([str(installed / name), str(folder)], env=BASE_ENV,
                                capture_output=True, text=True, timeout=10)
        assert (name, result.returncode) == (name, 1)
        assert "common.sh" not in result.stderr
