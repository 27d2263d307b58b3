"""The CPU image, built by scripts/build-image.sh and run with podman as a
restricted Kubernetes pod runs it: an arbitrary UID in group 0, a read-only
root, a tmpfs /tmp, no capabilities, no privilege escalation, the probe folder
as a volume and the master key as a mounted file. And once as root.

The image is what users run: nothing here changes it. The OCI runtime is the
harness's runc wrapper (runc-no-rlimits, beside this file), because the root
of this project's machines may not set rlimits; it is not part of the image.
Each container is removed by its own name when its fixture ends.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

from bench.procs import free_ports, wait_for

from harness import MASTER_KEY, WRONG_KEY
from repo_paths import REPO

IMAGE = "localhost/llm-entry:cpu"
RUNTIME = Path(__file__).with_name("runc-no-rlimits")
# What Pod Security "restricted" and OpenShift's restricted SCC give a pod.
RESTRICTED = ("--user", "1000770000:0", "--read-only", "--tmpfs", "/tmp:rw,mode=1777",
              "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
AS_ROOT = ("--user", "0:0")
BUILD_DEADLINE = 1800.0   # a cold cache: the Debian base, the wheels, the image
START_DEADLINE = 300.0    # the demo model on 2 busy cores: 30-90 s
STOP_GRACE = 30           # what `podman stop -t` gives, as Kubernetes' default grace
SECRETS = "/run/secrets/llm"
# vLLM's engine core and its workers share a 160 MiB ring buffer in /dev/shm;
# a container runtime gives 64 MiB unless told (the kit mounts a memory emptyDir).
SHM_SIZE = "1g"


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="session")
def image() -> str:
    """The CPU image, built now (the build's caches make a second build quick)."""
    started = time.monotonic()
    done = subprocess.run(["bash", "scripts/build-image.sh", "cpu"], cwd=REPO, capture_output=True, text=True,
                          timeout=BUILD_DEADLINE, env={**os.environ, "IMAGE_TOOL": "podman"})
    assert done.returncode == 0, f"build-image.sh cpu failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    print(f"\nbuild-image.sh cpu: {time.monotonic() - started:.0f} s")
    return IMAGE


class Container:
    """One container of the CPU image serving the demo model, run detached."""

    def __init__(self, image: str, tmp: Path, user: tuple[str, ...], extra: tuple[str, ...] = ()):
        self.name = f"llm-entry-test-{secrets.token_hex(4)}"
        (self.port,) = free_ports(1)
        probe, keys = tmp / "probe", tmp / "secrets"
        probe.mkdir()
        keys.mkdir()
        # An emptyDir is writable by every UID; a Secret's files are 0644.
        probe.chmod(0o777)
        (keys / "master-key").write_text(MASTER_KEY + "\n")
        (keys / "master-key").chmod(0o644)
        podman("run", "--detach", "--name", self.name, "--runtime", str(RUNTIME), *user, *extra,
               "--shm-size", SHM_SIZE, "--publish", f"127.0.0.1:{self.port}:8080",
               "--volume", f"{probe}:/etc/probe", "--volume", f"{keys}:{SECRETS}:ro",
               image, "--model", "demo", "--master-key-file", f"{SECRETS}/master-key")

    def state(self) -> dict:
        return json.loads(podman("inspect", "--type", "container", "--format", "{{json .State}}", self.name).stdout)

    def probe(self, name: str) -> int:
        return podman("exec", self.name, f"/opt/llm-entry/probes/{name}", check=False, timeout=30).returncode

    def wait_started(self) -> None:
        wait_for(lambda: not self.state()["Running"] or self.probe("startup") == 0, START_DEADLINE,
                 "the image's startup probe", poll=1.0)
        assert self.state()["Running"], f"the container exited before it started:\n{self.logs()[-4000:]}"

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url("/v1"), api_key=MASTER_KEY, timeout=120, max_retries=0)

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture(scope="module")
def restricted(image: str, tmp_path_factory: pytest.TempPathFactory):
    container = Container(image, tmp_path_factory.mktemp("restricted"), RESTRICTED)
    try:
        container.wait_started()
        yield container
    finally:
        container.remove()


def say_hi(container: Container, **extra):
    return container.client().chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], **{"max_tokens": 8, **extra})


def test_the_image_defaults_to_a_numeric_user_in_group_0(image):
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) != 0 and group == "0"
    assert config["Entrypoint"] == ["llm-entry"]


def test_a_restricted_pod_chats_through_the_mapped_port(restricted):
    answer = say_hi(restricted)
    assert answer.choices[0].message.content is not None and answer.usage.completion_tokens > 0


def test_readiness_and_liveness_pass_once_started(restricted):
    assert restricted.probe("readiness") == 0
    assert restricted.probe("liveness") == 0


def test_no_key_and_a_wrong_key_are_refused(restricted):
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert requests.post(restricted.url("/v1/chat/completions"), json=body, timeout=30).status_code == 401
    assert requests.post(restricted.url("/v1/chat/completions"), json=body, timeout=30,
                         headers={"Authorization": f"Bearer {WRONG_KEY}"}).status_code == 401


def test_nothing_outside_tmp_and_the_probe_folder_was_written(restricted):
    # --read-only refuses every other write; this checks nothing failed for it
    # and lists what was written where it may be.
    written = podman("exec", restricted.name, "find", "/tmp", "/etc/probe", "-maxdepth", "2").stdout
    print("\nwritten under /tmp and /etc/probe:\n" + written)
    assert "/tmp/llm-entry-" in written   # the run folder


def test_a_stop_lets_a_stream_in_flight_finish_and_exits_0(restricted):
    # Last in this module: it stops the container the tests above share.
    chunks: list[str] = []
    finish: list[str | None] = []
    failed: list[BaseException] = []
    first = threading.Event()

    def stream() -> None:
        try:
            for chunk in say_hi(restricted, stream=True, max_tokens=1000, extra_body={"ignore_eos": True}):
                if chunk.choices:
                    chunks.append(chunk.choices[0].delta.content or "")
                    finish.append(chunk.choices[0].finish_reason)
                    first.set()
        except BaseException as error:   # shown by the assertions below, not lost in the thread
            failed.append(error)
            first.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first.wait(60) and not failed, f"the stream sent nothing: {failed}"
    stopped = podman("stop", "--time", str(STOP_GRACE), restricted.name, timeout=STOP_GRACE + 30, check=False)
    reader.join(STOP_GRACE + 30)
    assert stopped.returncode == 0, stopped.stderr
    assert not failed and finish[-1] == "length", (
        f"the stream ended early after {len(chunks)} chunks ({failed}):\n{restricted.logs()[-3000:]}")
    state = restricted.state()
    assert not state["Running"] and state["ExitCode"] == 0, restricted.logs()[-3000:]


def test_no_key_appears_in_the_log(restricted):
    logs = restricted.logs()
    assert logs, "the container logged nothing"
    assert MASTER_KEY not in logs and WRONG_KEY not in logs


def test_the_image_still_runs_as_root_and_vllm_from_another_python(image, tmp_path):
    # As the GPU image runs vLLM: --engine-python names a Python other than
    # llm-entry's (here a wrapper of the same one, which leaves a mark).
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "engine-python").write_text('#!/bin/sh\n: > /tmp/engine-python-ran\nexec /opt/venv/bin/python "$@"\n')
    (engine / "engine-python").chmod(0o755)
    container = Container(image, tmp_path, AS_ROOT, ("--volume", f"{engine}:/opt/engine:ro",
                                                     "--env", "LLM_ENTRY_ENGINE_PYTHON=/opt/engine/engine-python"))
    try:
        container.wait_started()
        assert say_hi(container).usage.completion_tokens > 0
        assert podman("exec", container.name, "test", "-e", "/tmp/engine-python-ran", check=False).returncode == 0
        podman("stop", "--time", str(STOP_GRACE), container.name, timeout=STOP_GRACE + 30)
        assert container.state()["ExitCode"] == 0, container.logs()[-3000:]
    finally:
        container.remove()
