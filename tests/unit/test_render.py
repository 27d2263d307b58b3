"""Unit tests of rendering: whole files compared with expected text, the
engine command on GPU and CPU, and supervisord reading back the exact argv."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from supervisor.options import ServerOptions

from entrypoint import render
from entrypoint.config import Config, Timing
from entrypoint.engine_options import default_engine_cmd
from entrypoint.gpus import NodeGpus
from entrypoint.keys import Secret
from entrypoint.limiter_store import check_redis_url
from entrypoint.parallel import ParallelPlan
from entrypoint.shutdown_plan import shutdown_plan

from fakes import MASTER_KEY, make_config, model_folder

PYTHON = "/opt/venv/bin/python"
RUN_DIR = Path("/run/llm-entry-abc")

CONFIG = Config(
    model="/models/Llama-3-8B-Instruct",
    model_dir=Path("/models/Llama-3-8B-Instruct"),
    served_model_name="llama-3-8b",
    master_key=Secret(MASTER_KEY),
    api_keys_file=None,
    host="0.0.0.0",
    port=8080,
    engine_port=3000,
    probe_dir=Path("/etc/probe"),
    gpus=NodeGpus(6, "nvidia-smi"),
    visible_gpus=6,
    parallel=ParallelPlan(4, "6 GPUs, 32 heads (8 KV): tensor parallel 4, 2 GPUs idle"),
    max_model_len=8192,
    gpu_memory_utilization=0.9,
    engine_cmd=(PYTHON, "-m", "vllm.entrypoints.openai.api_server"),
    engine_args=("--enable-prefix-caching",),
    engine_env=(),
    proxy_workers=2,
    proxy_workers_reason="proxy: 2 worker(s), as asked",
    timing=Timing(startup_timeout=1800.0, check_interval=2.0, check_timeout=3.0, unready_after=2,
                  hang_timeout=30.0, heartbeat_ttl=15.0, grace_period=25.0, drain_delay=0.0),
    engine_restart="never",
    max_restarts=3,
    restart_window=300.0,
    demo=False,
    dry_run=False,
)

CPU_CONFIG = dataclasses.replace(
    CONFIG, gpus=NodeGpus(0, "none"), visible_gpus=0,
    parallel=ParallelPlan(1, "no GPU visible: the engine runs on the CPU"),
    engine_env=(("VLLM_CPU_KVCACHE_SPACE", "4"),),
)

EXPECTED_LITELLM_YAML = """\
# Rendered by llm-entry. Keys are references to the proxy's environment,
# never values: this file is safe to print.
model_list:
  - model_name: "llama-3-8b"
    litellm_params:
      model: "hosted_vllm/llama-3-8b"
      api_base: "http://127.0.0.1:3000/v1"
      api_key: os.environ/LLM_ENTRY_ENGINE_KEY

general_settings:
  master_key: os.environ/LLM_ENTRY_MASTER_KEY
  # Checks the master key and the --api-keys-file keys; answers 401 JSON.
  custom_auth: llm_entry_auth.user_api_key_auth
  # Keys from --api-keys-file get no admin routes (/key/generate, /config/...).
  custom_auth_run_common_checks: true

litellm_settings:
  # No logging or cost callbacks on the request path.
  callbacks: []
  drop_params: true
  request_timeout: 600
"""


def expected_program(name: str, priority: int, before_stopasgroup: str = "") -> str:
    """A [program:NAME] section as it must be rendered (every program is run the same way)."""
    return f"""\
[program:{name}]
command=/opt/venv/bin/python -m entrypoint.inside.launch /run/llm-entry-abc/{name}.launch.json
directory=/run/llm-entry-abc
autostart=true
autorestart=false
startsecs=0
startretries=0
stopsignal=TERM
stopwaitsecs=25
{before_stopasgroup}stopasgroup=false
killasgroup=true
redirect_stderr=true
stdout_logfile=/run/llm-entry-abc/{name}.log
stdout_logfile_maxbytes=20MB
stdout_logfile_backups=1
priority={priority}
"""


EXPECTED_SUPERVISORD_CONF = """\
; Rendered by llm-entry for one run; lives in a private 0700 folder.
; No key appears here: the programs inherit them from llm-entry's environment.
; entrypoint.inside.launch starts each program from its launch spec (*.launch.json)
; beside this file, which carries argv that this format could not.

[unix_http_server]
file=/run/llm-entry-abc/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
silent=true
logfile=/run/llm-entry-abc/supervisord.log
logfile_maxbytes=5MB
logfile_backups=1
pidfile=/run/llm-entry-abc/supervisord.pid
childlogdir=/run/llm-entry-abc

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

; llm-entry watches every program itself and decides about restarts: supervisord
; never restarts on its own (autorestart=false) and never holds a start back
; (startsecs=0), so every exit is reported to llm-entry as it happens.
; All autostart, so they load at the same time, not one after the other.

""" + expected_program("engine", 10, "; TERM to the leader only (vLLM drains, then stops its workers); "
                                     "KILL to the group.\n") + "\n" + expected_program("proxy", 20)


def supervisord_options(config: Config, run_dir: Path) -> ServerOptions:
    """supervisord's own reading of the file rendered into `run_dir`."""
    path = run_dir / render.SUPERVISORD_CONFIG
    path.write_text(render.render_supervisord_config(config, PYTHON, run_dir))
    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    return options


def supervisord_reads(config: Config, run_dir: Path) -> dict[str, list[str]]:
    """Each program's argv as supervisord itself parses the rendered file."""
    return {process.name: shlex.split(process.command)
            for group in supervisord_options(config, run_dir).process_group_configs
            for process in group.process_configs}


# --- whole files -------------------------------------------------------------

def test_litellm_yaml_is_rendered_exactly() -> None:
    assert render.render_litellm_config(CONFIG) == EXPECTED_LITELLM_YAML


def test_supervisord_conf_is_rendered_exactly() -> None:
    assert render.render_supervisord_config(CONFIG, PYTHON, RUN_DIR) == EXPECTED_SUPERVISORD_CONF


def test_rendered_files_never_hold_the_master_key() -> None:
    for file in render.render_run_files(CONFIG, PYTHON, RUN_DIR):
        assert MASTER_KEY not in file.content, file.name


def test_the_run_folder_holds_six_files() -> None:
    names = [file.name for file in render.render_run_files(CONFIG, PYTHON, RUN_DIR)]
    assert names == ["supervisord.conf", "litellm.yaml", "engine.launch.json", "proxy.launch.json",
                     "proxy-logging.json", "llm_entry_auth.py"]


def test_the_proxy_logging_config_is_valid_json() -> None:
    files = {file.name: file.content for file in render.render_run_files(CONFIG, PYTHON, RUN_DIR)}
    assert isinstance(json.loads(files["proxy-logging.json"]), dict)
    compile(files["llm_entry_auth.py"], "llm_entry_auth.py", "exec")


@pytest.mark.parametrize("name", ["llama-3-8b", "org/model:8b", 'say "hi" #1', "yes", "null", "1.5",
                                  "ünïcode", "${served_model_name}", "a\tb"])
def test_litellm_yaml_keeps_any_served_model_name_as_a_string(name: str) -> None:
    loaded = yaml.safe_load(render.render_litellm_config(dataclasses.replace(CONFIG, served_model_name=name)))
    entry = loaded["model_list"][0]
    assert entry["model_name"] == name
    assert entry["litellm_params"]["model"] == "hosted_vllm/" + name
    assert entry["litellm_params"]["api_base"] == "http://127.0.0.1:3000/v1"
    assert loaded["general_settings"]["master_key"] == "os.environ/LLM_ENTRY_MASTER_KEY"


def test_litellm_yaml_keeps_an_emoji_in_the_served_model_name() -> None:
    name = "llama \U0001F999"
    loaded = yaml.safe_load(render.render_litellm_config(dataclasses.replace(CONFIG, served_model_name=name)))
    assert loaded["model_list"][0]["model_name"] == name


# --- the engine command ------------------------------------------------------

def test_the_gpu_engine_command_has_every_setting() -> None:
    assert render.engine_command(CONFIG) == [
        PYTHON, "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/Llama-3-8B-Instruct",
        "--served-model-name", "llama-3-8b",
        "--host", "127.0.0.1",
        "--port", "3000",
        "--tensor-parallel-size", "4",
        "--shutdown-timeout", "5",
        "--disable-uvicorn-access-log",
        "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.9",
        "--enable-prefix-caching",
    ]


def test_the_engine_in_this_interpreter_gets_the_guard_for_every_model_route() -> None:
    command = render.engine_command(dataclasses.replace(CONFIG, engine_cmd=default_engine_cmd(), engine_args=()))
    assert command[command.index("--middleware") + 1] == "entrypoint.inside.engine_guard.RequireInternalKey"


def test_another_engine_command_gets_no_guard_it_might_not_import() -> None:
    assert "--middleware" not in render.engine_command(CONFIG)   # /opt/venv/bin/python is not this one


def test_the_cpu_engine_command_has_no_gpu_memory_utilization() -> None:
    command = render.engine_command(CPU_CONFIG)
    assert "--gpu-memory-utilization" not in command
    assert command[command.index("--tensor-parallel-size") + 1] == "1"


def test_optional_engine_settings_are_left_out_when_not_given() -> None:
    command = render.engine_command(dataclasses.replace(CONFIG, max_model_len=None, gpu_memory_utilization=None,
                                                        engine_args=()))
    assert "--max-model-len" not in command
    assert "--gpu-memory-utilization" not in command
    assert command[-1] == "--disable-uvicorn-access-log"


def test_no_key_is_on_the_engine_command_line() -> None:
    command = render.engine_launch(CONFIG).argv
    assert MASTER_KEY not in " ".join(command)
    assert not any("api-key" in arg or "api_key" in arg for arg in command)


@pytest.mark.parametrize("grace,seconds", [(25.0, 5), (60.0, 12), (9.0, 1), (3.0, 1)])
def test_the_engine_may_drain_a_fifth_of_the_grace_period(grace: float, seconds: int) -> None:
    config = dataclasses.replace(CONFIG, timing=dataclasses.replace(CONFIG.timing, grace_period=grace))
    assert shutdown_plan(config.timing).engine_drain == seconds


def test_the_engine_launch_hides_the_proxy_keys_from_the_engine() -> None:
    spec = render.engine_launch(CONFIG)
    assert spec.unset == ("LLM_ENTRY_MASTER_KEY", "LITELLM_MASTER_KEY", "LLM_ENTRY_API_KEYS_FILE")
    assert spec.argv == render.engine_command(CONFIG)


def test_the_cpu_engine_launch_sets_the_kv_cache() -> None:
    assert dict(render.engine_launch(CPU_CONFIG).set) == {"VLLM_CPU_KVCACHE_SPACE": "4"}


def test_the_proxy_command_reads_the_run_folder() -> None:
    assert render.proxy_command(CONFIG, PYTHON, RUN_DIR) == [
        PYTHON, "-m", "entrypoint.inside.proxy_server",
        "--config", "/run/llm-entry-abc/litellm.yaml",
        "--host", "0.0.0.0", "--port", "8080", "--num_workers", "2",
        "--log_config", "/run/llm-entry-abc/proxy-logging.json",
    ]


def test_the_proxy_learns_the_engines_address_and_no_key_from_its_launch_spec() -> None:
    spec = render.proxy_launch(CONFIG, PYTHON, RUN_DIR)
    assert spec.argv == render.proxy_command(CONFIG, PYTHON, RUN_DIR)
    assert dict(spec.set) == {"LLM_ENTRY_ENGINE_URL": "http://127.0.0.1:3000",
                              "LLM_ENTRY_REQUEST_TIMEOUT": "600", "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
                              "LLM_ENTRY_LIMITS_STORAGE": "memory://",
                              "PROMETHEUS_MULTIPROC_DIR": "/run/llm-entry-abc/metrics",
                              "LLM_ENTRY_OWN_METRICS": "/run/llm-entry-abc/llm-entry.prom",
                              "LLM_ENTRY_LIMITS_PREFIX": f"llm-entry/{CONFIG.served_model_name}",
                              "LLM_ENTRY_MAX_BODY_SIZE": "67108864", "LLM_ENTRY_MAX_HEADER_SIZE": "65536",
                              "LLM_ENTRY_HEADER_TIMEOUT": "15.0", "LLM_ENTRY_BODY_TIMEOUT": "30.0",
                              "LLM_ENTRY_KEEP_ALIVE_TIMEOUT": "5.0", "LLM_ENTRY_UI": "1"}
    assert spec.unset == ()


# --- supervisord's reading of the commands -------------------------------------

def test_a_percent_sign_in_the_run_folder_is_doubled_for_supervisord() -> None:
    text = render.render_supervisord_config(CONFIG, PYTHON, Path("/tmp/50%run"))
    assert "command=/opt/venv/bin/python -m entrypoint.inside.launch /tmp/50%%run/engine.launch.json" in text
    assert render.supervisor_command_line(["a%(here)s", "100%"]) == "'a%%(here)s' 100%%"


def launched(spec: render.LaunchSpec, tmp_path: Path, env: dict[str, str]) -> dict:
    """What a program started by entrypoint.inside.launch receives: argv and environment."""
    report = [sys.executable, "-c",
              "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))"]
    probe = render.LaunchSpec(report + spec.argv[1:], spec.unset, spec.set)
    path = tmp_path / "spec.json"
    path.write_text(probe.to_json())
    done = subprocess.run([sys.executable, "-m", "entrypoint.inside.launch", str(path)], env=env,
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("model", ["/models/Llama-3-8B-Instruct", "/models/50%off", "/models/%(here)s",
                                   "/models/with space", "/models/it's", '/models/"quoted"', "/models/$HOME",
                                   "/models/a #b", "/models/a ;b", "/models/ünï"])
def test_the_engine_gets_the_exact_argv_through_supervisord_and_the_launcher(tmp_path: Path, model: str) -> None:
    config = dataclasses.replace(CPU_CONFIG, model=model, served_model_name="team model #2; 100%",
                                 engine_args=("--chat-template", "{% if x %} ;# {{ y }}{% endif %}"))
    commands = supervisord_reads(config, tmp_path)
    assert commands["engine"] == render.launcher_command(PYTHON, tmp_path / render.ENGINE_LAUNCH)
    assert commands["proxy"] == render.launcher_command(PYTHON, tmp_path / render.PROXY_LAUNCH)
    env = {**os.environ, "LLM_ENTRY_MASTER_KEY": MASTER_KEY, "KEEP_ME": "1"}
    seen = launched(render.engine_launch(config), tmp_path, env)
    assert seen["argv"] == render.engine_command(config)[1:]
    assert "LLM_ENTRY_MASTER_KEY" not in seen["env"]
    assert seen["env"]["KEEP_ME"] == "1"
    assert seen["env"]["VLLM_CPU_KVCACHE_SPACE"] == "4"


def test_the_launcher_says_what_it_cannot_run(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(render.LaunchSpec(["/nonexistent/engine", "--x"]).to_json())
    done = subprocess.run([sys.executable, "-m", "entrypoint.inside.launch", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 127
    assert "cannot run '/nonexistent/engine'" in done.stderr


# --- --dry-run -----------------------------------------------------------------

@pytest.fixture
def dry_run_config(tmp_path: Path) -> Config:
    return make_config(model_folder(tmp_path), node_gpus=NodeGpus(6, "nvidia-smi"), dry_run=True)


def test_dry_run_explains_tensor_parallel_4_for_6_gpus_and_32_heads(dry_run_config: Config) -> None:
    text = render.dry_run_text(dry_run_config, PYTHON, Path("<run-dir>"))
    lines = text.splitlines()
    assert lines[0] == "# GPUs: 6 GPUs (via nvidia-smi)"   # the line a real start prints
    assert lines[1] == "# 6 GPUs, 32 heads (8 KV): tensor parallel 4, 2 GPUs idle"
    assert "--tensor-parallel-size 4" in lines[3]
    assert "# engine settings: none (VLLM_API_KEY is generated at every start)" in lines


def test_dry_run_shows_both_rendered_configs(dry_run_config: Config) -> None:
    text = render.dry_run_text(dry_run_config, PYTHON, Path("<run-dir>"))
    assert "# supervisord.conf:\n" in text
    assert "# litellm.yaml:\n" in text
    assert text.endswith("request_timeout: 600\n")


def test_dry_run_never_shows_the_master_key(dry_run_config: Config) -> None:
    assert MASTER_KEY not in render.dry_run_text(dry_run_config, PYTHON, Path("<run-dir>"))


def test_dry_run_names_the_cpu_engine_settings() -> None:
    text = render.dry_run_text(CPU_CONFIG, PYTHON, RUN_DIR)
    assert "# engine settings: VLLM_CPU_KVCACHE_SPACE=4 (VLLM_API_KEY is generated at every start)" in text
    assert "# no GPU visible: the engine runs on the CPU" in text


# --- the keys' limits and the private redis-server -------------------------------

KEYS_CONFIG = dataclasses.replace(CONFIG, api_keys_file=Path("/run/secrets/llm/keys"))   # 2 proxy workers
ONE_WORKER_KEYS_CONFIG = dataclasses.replace(KEYS_CONFIG, proxy_workers=1)
REDIS_PASSWORD = "r3d1s-Pa55w0rd-kQ8zX"
SHARED_REDIS_CONFIG = dataclasses.replace(
    KEYS_CONFIG, redis_url=check_redis_url(f"redis://:{REDIS_PASSWORD}@redis.shared:6380/2"))

EXPECTED_REDIS_CONF = """\
# Rendered by llm-entry for one run: the private redis-server that keeps the
# keys' counters for every proxy worker. No TCP port, a unix socket only its
# user may open. Without --state-dir it lives and dies with the run and
# writes nothing to disk; with it, its append-only file keeps the counts
# (quotas' above all) across restarts.
port 0
unixsocket "/run/llm-entry-abc/redis.sock"
unixsocketperm 700
dir "/run/llm-entry-abc"
daemonize no
# Its output goes through supervisord into the container log, like the others'.
logfile ""
loglevel warning
save ""
appendonly no
# Counters expire on their own; should they ever fill this, the nearest to
# expiring go first (a minute's rate windows long before a quota's period).
maxmemory 64mb
maxmemory-policy volatile-ttl
"""

EXPECTED_LIMITER_PROGRAM = """
; Only when several proxy workers must share the keys' limit counters: a
; private redis-server on a unix socket. It starts before the proxy and stops
; after it (priority), since the proxy counts in it until it has drained.
""" + expected_program("limiter", 15)


def test_redis_conf_is_rendered_exactly() -> None:
    assert render.render_redis_config(RUN_DIR) == EXPECTED_REDIS_CONF


def test_supervisord_conf_with_the_limiter_is_rendered_exactly() -> None:
    assert (render.render_supervisord_config(KEYS_CONFIG, PYTHON, RUN_DIR)
            == EXPECTED_SUPERVISORD_CONF + EXPECTED_LIMITER_PROGRAM)


@pytest.mark.parametrize("config", [CONFIG, ONE_WORKER_KEYS_CONFIG, SHARED_REDIS_CONFIG],
                         ids=["no keys file", "one worker", "--redis-url"])
def test_without_a_private_redis_server_supervisord_runs_only_the_engine_and_the_proxy(config: Config) -> None:
    assert render.supervised_programs(config) == ("engine", "proxy")
    assert render.render_supervisord_config(config, PYTHON, RUN_DIR) == EXPECTED_SUPERVISORD_CONF
    assert [file.name for file in render.render_run_files(config, PYTHON, RUN_DIR)] == [
        "supervisord.conf", "litellm.yaml", "engine.launch.json", "proxy.launch.json",
        "proxy-logging.json", "llm_entry_auth.py"]


def test_a_keys_file_with_two_proxy_workers_adds_the_limiter_and_its_files() -> None:
    assert render.supervised_programs(KEYS_CONFIG) == ("engine", "proxy", "limiter")
    names = [file.name for file in render.render_run_files(KEYS_CONFIG, PYTHON, RUN_DIR)]
    assert names[-2:] == ["redis.conf", "limiter.launch.json"]


def test_supervisord_starts_the_limiter_before_the_proxy_and_stops_it_after(tmp_path: Path) -> None:
    priority = {group.name: group.priority
                for group in supervisord_options(KEYS_CONFIG, tmp_path).process_group_configs}
    assert priority["engine"] < priority["limiter"] < priority["proxy"]
    assert supervisord_reads(KEYS_CONFIG, tmp_path)["limiter"] == render.launcher_command(
        PYTHON, tmp_path / render.LIMITER_LAUNCH)


def test_the_limiter_runs_redis_server_on_the_rendered_config_without_any_key() -> None:
    spec = render.limiter_launch(RUN_DIR)
    assert spec.argv == ["redis-server", "/run/llm-entry-abc/redis.conf"]
    assert set(spec.unset) == {"LLM_ENTRY_MASTER_KEY", "LITELLM_MASTER_KEY", "LLM_ENTRY_API_KEYS_FILE",
                               "LLM_ENTRY_ENGINE_KEY", "VLLM_API_KEY"}


@pytest.mark.parametrize("config,storage", [
    (CONFIG, "memory://"),
    (ONE_WORKER_KEYS_CONFIG, "memory://"),
    (KEYS_CONFIG, "async+redis+unix:///run/llm-entry-abc/redis.sock"),
    (SHARED_REDIS_CONFIG, f"async+redis://:{REDIS_PASSWORD}@redis.shared:6380/2"),
], ids=["no keys file", "one worker", "private redis-server", "--redis-url"])
def test_the_proxy_learns_where_the_limit_counters_live(config: Config, storage: str) -> None:
    assert dict(render.proxy_launch(config, PYTHON, RUN_DIR).set)["LLM_ENTRY_LIMITS_STORAGE"] == storage


def test_a_redis_password_reaches_only_the_proxys_launch_spec() -> None:
    for file in render.render_run_files(SHARED_REDIS_CONFIG, PYTHON, RUN_DIR):
        assert (REDIS_PASSWORD in file.content) == (file.name == "proxy.launch.json"), file.name
    assert REDIS_PASSWORD not in render.dry_run_text(SHARED_REDIS_CONFIG, PYTHON, Path("<run-dir>"))


def test_redis_server_reads_a_run_folder_with_a_space_and_a_quote_back_exactly(tmp_path: Path) -> None:
    run_dir = tmp_path / 'a b"c'
    run_dir.mkdir()
    (run_dir / "redis.conf").write_text(render.render_redis_config(run_dir))
    server = subprocess.Popen(["redis-server", str(run_dir / "redis.conf")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        import redis
        client = redis.Redis(unix_socket_path=str(run_dir / "redis.sock"), socket_timeout=5)
        deadline = time.monotonic() + 10
        while not (run_dir / "redis.sock").exists():
            assert time.monotonic() < deadline and server.poll() is None, "redis-server did not open its socket"
            time.sleep(0.02)
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("dir") == {"dir": str(run_dir)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-ttl"}
        assert client.config_get("save") == {"save": ""}
        client.close()
    finally:
        server.terminate()
        server.wait(10)


def test_dry_run_says_who_keeps_the_limits_and_shows_redis_conf() -> None:
    text = render.dry_run_text(KEYS_CONFIG, PYTHON, Path("<run-dir>"))
    assert ("# limits: a private redis-server on a unix socket holds them, so 2 proxy workers share exact counts"
            in text.splitlines())
    assert '# redis.conf:\n# Rendered by llm-entry' in text
    assert 'unixsocket "<run-dir>/redis.sock"' in text


def test_dry_run_shows_a_redis_url_without_its_password() -> None:
    lines = render.dry_run_text(SHARED_REDIS_CONFIG, PYTHON, Path("<run-dir>")).splitlines()
    assert ("# limits: the Redis at --redis-url redis://:***@redis.shared:6380/2 holds them, "
            "shared by every replica that names it") in lines
