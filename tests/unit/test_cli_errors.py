"""The installed `llm-entry` run as a subprocess on bad input: exit code 2, one
line on stderr, no key on stdout, nothing started; plus --help and --dry-run.

Every run gets a fake `nvidia-smi` (6 GPUs) first on PATH, free ports on
127.0.0.1 and a probe folder under tmp_path, so nothing here can reach a real
GPU, port or /etc/probe.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import free_port, free_ports
from entrypoint.cli import command

from fakes import MASTER_KEY, model_folder

VENV_BIN = Path(sys.executable).parent
SIX_GPUS = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-5d1c0b6e-7a4b-9f7c-1e2d-0000000000{i:02d})\n"
                   for i in range(6))


def llm_entry() -> list[str]:
    found = shutil.which("llm-entry", path=str(VENV_BIN)) or shutil.which("llm-entry")
    return [found] if found else [sys.executable, "-m", "entrypoint.cli"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The test runner's environment without anything llm-entry reads, a fake nvidia-smi first on PATH."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    tool = fake_bin / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{SIX_GPUS}EOF\n")
    tool.chmod(0o755)
    ignored = ("LLM_ENTRY_", "LITELLM_", "VLLM_", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
               "OPENBAYES_SERVING_PRODUCTION", "KUBERNETES_SERVICE_HOST")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ignored)}
    clean["PATH"] = os.pathsep.join([str(fake_bin), str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"])
    clean["HOME"] = str(tmp_path / "home")
    return clean


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return model_folder(tmp_path)


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    return tmp_path / "probe"


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(llm_entry() + args, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd=cwd)


def assert_refused(result: subprocess.CompletedProcess, probe_dir: Path) -> str:
    """Exit 2, one `llm-entry:` line on stderr, no key shown, nothing started; returns the line."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llm-entry: ")
    assert result.stdout == ""
    assert MASTER_KEY not in result.stderr
    assert not probe_dir.exists()
    return lines[0]


def serve_args(model_dir: Path, probe_dir: Path, *extra: str) -> list[str]:
    public_port, engine_port = free_ports(2)
    return ["--model", str(model_dir), "--host", "127.0.0.1", "--port", str(public_port),
            "--engine-port", str(engine_port), "--probe-dir", str(probe_dir), *extra]


def test_no_model_is_refused(env: dict[str, str], probe_dir: Path) -> None:
    result = run(["--master-key", MASTER_KEY, "--probe-dir", str(probe_dir)], env)
    assert assert_refused(result, probe_dir) == "llm-entry: Missing option '--model'. (see llm-entry --help)"


def test_a_missing_model_folder_is_refused(env: dict[str, str], tmp_path: Path, probe_dir: Path) -> None:
    result = run(["--model", str(tmp_path / "absent"), "--master-key", MASTER_KEY, "--probe-dir", str(probe_dir)], env)
    refusal = assert_refused(result, probe_dir)
    assert refusal.startswith(f"llm-entry: model directory {tmp_path / 'absent'} does not exist")


def test_a_mistyped_relative_model_path_is_refused_not_taken_for_a_hub_id(env: dict[str, str], tmp_path: Path,
                                                                         probe_dir: Path) -> None:
    (tmp_path / "models").mkdir()
    result = run(["--model", "models/llama", "--master-key", MASTER_KEY, "--probe-dir", str(probe_dir)], env,
                 cwd=tmp_path)
    assert assert_refused(result, probe_dir) == (
        "llm-entry: model directory models/llama does not exist, though the folder models does: fix the path "
        "(llm-entry takes org/name for a hub id only when no folder named org is here).")


def test_a_hub_id_is_refused_when_hf_hub_offline_is_set_and_it_is_not_cached(env: dict[str, str], tmp_path: Path,
                                                                            probe_dir: Path) -> None:
    result = run(["--model", "org/llama", "--master-key", MASTER_KEY, "--probe-dir", str(probe_dir)],
                 {**env, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    line = assert_refused(result, probe_dir)
    assert line.startswith("llm-entry: --model org/llama is no folder here and, as a hub id, not in the hub cache ")
    assert line.endswith("and HF_HUB_OFFLINE=1 forbids downloading it: fix the path, or download the model into "
                         "that cache, or unset HF_HUB_OFFLINE.")


def test_no_master_key_is_refused(env: dict[str, str], model_dir: Path, probe_dir: Path) -> None:
    result = run(serve_args(model_dir, probe_dir), env)
    assert assert_refused(result, probe_dir).startswith("llm-entry: no master key:")


@pytest.mark.parametrize("key", ["sk-1234", "short-key"])
def test_a_weak_master_key_is_refused(env: dict[str, str], model_dir: Path, probe_dir: Path, key: str) -> None:
    result = run(serve_args(model_dir, probe_dir, "--master-key", key), env)
    line = assert_refused(result, probe_dir)
    assert line.startswith("llm-entry: the master key from --master-key ")
    assert key not in line


@pytest.mark.parametrize("variable", ["LLM_ENTRY_MASTER_KEY", "LITELLM_MASTER_KEY"])
def test_a_weak_master_key_from_a_variable_is_refused_naming_that_variable(
        env: dict[str, str], model_dir: Path, probe_dir: Path, variable: str) -> None:
    result = run(serve_args(model_dir, probe_dir), {**env, variable: "sk-1234"})
    assert assert_refused(result, probe_dir) == (
        f"llm-entry: the master key from {variable} is a well-known example key: use a random key of at least "
        "16 characters (openssl rand -hex 24).")


def test_a_port_that_is_not_a_number_is_refused(env: dict[str, str], model_dir: Path, probe_dir: Path) -> None:
    result = run(["--model", str(model_dir), "--master-key", MASTER_KEY, "--port", "abc",
                  "--probe-dir", str(probe_dir)], env)
    assert assert_refused(result, probe_dir) == (
        "llm-entry: Invalid value for '--port': 'abc' is not a valid integer. (see llm-entry --help)")


def test_a_port_from_its_variable_is_checked_like_the_flag(env: dict[str, str], model_dir: Path,
                                                           probe_dir: Path) -> None:
    result = run(["--model", str(model_dir), "--probe-dir", str(probe_dir)],
                 {**env, "LLM_ENTRY_PORT": "abc", "LLM_ENTRY_MASTER_KEY": MASTER_KEY})
    assert "'abc' is not a valid integer" in assert_refused(result, probe_dir)


def test_an_unknown_option_is_refused(env: dict[str, str], model_dir: Path, probe_dir: Path) -> None:
    result = run(["--model", str(model_dir), "--master-key", MASTER_KEY, "--bogus", "--probe-dir", str(probe_dir)], env)
    assert "No such option '--bogus'" in assert_refused(result, probe_dir)


def run_with_a_busy(flag: str, env: dict[str, str], model_dir: Path, probe_dir: Path) -> tuple[int, str]:
    """Run with `flag` (--port or --engine-port) on a port something listens on, the other one free:
    the busy port, and the line llm-entry refuses with."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = "--engine-port" if flag == "--port" else "--port"
        ports = {flag: port, other: free_port()}
        result = run(["--model", str(model_dir), "--master-key", MASTER_KEY, "--host", "127.0.0.1",
                      "--port", str(ports["--port"]), "--engine-port", str(ports["--engine-port"]),
                      "--probe-dir", str(probe_dir)], env)
    return port, assert_refused(result, probe_dir)


def test_a_port_in_use_is_refused_before_anything_starts(env: dict[str, str], model_dir: Path,
                                                         probe_dir: Path) -> None:
    port, line = run_with_a_busy("--port", env, model_dir, probe_dir)
    assert line == (f"llm-entry: --port {port} is already in use on 127.0.0.1: stop what listens there "
                    "or choose another port with --port.")


def test_an_engine_port_in_use_is_refused_before_anything_starts(env: dict[str, str], model_dir: Path,
                                                                probe_dir: Path) -> None:
    port, line = run_with_a_busy("--engine-port", env, model_dir, probe_dir)
    assert f"--engine-port {port} is already in use" in line


def test_an_unknown_engine_command_is_refused_before_anything_starts(env: dict[str, str], model_dir: Path,
                                                                     probe_dir: Path) -> None:
    result = run(serve_args(model_dir, probe_dir, "--master-key", MASTER_KEY, "--engine-cmd", "/nonexistent/engine"),
                 env)
    assert assert_refused(result, probe_dir).startswith(
        "llm-entry: engine command '/nonexistent/engine' was not found:")


def test_a_probe_dir_that_cannot_be_created_is_refused(env: dict[str, str], model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    probe_dir = blocker / "probe"
    # An engine command that exists and is not vLLM, so pre-flight passes whether or not vLLM is installed.
    result = run(serve_args(model_dir, probe_dir, "--master-key", MASTER_KEY, "--engine-cmd", "/bin/false"), env)
    line = assert_refused(result, probe_dir)
    assert line.startswith(f"llm-entry: probe dir {probe_dir} is not writable (Not a directory)")
    assert blocker.read_text() == ""


def test_a_managed_engine_flag_after_the_double_dash_is_refused_without_its_value(
        env: dict[str, str], model_dir: Path, probe_dir: Path) -> None:
    secret = "sk-argv-3c9e7b1d5f2a8e4c6b0d"
    result = run(serve_args(model_dir, probe_dir, "--", "--enable-prefix-caching", f"--api-key={secret}"),
                 {**env, "LLM_ENTRY_MASTER_KEY": MASTER_KEY})
    line = assert_refused(result, probe_dir)
    assert line.startswith("llm-entry: an argument after -- sets the engine's --api-key, which llm-entry manages: "
                           "llm-entry makes the engine's key itself at every start")
    assert secret not in result.stdout + result.stderr


def test_host_after_the_double_dash_is_refused(env: dict[str, str], model_dir: Path, probe_dir: Path) -> None:
    result = run(serve_args(model_dir, probe_dir, "--", "--host", "0.0.0.0"),
                 {**env, "LLM_ENTRY_MASTER_KEY": MASTER_KEY})
    assert "use llm-entry's --host for the proxy's public address" in assert_refused(result, probe_dir)


# --- --help and --dry-run -------------------------------------------------------

def test_help_lists_every_option(env: dict[str, str]) -> None:
    result = run(["--help"], env)
    assert result.returncode == 0
    assert result.stderr == ""
    for param in command.params:
        for flag in param.opts:
            if flag.startswith("-"):
                assert flag in result.stdout, flag


def test_help_shows_the_variables_of_the_master_key(env: dict[str, str]) -> None:
    result = run(["--help"], env)
    assert "LLM_ENTRY_MASTER_KEY" in result.stdout
    assert "LITELLM_MASTER_KEY" in result.stdout


def test_help_shows_the_variable_of_every_option(env: dict[str, str]) -> None:
    text = run(["--help"], env).stdout
    missing = [f"LLM_ENTRY_{param.name.upper()}" for param in command.params
               if param.param_type_name == "option" and param.name not in ("help", "version")
               and f"LLM_ENTRY_{param.name.upper()}" not in text]
    assert missing == []


def test_dry_run_splits_32_heads_over_4_of_6_gpus_without_showing_the_key(
        env: dict[str, str], model_dir: Path, probe_dir: Path) -> None:
    result = run(["--model", str(model_dir), "--master-key", MASTER_KEY, "--probe-dir", str(probe_dir),
                  "--dry-run"], env)
    assert result.returncode == 0, result.stderr
    assert "--tensor-parallel-size 4" in result.stdout
    assert "# 6 GPUs, 32 heads (8 KV): tensor parallel 4, 2 GPUs idle" in result.stdout
    assert "# GPUs: 6 GPUs (via nvidia-smi)" in result.stdout
    assert MASTER_KEY not in result.stdout + result.stderr
    assert not probe_dir.exists()


def test_dry_run_takes_the_key_from_litellm_master_key(env: dict[str, str], model_dir: Path) -> None:
    result = run(["--model", str(model_dir), "--dry-run"], {**env, "LITELLM_MASTER_KEY": MASTER_KEY})
    assert result.returncode == 0, result.stderr
    assert MASTER_KEY not in result.stdout + result.stderr


def test_a_master_key_on_the_command_line_brings_one_warning_line(env: dict[str, str], model_dir: Path) -> None:
    result = run(["--model", str(model_dir), "--master-key", MASTER_KEY, "--dry-run"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "llm-entry: warning: --master-key on the command line is visible to anyone who can list processes "
        "(ps, /proc/PID/cmdline): set LLM_ENTRY_MASTER_KEY or LITELLM_MASTER_KEY, or use --master-key-file, "
        "instead."]
    assert MASTER_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("variable", ["LLM_ENTRY_MASTER_KEY", "LITELLM_MASTER_KEY"])
def test_a_master_key_from_a_variable_brings_no_warning(env: dict[str, str], model_dir: Path, variable: str) -> None:
    result = run(["--model", str(model_dir), "--dry-run"], {**env, variable: MASTER_KEY})
    assert result.returncode == 0 and result.stderr == ""


def test_dry_run_honours_cuda_visible_devices(env: dict[str, str], model_dir: Path) -> None:
    result = run(["--model", str(model_dir), "--master-key", MASTER_KEY, "--dry-run"],
                 {**env, "CUDA_VISIBLE_DEVICES": "0,1"})
    assert result.returncode == 0, result.stderr
    assert ("# GPUs: 2 of the node's 6 visible (CUDA_VISIBLE_DEVICES='0,1'; the node's count via nvidia-smi)"
            in result.stdout)
    assert "--tensor-parallel-size 2" in result.stdout
