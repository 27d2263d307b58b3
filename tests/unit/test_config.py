"""Unit tests of build_config: defaults taken from the environment, and every
bad input turned into one EntryError sentence with exit code 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from entrypoint.config import Options
from entrypoint.errors import EXIT_BAD_CONFIG, EntryError
from entrypoint.gpus import NodeGpus
from entrypoint.inside.keys_file import default_key_name
from entrypoint.render import engine_command

from fakes import GIB, MASTER_KEY, make_config, model_folder


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return model_folder(tmp_path)


def refused(model: Path | str, env: dict[str, str] | None = None, **options) -> str:
    """The message of the EntryError build_config raises, checked to be one sentence with exit code 2."""
    with pytest.raises(EntryError) as raised:
        make_config(model, env, **options)
    error = raised.value
    assert error.exit_code == EXIT_BAD_CONFIG
    assert "\n" not in error.message
    assert error.message[-1] in ".?"
    return error.message


# --- ports -------------------------------------------------------------------

def test_port_defaults_to_8080_outside_production(model_dir: Path) -> None:
    assert make_config(model_dir).port == 8080


def test_port_defaults_to_80_in_openbayes_production(model_dir: Path) -> None:
    assert make_config(model_dir, {"OPENBAYES_SERVING_PRODUCTION": "1"}).port == 80
    assert make_config(model_dir, {"OPENBAYES_SERVING_PRODUCTION": "false"}).port == 80


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_an_empty_production_variable_keeps_port_8080(model_dir: Path, value: str) -> None:
    assert make_config(model_dir, {"OPENBAYES_SERVING_PRODUCTION": value}).port == 8080


def test_an_explicit_port_wins_over_production(model_dir: Path) -> None:
    assert make_config(model_dir, {"OPENBAYES_SERVING_PRODUCTION": "1"}, port=9000).port == 9000
    assert make_config(model_dir, port=8000).port == 8000


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_a_port_outside_the_tcp_range_is_refused(model_dir: Path, port: int) -> None:
    assert refused(model_dir, port=port) == f"--port {port} is not a TCP port: use a number from 1 to 65535."


@pytest.mark.parametrize("port", [0, 70000])
def test_an_engine_port_outside_the_tcp_range_is_refused(model_dir: Path, port: int) -> None:
    assert refused(model_dir, engine_port=port).startswith(f"--engine-port {port} is not a TCP port")


def test_the_public_port_cannot_be_the_engine_port(model_dir: Path) -> None:
    message = refused(model_dir, port=3000)
    assert message == "--port and --engine-port are both 3000: give the engine another port."
    refused(model_dir, port=9000, engine_port=9000)


# --- the model -----------------------------------------------------------------

def test_a_missing_model_folder_is_refused_with_the_ways_out(tmp_path: Path) -> None:
    message = refused(tmp_path / "output" / "model")
    assert message.startswith(f"model directory {tmp_path / 'output' / 'model'} does not exist")
    assert "org/name" in message and "--model demo" in message


def test_a_folder_without_config_json_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path)
    assert message == (f"model directory {tmp_path} has no config.json: "
                       "is --model the folder that holds the weights?")


def test_a_file_instead_of_a_folder_is_refused(model_dir: Path) -> None:
    message = refused(model_dir / "config.json")
    assert "is a file, not a folder" in message


def test_a_model_folder_resolves_to_an_absolute_path(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(model_dir.parent)
    config = make_config(model_dir.name)
    assert config.model == str(model_dir.resolve())
    assert config.model_dir == model_dir.resolve()


def test_a_hub_id_is_passed_to_the_engine_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    config = make_config("Qwen/Qwen2.5-0.5B-Instruct", node_gpus=6)
    assert config.model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.model_dir is None
    assert config.served_model_name == "Qwen/Qwen2.5-0.5B-Instruct"
    # Head counts are unknown without the folder: the largest power of two.
    assert config.parallel.tensor_parallel_size == 4
    assert config.warnings == (
        "--model Qwen/Qwen2.5-0.5B-Instruct is not a folder here: vLLM gets it as a hub id, from the hub cache "
        "or downloaded from the hub; if you meant a folder, fix the path.",)


@pytest.mark.parametrize("raw", ["./org/name", "/org/name", "org/name/extra", "org name/x"])
def test_a_path_like_model_that_does_not_exist_is_not_taken_for_a_hub_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert "does not exist" in refused(raw)


def test_a_relative_path_whose_first_folder_exists_is_refused_not_taken_for_a_hub_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert refused("models/llama") == (
        "model directory models/llama does not exist, though the folder models does: fix the path "
        "(llm-entry takes org/name for a hub id only when no folder named org is here).")


@pytest.mark.parametrize("variable,value", [("HF_HUB_OFFLINE", "1"), ("HF_HUB_OFFLINE", "true"),
                                            ("TRANSFORMERS_OFFLINE", "YES")])
def test_a_hub_id_that_is_not_in_the_cache_is_refused_when_the_hub_is_off_limits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "hf" / "hub"
    assert refused("models/llama", {variable: value, "HF_HOME": str(tmp_path / "hf")}) == (
        f"--model models/llama is no folder here and, as a hub id, not in the hub cache {cache}, "
        f"and {variable}={value} forbids downloading it: fix the path, or download the model into that cache, "
        f"or unset {variable}.")


def test_a_hub_id_in_the_hub_cache_is_served_offline_and_says_so(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "hub-cache"
    (cache / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / "abc123").mkdir(parents=True)
    config = make_config("Qwen/Qwen2.5-0.5B-Instruct", {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert config.model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.warnings == (
        f"--model Qwen/Qwen2.5-0.5B-Instruct is not a folder here: vLLM loads it as a hub id from the hub cache "
        f"{cache}, offline; if you meant a folder, fix the path.",)


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "0"}, {"HF_HUB_OFFLINE": ""},
                                 {"HF_HUB_OFFLINE": "1", "VLLM_USE_MODELSCOPE": "true"}])
def test_a_hub_id_is_taken_when_the_hub_can_be_reached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       env: dict[str, str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert make_config("org/name", {**env, "HF_HOME": str(tmp_path / "hf")}).model == "org/name"


def test_the_served_model_name_defaults_to_the_folder_name(model_dir: Path) -> None:
    assert make_config(model_dir).served_model_name == "Llama-3-8B-Instruct"
    assert make_config(str(model_dir) + "/").served_model_name == "Llama-3-8B-Instruct"


def test_an_explicit_served_model_name_wins(model_dir: Path) -> None:
    assert make_config(model_dir, served_model_name="llama3").served_model_name == "llama3"


def test_tensor_parallel_follows_the_heads_in_config_json(model_dir: Path) -> None:
    config = make_config(model_dir, node_gpus=6)
    assert (config.visible_gpus, config.parallel.tensor_parallel_size) == (6, 4)


def test_cuda_visible_devices_narrows_the_node_gpus(model_dir: Path) -> None:
    config = make_config(model_dir, {"CUDA_VISIBLE_DEVICES": "0,1"}, node_gpus=8)
    assert (config.gpus.count, config.visible_gpus, config.parallel.tensor_parallel_size) == (8, 2, 2)


def test_a_requested_tensor_parallel_size_that_does_not_split_the_heads_is_refused(model_dir: Path) -> None:
    assert "use one of [1, 2, 4]" in refused(model_dir, node_gpus=6, tensor_parallel_size=6)


# --- the master key ----------------------------------------------------------

def test_no_master_key_is_refused_naming_every_way_to_give_one(model_dir: Path) -> None:
    assert refused(model_dir, master_key=None) == (
        "no master key: pass --master-key-file or --master-key, or set LLM_ENTRY_MASTER_KEY or "
        "LITELLM_MASTER_KEY (generate one with: openssl rand -hex 24).")


@pytest.mark.parametrize("key,why", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("sk-1234", "is a well-known example key"),
    ("CHANGEME", "is a well-known example key"),
    ("a1B2c3D4", "is shorter than 16 characters"),
    (" " + MASTER_KEY, "contains white space"),
    (MASTER_KEY + "\n", "contains white space"),
    ("sk-abcd efgh ijkl mnop", "contains white space"),
    ("sk-aaaaaaaaaaaaaaaaaaaa", "repeats too few characters"),
])
def test_a_weak_master_key_is_refused(model_dir: Path, key: str, why: str) -> None:
    message = refused(model_dir, master_key=key)
    assert message.startswith(f"the master key from --master-key {why}")
    if key.strip():
        assert key.strip() not in message


@pytest.mark.parametrize("variable", ["LLM_ENTRY_MASTER_KEY", "LITELLM_MASTER_KEY"])
def test_a_weak_master_key_from_a_variable_is_reported_as_from_that_variable(model_dir: Path, variable: str) -> None:
    assert refused(model_dir, {variable: "sk-1234"}, master_key="sk-1234") == (
        f"the master key from {variable} is a well-known example key: use a random key of at least "
        "16 characters (openssl rand -hex 24).")


def test_the_first_master_key_variable_set_is_the_one_named(model_dir: Path) -> None:
    env = {"LLM_ENTRY_MASTER_KEY": "short", "LITELLM_MASTER_KEY": MASTER_KEY}
    assert refused(model_dir, env, master_key="short").startswith("the master key from LLM_ENTRY_MASTER_KEY ")
    env = {"LLM_ENTRY_MASTER_KEY": "", "LITELLM_MASTER_KEY": "short"}
    assert refused(model_dir, env, master_key="short").startswith("the master key from LITELLM_MASTER_KEY ")


def test_a_weak_master_key_on_the_command_line_is_reported_as_from_the_flag(model_dir: Path) -> None:
    message = refused(model_dir, {"LLM_ENTRY_MASTER_KEY": MASTER_KEY}, master_key="short",
                      master_key_on_command_line=True)
    assert message.startswith("the master key from --master-key is shorter than 16 characters")


def test_a_master_key_file_ending_in_a_newline_is_accepted(model_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "master-key"
    key_file.write_text(MASTER_KEY + "\r\n")
    config = make_config(model_dir, master_key=None, master_key_file=key_file)
    assert config.master_key.reveal() == MASTER_KEY


def test_a_master_key_file_with_a_trailing_space_is_refused(model_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "master-key"
    key_file.write_text(MASTER_KEY + " \n")
    assert "contains white space" in refused(model_dir, master_key=None, master_key_file=key_file)


def test_both_master_key_and_master_key_file_are_refused(model_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "master-key"
    key_file.write_text(MASTER_KEY)
    message = refused(model_dir, master_key=MASTER_KEY, master_key_on_command_line=True,
                      master_key_file=key_file)
    assert message == "both --master-key and --master-key-file are set: give the master key once."


def test_a_master_key_file_beats_a_key_from_a_variable_and_says_so(model_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "master-key"
    key_file.write_text("file-" + MASTER_KEY)
    config = make_config(model_dir, {"LITELLM_MASTER_KEY": MASTER_KEY}, master_key=MASTER_KEY, master_key_file=key_file)
    assert config.master_key.reveal() == "file-" + MASTER_KEY
    assert config.warnings == (
        "the master key comes from --master-key-file; the one in LITELLM_MASTER_KEY is ignored: "
        "unset LITELLM_MASTER_KEY to silence this warning.",)


@pytest.mark.parametrize("name", ["missing", "a-folder"])
def test_an_unreadable_master_key_file_is_refused(model_dir: Path, tmp_path: Path, name: str) -> None:
    (tmp_path / "a-folder").mkdir()
    message = refused(model_dir, master_key=None, master_key_file=tmp_path / name)
    assert message.startswith(f"cannot read --master-key-file {tmp_path / name} (")
    assert "is the secret mounted there?" in message


def test_a_missing_api_keys_file_is_refused_before_anything_starts(model_dir: Path, tmp_path: Path) -> None:
    assert refused(model_dir, api_keys_file=tmp_path / "keys").startswith("cannot read --api-keys-file")


def test_the_master_key_never_shows_in_the_config_repr(model_dir: Path) -> None:
    config = make_config(model_dir)
    assert config.master_key.reveal() == MASTER_KEY
    assert MASTER_KEY not in repr(config)
    assert MASTER_KEY not in str(config)
    assert MASTER_KEY not in repr(config.master_key)


# --- engine options ------------------------------------------------------------

@pytest.mark.parametrize("fraction", [1.5, 0.0, -0.1])
def test_a_gpu_memory_utilization_outside_zero_to_one_is_refused(model_dir: Path, fraction: float) -> None:
    assert refused(model_dir, gpu_memory_utilization=fraction).startswith(
        f"--gpu-memory-utilization {fraction} must be a fraction in (0, 1]")


def test_a_gpu_memory_utilization_of_one_is_accepted(model_dir: Path) -> None:
    assert make_config(model_dir, gpu_memory_utilization=1.0).gpu_memory_utilization == 1.0


def test_an_unknown_restart_policy_is_refused(model_dir: Path) -> None:
    assert refused(model_dir, engine_restart="on-failure") == (
        "--engine-restart on-failure is unknown: use one of never, always.")


@pytest.mark.parametrize("option,value", [
    ("max_model_len", 0), ("proxy_workers", 0), ("max_restarts", -1), ("restart_window", 0),
    ("startup_timeout", 0), ("check_interval", 0), ("check_timeout", -1), ("heartbeat_ttl", 0),
    ("unready_after", 0),
])
def test_a_count_or_duration_that_is_not_positive_is_refused(model_dir: Path, option: str, value: float) -> None:
    flag = "--" + option.replace("_", "-")
    assert refused(model_dir, **{option: value}).startswith(f"{flag} must be ")


def test_an_engine_cmd_with_unbalanced_quotes_is_refused(model_dir: Path) -> None:
    assert "--engine-cmd cannot be split" in refused(model_dir, engine_cmd="python -c 'oops")


def test_an_engine_cmd_is_split_like_a_shell_line(model_dir: Path) -> None:
    config = make_config(model_dir, engine_cmd="/opt/venv/bin/python -m 'vllm.entrypoints.openai.api_server'")
    assert config.engine_cmd == ("/opt/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server")


def test_engine_args_after_the_double_dash_are_kept_in_order(model_dir: Path) -> None:
    config = make_config(model_dir, engine_args=("--enable-prefix-caching", "--max-num-seqs", "64"))
    assert config.engine_args == ("--enable-prefix-caching", "--max-num-seqs", "64")


# --- timing --------------------------------------------------------------------

@pytest.mark.parametrize("drain", [25.0, 30.0])
def test_a_drain_delay_not_shorter_than_the_grace_period_is_refused(model_dir: Path, drain: float) -> None:
    message = refused(model_dir, drain_delay=drain, grace_period=25.0)
    assert "make the delay shorter than the grace period" in message


def test_the_kubernetes_default_drain_delay_must_fit_the_grace_period(model_dir: Path) -> None:
    refused(model_dir, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, grace_period=2.0)


def test_a_negative_drain_delay_is_refused(model_dir: Path) -> None:
    assert refused(model_dir, drain_delay=-1.0).startswith("--drain-delay must be 0 or more")


@pytest.mark.parametrize("hang", [3.0, 2.0])
def test_a_hang_timeout_not_longer_than_the_check_timeout_is_refused(model_dir: Path, hang: float) -> None:
    assert "must be longer than --check-timeout" in refused(model_dir, hang_timeout=hang, check_timeout=3.0)


def test_the_drain_delay_defaults_to_two_seconds_in_kubernetes(model_dir: Path) -> None:
    assert make_config(model_dir, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}).timing.drain_delay == 2.0


@pytest.mark.parametrize("env", [{}, {"KUBERNETES_SERVICE_HOST": ""}])
def test_the_drain_delay_defaults_to_zero_outside_kubernetes(model_dir: Path, env: dict[str, str]) -> None:
    assert make_config(model_dir, env).timing.drain_delay == 0.0


def test_an_explicit_drain_delay_wins_in_kubernetes(model_dir: Path) -> None:
    assert make_config(model_dir, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, drain_delay=0.0).timing.drain_delay == 0.0


def test_timing_carries_every_option(model_dir: Path) -> None:
    timing = make_config(model_dir, startup_timeout=600.0, check_interval=1.0, check_timeout=2.0, unready_after=3,
                   hang_timeout=20.0, heartbeat_ttl=10.0, grace_period=40.0, drain_delay=5.0).timing
    assert dataclasses.astuple(timing) == (600.0, 1.0, 2.0, 3, 20.0, 10.0, 40.0, 5.0)


# --- the CPU engine ------------------------------------------------------------

@pytest.mark.parametrize("memory,gib", [(64 * GIB, "8"), (32 * GIB, "8"), (16 * GIB, "4"), (6 * GIB, "1"),
                                        (2 * GIB, "1"), (0, "1")])
def test_without_a_gpu_the_cpu_kv_cache_takes_a_quarter_of_memory_within_1_to_8_gib(
        model_dir: Path, memory: int, gib: str) -> None:
    config = make_config(model_dir, node_gpus=0, memory=memory)
    assert config.on_cpu
    assert config.engine_env == (("VLLM_CPU_KVCACHE_SPACE", gib),)


def test_hidden_gpus_count_as_no_gpu_for_the_cpu_kv_cache(model_dir: Path) -> None:
    config = make_config(model_dir, {"CUDA_VISIBLE_DEVICES": ""}, node_gpus=8, memory=16 * GIB)
    assert config.engine_env == (("VLLM_CPU_KVCACHE_SPACE", "4"),)


def test_a_user_set_cpu_kv_cache_is_left_alone(model_dir: Path) -> None:
    assert make_config(model_dir, {"VLLM_CPU_KVCACHE_SPACE": "20"}, node_gpus=0).engine_env == ()


def test_with_a_gpu_the_engine_gets_no_cpu_settings(model_dir: Path) -> None:
    def memory_is_not_asked() -> int:
        raise AssertionError("total memory asked for on a GPU node")

    config = make_config(model_dir, node_gpus=1, memory=memory_is_not_asked)
    assert not config.on_cpu
    assert config.engine_env == ()


def test_the_local_url_uses_loopback_for_a_wildcard_host(model_dir: Path) -> None:
    assert make_config(model_dir).local_url == "http://127.0.0.1:8080"
    assert make_config(model_dir, host="127.0.0.1", port=9000).local_url == "http://127.0.0.1:9000"


def test_a_weak_key_in_the_keys_file_is_refused_by_line_without_echoing_it(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    keys = tmp_path / "keys"
    keys.write_text("# team a\nteam-a-5d1c9e7b3a8f2c6e4b0d\nsk-1234\n")
    with pytest.raises(EntryError) as caught:
        make_config(model, master_key="sk-" + "9" * 3 + "abcdefghijklmnop", api_keys_file=keys,
                    node_gpus=NodeGpus(0, "none"))
    assert caught.value.message.startswith(f"the key on line 3 of --api-keys-file {keys} is a well-known example key")
    assert "sk-1234" not in caught.value.message


def test_a_keys_file_that_is_not_utf8_is_refused_in_one_sentence(model_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_bytes(b"team-a-5d1c9e7b3a8f2c6e4b0d\n\xff\xfe\n")
    assert refused(model_dir, api_keys_file=keys) == (
        f"cannot read --api-keys-file {keys} (not UTF-8 text): is the secret mounted there?")


def test_the_keys_of_the_keys_file_come_in_the_config_and_never_show(model_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team a\nteam-a-5d1c9e7b3a8f2c6e4b0d name=team-a rpm=5\n\nteam-b-8e2f6a0c4d9b1e7a3c5f\n")
    config = make_config(model_dir, api_keys_file=keys)
    assert [entry.key for entry in config.api_keys] == ["team-a-5d1c9e7b3a8f2c6e4b0d", "team-b-8e2f6a0c4d9b1e7a3c5f"]
    assert [(entry.name, entry.limits.describe(), entry.line) for entry in config.api_keys] == [
        ("team-a", "rpm=5", 2), (default_key_name("team-b-8e2f6a0c4d9b1e7a3c5f"), "no limits", 4)]
    assert "5d1c9e7b3a8f2c6e4b0d" not in repr(config) and "8e2f6a0c4d9b1e7a3c5f" not in repr(config)


def test_a_bad_field_in_the_keys_file_is_refused_by_line(model_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("team-a-5d1c9e7b3a8f2c6e4b0d name=team-a\nteam-b-8e2f6a0c4d9b1e7a3c5f rpm=0\n")
    assert refused(model_dir, api_keys_file=keys) == (
        f"the key on line 2 of --api-keys-file {keys} has rpm=0: a limit is a whole number of 1 or more.")


@pytest.mark.parametrize("text", ["", "# keys go here, one per line\n\n# team a\n"])
def test_a_keys_file_without_a_key_is_accepted_and_said_at_start(model_dir: Path, tmp_path: Path,
                                                                  text: str) -> None:
    keys = tmp_path / "keys"
    keys.write_text(text)
    config = make_config(model_dir, api_keys_file=keys)
    assert config.api_keys == ()
    assert config.warnings == (
        f"--api-keys-file {keys} holds no key yet, so only the master key opens the proxy: add keys there, "
        "one a line as '<key> [name=<name>] [rpm=<n>] [tpm=<n>] [max_parallel=<n>]', "
        "and they apply within about a second, without a restart.",)


def test_a_keys_file_with_a_key_brings_no_warning(model_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("team-a-5d1c9e7b3a8f2c6e4b0d\n")
    assert make_config(model_dir, api_keys_file=keys).warnings == ()


# --- the GPU line ------------------------------------------------------------------

@pytest.mark.parametrize("node,env,line", [
    (NodeGpus(0, "none"), {}, "GPUs: none found (neither NVML nor nvidia-smi is available here)"),
    (NodeGpus(0, "nvidia-smi"), {}, "GPUs: none on the node (nvidia-smi reports none)"),
    (NodeGpus(1, "nvml"), {}, "GPUs: 1 GPU (via NVML)"),
    (NodeGpus(8, "nvml"), {}, "GPUs: 8 GPUs (via NVML)"),
    (NodeGpus(8, "nvidia-smi"), {"CUDA_VISIBLE_DEVICES": "0,1"},
     "GPUs: 2 of the node's 8 visible (CUDA_VISIBLE_DEVICES='0,1'; the node's count via nvidia-smi)"),
    (NodeGpus(8, "nvml"), {"CUDA_VISIBLE_DEVICES": ""},
     "GPUs: 0 of the node's 8 visible (CUDA_VISIBLE_DEVICES=''; the node's count via NVML)"),
])
def test_the_gpu_line_says_what_the_engine_gets_and_who_said_so(model_dir: Path, node: NodeGpus,
                                                               env: dict[str, str], line: str) -> None:
    config = make_config(model_dir, env, node_gpus=node)
    assert config.gpus_reason == line


# --- the master key on the command line ------------------------------------------

def test_a_master_key_from_the_command_line_brings_one_warning(model_dir: Path) -> None:
    (warning,) = make_config(model_dir, master_key_on_command_line=True).warnings
    assert warning.startswith("--master-key on the command line is visible to anyone who can list processes")
    assert "LLM_ENTRY_MASTER_KEY" in warning and "LITELLM_MASTER_KEY" in warning
    assert "--master-key-file" in warning and MASTER_KEY not in warning


def test_a_master_key_from_a_variable_brings_no_warning(model_dir: Path) -> None:
    assert make_config(model_dir).warnings == ()


# --- arguments after `--` ---------------------------------------------------------

SECRET_VALUE = "sk-passthrough-5f0e3b9c7a1d4e2f"


@pytest.mark.parametrize("args,flag,advice", [
    (("--host", "0.0.0.0"), "--host", "use llm-entry's --host for the proxy's public address"),
    (("--host=0.0.0.0",), "--host", "the engine listens on 127.0.0.1 only"),
    (("--hos", "0.0.0.0"), "--host", "the engine listens on 127.0.0.1 only"),
    (("--port", "8000"), "--port", "use llm-entry's --engine-port"),
    (("--api-key", SECRET_VALUE), "--api-key", "llm-entry makes the engine's key itself at every start"),
    ((f"--api-key={SECRET_VALUE}",), "--api-key", "llm-entry makes the engine's key itself"),
    ((f"--api_key={SECRET_VALUE}",), "--api-key", "llm-entry makes the engine's key itself"),
    (("--model", "other/model"), "--model", "use llm-entry's --model"),
    (("--served-model-name", "gpt-4"), "--served-model-name", "use llm-entry's --served-model-name"),
    (("--tensor-parallel-size", "2"), "--tensor-parallel-size", "use llm-entry's --tensor-parallel-size"),
    (("--tensor_parallel_size=2",), "--tensor-parallel-size", "use llm-entry's --tensor-parallel-size"),
    (("-tp", "2"), "--tensor-parallel-size", "use llm-entry's --tensor-parallel-size"),
    (("-tp=2",), "--tensor-parallel-size", "use llm-entry's --tensor-parallel-size"),
])
def test_arguments_after_the_double_dash_cannot_set_a_flag_llm_entry_manages(
        model_dir: Path, args: tuple[str, ...], flag: str, advice: str) -> None:
    message = refused(model_dir, engine_args=("--enable-prefix-caching", *args))
    assert message.startswith(f"an argument after -- sets the engine's {flag}, which llm-entry manages: ")
    assert advice in message
    assert SECRET_VALUE not in message and "0.0.0.0" not in message


@pytest.mark.parametrize("args", [
    ("--enable-prefix-caching",), ("--max-num-seqs", "64"), ("--model-impl", "transformers"),
    ("--max-model-len", "4096"), ("--chat-template", "{{ messages }} --host"), ("--dtype=half",),
])
def test_other_arguments_after_the_double_dash_pass(model_dir: Path, args: tuple[str, ...]) -> None:
    assert make_config(model_dir, engine_args=args).engine_args == args



@pytest.mark.parametrize("spelling", [("--config", "{f}"), ("--config={f}",)])
@pytest.mark.parametrize("line,key,advice", [
    (f"api-key: {SECRET_VALUE}", "api-key", "llm-entry makes the engine's key itself"),
    (f"api_key: {SECRET_VALUE}", "api_key", "llm-entry makes the engine's key itself"),
    ("host: 0.0.0.0", "host", "the engine listens on 127.0.0.1 only"),
    ("tensor-parallel-size: 2", "tensor-parallel-size", "use llm-entry's --tensor-parallel-size"),
])
def test_a_vllm_config_file_after_the_double_dash_cannot_set_a_flag_llm_entry_manages(
        model_dir: Path, tmp_path: Path, spelling: tuple[str, ...], line: str, key: str, advice: str) -> None:
    config_file = tmp_path / "engine.yaml"
    config_file.write_text(f"max-num-seqs: 64\n{line}\n")
    args = tuple(part.format(f=config_file) for part in spelling)
    message = refused(model_dir, engine_args=("--enable-prefix-caching", *args))
    assert message.startswith(f"the engine config file {config_file} (after --) sets {key}, which llm-entry manages: ")
    assert advice in message
    assert SECRET_VALUE not in message and "0.0.0.0" not in message


def test_a_vllm_config_file_with_other_options_passes_unchanged(model_dir: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "engine.yaml"
    config_file.write_text("max-num-seqs: 64\nenable-prefix-caching: true\nmodel-impl: transformers\n")
    args = ("--config", str(config_file), "--dtype=half")
    assert make_config(model_dir, engine_args=args).engine_args == args


@pytest.mark.parametrize("content,problem", [
    (None, "cannot be read (No such file or directory)"),
    (f"max-num-seqs: 64\napi-key: [{SECRET_VALUE}\n", "is not valid YAML at line 3"),
    ("- max-num-seqs\n- 64\n", "is not a mapping of option: value"),
])
def test_an_unusable_vllm_config_file_is_refused_before_the_start(
        model_dir: Path, tmp_path: Path, content: str | None, problem: str) -> None:
    config_file = tmp_path / "engine.yaml"
    if content is not None:
        config_file.write_text(content)
    message = refused(model_dir, engine_args=("--config", str(config_file)))
    assert message.startswith(f"the engine config file {config_file} (after --) {problem}")
    assert SECRET_VALUE not in message


# --- the demo model -------------------------------------------------------------

def test_the_demo_caps_the_cpu_kv_cache_at_1_gib(tmp_path: Path) -> None:
    config = make_config("demo", node_gpus=0, cache_dir=tmp_path)
    assert config.engine_env == (("HF_HUB_OFFLINE", "1"), ("VLLM_CPU_KVCACHE_SPACE", "1"))


def test_the_demo_leaves_a_user_set_cpu_kv_cache_alone(tmp_path: Path) -> None:
    config = make_config("demo", {"VLLM_CPU_KVCACHE_SPACE": "4"}, node_gpus=0, cache_dir=tmp_path)
    assert config.engine_env == (("HF_HUB_OFFLINE", "1"),)


def test_the_demo_keeps_its_context_length_unless_the_user_sets_one(tmp_path: Path) -> None:
    assert make_config("demo", node_gpus=0, cache_dir=tmp_path).engine_args == (
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048")
    config = make_config("demo", node_gpus=0, cache_dir=tmp_path, max_model_len=1024)
    assert config.max_model_len == 1024
    assert "--max-model-len" not in config.engine_args
    command = engine_command(config)
    assert command.count("--max-model-len") == 1
    assert command[command.index("--max-model-len") + 1] == "1024"


def test_proxy_workers_follow_the_usable_cpus_on_a_gpu_node(model_dir):
    assert make_config(model_dir, node_gpus=8, cpus=1).proxy_workers == 1
    assert make_config(model_dir, node_gpus=8, cpus=3).proxy_workers == 2


def test_proxy_keeps_one_worker_when_the_engine_runs_on_the_cpu(model_dir):
    config = make_config(model_dir, node_gpus=0, cpus=16)
    assert config.proxy_workers == 1
    assert "CPU engine" in config.proxy_workers_reason


def test_a_hang_timeout_shorter_than_noticing_failed_checks_is_refused(model_dir: Path) -> None:
    message = refused(model_dir, check_interval=30.0, check_timeout=3.0, hang_timeout=20.0)
    assert "--hang-timeout 20 s is shorter than it takes to notice failing checks" in message
    assert "= 66 s" in message


def test_a_heartbeat_ttl_below_the_monitors_refresh_is_refused(model_dir: Path) -> None:
    assert "use at least 2 s" in refused(model_dir, heartbeat_ttl=0.5)


# --- --redis-url and who keeps the keys' limits ------------------------------------

REDIS_PASSWORD = "r3d1s-Pa55w0rd-kQ8zX"


@pytest.mark.parametrize("url,storage", [
    ("redis://localhost", "async+redis://localhost"),
    ("redis://redis.shared:6380/2", "async+redis://redis.shared:6380/2"),
    (f"redis://:{REDIS_PASSWORD}@redis.shared:6379/0", f"async+redis://:{REDIS_PASSWORD}@redis.shared:6379/0"),
    (f"redis://limits:{REDIS_PASSWORD}@10.0.0.7:6379", f"async+redis://limits:{REDIS_PASSWORD}@10.0.0.7:6379"),
    ("rediss://redis.shared:6380/1?ssl_cert_reqs=required", "async+rediss://redis.shared:6380/1?ssl_cert_reqs=required"),
    ("redis://[::1]:6379/0", "async+redis://[::1]:6379/0"),
    ("unix:///run/redis/redis.sock", "async+redis+unix:///run/redis/redis.sock"),
    ("unix:///run/redis/redis.sock?db=3", "async+redis+unix:///run/redis/redis.sock?db=3"),
])
def test_a_redis_url_is_accepted_and_becomes_a_limits_storage_uri(model_dir: Path, url: str, storage: str) -> None:
    config = make_config(model_dir, redis_url=url)
    assert config.redis_url.text == url
    assert config.redis_url.storage_uri == storage
    assert config.limits.storage_uri(Path("/run/llm-entry-abc")) == storage


NOT_REDIS_URLS = {   # what the refusal says -> the URLs refused with it
    "is not a Redis URL": ["http://redis.shared:6379", "redis.shared:6379", "redis:/redis.shared",
                           "memcached://cache:11211"],
    "names no host": ["redis://", "redis://:6379/0"],
    "is not a TCP port": ["redis://redis.shared:0", "redis://redis.shared:65536", "redis://redis.shared:six"],
    "a database is a whole number": ["redis://redis.shared/limits", "unix:///run/redis.sock?db=one"],
    "has a #fragment": ["redis://redis.shared/0#frag"],
    "absolute path": ["unix://run/redis.sock"],
    "may only carry ?db=N": ["unix:///run/redis.sock?password=x"],
}


@pytest.mark.parametrize("url,phrase", [(url, phrase) for phrase, urls in NOT_REDIS_URLS.items() for url in urls])
def test_anything_but_a_redis_url_is_refused_in_one_sentence(model_dir: Path, url: str, phrase: str) -> None:
    message = refused(model_dir, redis_url=url)
    assert message.startswith("--redis-url ")
    assert phrase in message


@pytest.mark.parametrize("url", [
    f"redis://{REDIS_PASSWORD}@redis.shared:6379",          # a user without a password: a password by mistake?
    f"redis://:{REDIS_PASSWORD}@redis.shared:99999",
    f"http://:{REDIS_PASSWORD}@redis.shared",
    f"unix://:{REDIS_PASSWORD}@/run/redis.sock",
])
def test_a_refused_redis_url_never_shows_its_password(model_dir: Path, url: str) -> None:
    message = refused(model_dir, redis_url=url)
    assert REDIS_PASSWORD not in message
    assert ":***@" in message


def test_a_redis_password_shows_as_stars_and_never_in_the_config_repr(model_dir: Path) -> None:
    config = make_config(model_dir, redis_url=f"redis://limits:{REDIS_PASSWORD}@redis.shared:6379/0")
    assert config.redis_url.shown == "redis://limits:***@redis.shared:6379/0"
    assert REDIS_PASSWORD not in repr(config)
    assert REDIS_PASSWORD not in repr(Options(model="m", redis_url=config.redis_url.text))
    assert config.redis_url.secrets == (REDIS_PASSWORD,)


def test_a_percent_encoded_redis_password_is_hidden_as_written_and_decoded(model_dir: Path) -> None:
    config = make_config(model_dir, redis_url="redis://:p%40ss-w0rd-Zq81@redis.shared")
    assert set(config.redis_url.secrets) == {"p%40ss-w0rd-Zq81", "p@ss-w0rd-Zq81"}


def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text("# no key yet\n")
    return path


def test_a_redis_url_holds_the_limits_for_every_replica(model_dir: Path, tmp_path: Path) -> None:
    config = make_config(model_dir, api_keys_file=keys_file(tmp_path), proxy_workers=2,
                   redis_url=f"redis://:{REDIS_PASSWORD}@redis.shared:6379/0")
    assert not config.limits.private
    assert config.limits.reason == ("limits: the Redis at --redis-url redis://:***@redis.shared:6379/0 holds them, "
                                    "shared by every replica that names it")


def test_a_keys_file_with_two_proxy_workers_gets_a_private_redis_server(model_dir: Path, tmp_path: Path) -> None:
    config = make_config(model_dir, api_keys_file=keys_file(tmp_path), proxy_workers=2)
    assert config.limits.private
    assert config.limits.storage_uri(Path("/run/llm-entry-abc")) == "async+redis+unix:///run/llm-entry-abc/redis.sock"
    assert config.limits.reason == ("limits: a private redis-server on a unix socket holds them, "
                                    "so 2 proxy workers share exact counts")


def test_a_keys_file_with_one_proxy_worker_keeps_the_limits_in_its_memory(model_dir: Path, tmp_path: Path) -> None:
    config = make_config(model_dir, api_keys_file=keys_file(tmp_path), proxy_workers=1)
    assert not config.limits.private
    assert config.limits.storage_uri(Path("/run/llm-entry-abc")) == "memory://"
    assert config.limits.reason == "limits: the one proxy worker keeps them in its memory, exact for one worker"


def test_without_a_keys_file_nobody_has_limits_and_no_redis_runs(model_dir: Path) -> None:
    config = make_config(model_dir, proxy_workers=4)
    assert not config.limits.private
    assert config.limits.storage_uri(Path("/run/llm-entry-abc")) == "memory://"
    assert config.limits.reason == "limits: none to keep (no --api-keys-file), so no Redis runs"


def connection_error(cause: OSError) -> Exception:
    import redis
    try:
        try:
            raise cause
        except OSError as error:
            raise redis.exceptions.ConnectionError("Error connecting.") from error
    except redis.exceptions.ConnectionError as error:
        return error


def test_why_a_redis_url_does_not_answer_is_said_in_a_few_words() -> None:
    import redis

    from entrypoint.limiter_store import describe_redis_error
    assert describe_redis_error(connection_error(ConnectionRefusedError(111, "Connection refused")), 2.0,
                                False) == "Connection refused"
    assert describe_redis_error(redis.exceptions.TimeoutError("Timeout"), 2.0, False) == "no answer within 2 s"
    wrong = redis.exceptions.AuthenticationError("invalid username-password pair or user is disabled.")
    assert describe_redis_error(wrong, 2.0, True) == "it refused the password"
    missing = redis.exceptions.AuthenticationError("Authentication required.")
    assert describe_redis_error(missing, 2.0, False) == "it asks for a password"
