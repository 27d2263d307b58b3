"""The Dockerfile's two targets, read as text (building them is the container
tier's job): the runtime layout both share, the user they run as, and the
GPU target's two Pythons."""

from __future__ import annotations

import re

from entrypoint.engine_options import default_cache_dir

from repo_paths import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
COMMON = re.compile(r"# --- common: runtime layout ---\n(.*?)# --- end common ---", re.S)


def stage(name: str) -> str:
    starts = {m.group(1): m.start() for m in re.finditer(r"^FROM \S+ AS (\w+)$", DOCKERFILE, re.M)}
    following = [start for start in starts.values() if start > starts[name]]
    return DOCKERFILE[starts[name]:min(following, default=len(DOCKERFILE))]


def instructions(text: str) -> list[str]:
    """One string per instruction, continuation lines joined, comments dropped."""
    lines = [line for line in text.replace("\\\n", " ").splitlines() if not line.lstrip().startswith("#")]
    return [line for line in lines if line.strip()]


def test_both_targets_share_the_runtime_layout_word_for_word():
    cpu, gpu = COMMON.findall(stage("cpu")), COMMON.findall(stage("gpu"))
    assert len(cpu) == len(gpu) == 1 and cpu == gpu


def test_the_default_user_is_numeric_non_root_in_group_0():
    (user,) = [line for line in instructions(COMMON.findall(DOCKERFILE)[0]) if line.startswith("USER ")]
    uid, gid = user.split()[1].split(":")
    assert uid.isdigit() and int(uid) != 0 and gid == "0"


def test_every_cache_and_home_points_under_tmp():
    env = " ".join(line for line in instructions(COMMON.findall(DOCKERFILE)[0]) if line.startswith("ENV "))
    paths = dict(re.findall(r"(\w+)=(\S+)", env))
    for name in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR",
                 "TORCHINDUCTOR_CACHE_DIR"):
        assert paths[name].startswith("/tmp/"), name
    assert paths["LLM_ENTRY_PROBE_DIR"] == "/etc/probe"


def test_the_cpu_image_carries_the_demo_model_where_its_cache_dir_says():
    cpu = stage("cpu")
    assert "LLM_ENTRY_CACHE_DIR=/opt/llm-entry/cache" in cpu
    assert "ensure_demo_model(pathlib.Path(os.environ[\"LLM_ENTRY_CACHE_DIR\"]))" in cpu
    assert not str(default_cache_dir()).startswith("/opt/")   # the image's setting, not the code's default


def test_the_gpu_image_gives_vllms_python_llm_entry_alone():
    """Every pip install into the image's own Python (vLLM's) is --no-deps; the
    full install goes to the proxy's virtualenv, whose Python runs llm-entry."""
    installs = [command for line in instructions(stage("gpu")) for command in line.split(";")
                if re.search(r"\bpip\b.*\binstall\b", command)]
    assert len(installs) == 2
    for command in installs:
        assert "--no-deps" in command or "--python /opt/llm-entry/venv/bin/python" in command, command
    assert "PATH=/opt/llm-entry/venv/bin:$PATH" in stage("gpu")
    assert "LLM_ENTRY_ENGINE_PYTHON=/opt/llm-entry/engine-python" in stage("gpu")


def test_the_build_context_holds_only_what_the_image_copies():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored   # everything else (.venv, caches, local keys) stays out
    copied = {line.split()[1] for line in instructions(DOCKERFILE) if line.startswith("COPY ")}
    for path in copied:
        assert f"!{path}" in ignored or f"!{path}/" in ignored, path
