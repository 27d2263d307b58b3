"""The vLLM test double behaves like the parts of vLLM llm-entry relies on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests

from bench.procs import free_port

from repo_paths import ENGINE_DOUBLE

DOUBLE = ENGINE_DOUBLE
DEADLINE_S = 10.0
SERVED_NAME = "demo"
KEY = "engine-secret"


def wait_until(condition, what: str, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def is_running(pid: int) -> bool:
    """Alive and not a zombie (orphans may wait for a reaper that never comes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@dataclass
class Double:
    process: subprocess.Popen
    port: int
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.stdout.read_text()

    def errors(self) -> str:
        return self.stderr.read_text()

    def health(self) -> int | None:
        """The /health status, or None while the port is closed."""
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code
        except requests.ConnectionError:
            return None

    def wait_ready(self) -> None:
        wait_until(lambda: self.health() == 200, "/health 200")

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=DEADLINE_S)


@pytest.fixture
def start_double(tmp_path):
    """Starts doubles in their own process groups; kills every group afterwards."""
    started: list[subprocess.Popen] = []

    def start(*flags: str, env: dict[str, str] | None = None) -> Double:
        port, n = free_port(), len(started)
        stdout, stderr = tmp_path / f"double-{n}.out", tmp_path / f"double-{n}.err"
        environment = {k: v for k, v in os.environ.items()
                       if not k.startswith("ENGINE_DOUBLE_") and k != "VLLM_API_KEY"}
        environment.update(env or {})
        command = [sys.executable, str(DOUBLE), "--model", "/models/demo", "--host", "127.0.0.1",
                   "--port", str(port), "--served-model-name", SERVED_NAME,
                   "--tensor-parallel-size", "1", *flags]
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            process = subprocess.Popen(command, stdout=out, stderr=err, env=environment,
                                       start_new_session=True)
        started.append(process)
        return Double(process, port, stdout, stderr)

    yield start
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=DEADLINE_S)


def read_pids(path: Path, count: int) -> list[int]:
    wait_until(lambda: path.exists() and len(path.read_text().split()) == count, f"{count} pids in {path}")
    return [int(pid) for pid in path.read_text().split()]


def sse_lines(response: requests.Response):
    for line in response.iter_lines(decode_unicode=True):
        if line:
            yield line


def test_port_is_refused_while_loading_then_health_is_200(start_double):
    started = time.monotonic()
    double = start_double(env={"ENGINE_DOUBLE_STARTUP_DELAY": "0.5"})
    wait_until(lambda: "loading model" in double.output(), "the loading line")
    assert double.health() is None
    double.wait_ready()
    assert time.monotonic() - started >= 0.5


def test_models_need_the_api_key(start_double):
    double = start_double("--api-key", KEY, "--enforce-eager")
    double.wait_ready()
    models = f"{double.url}/v1/models"

    missing = requests.get(models, timeout=DEADLINE_S)
    wrong = requests.get(models, headers={"Authorization": "Bearer nope"}, timeout=DEADLINE_S)
    right = requests.get(models, headers={"Authorization": f"Bearer {KEY}"}, timeout=DEADLINE_S)

    assert (missing.status_code, missing.json()) == (401, {"error": "Unauthorized"})
    assert missing.headers["content-type"] == "application/json"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert [m["id"] for m in right.json()["data"]] == [SERVED_NAME]
    first_line = double.output().splitlines()[0]
    assert first_line.startswith("engine-double: argv ") and "--enforce-eager" in first_line
    assert KEY not in double.output()


def test_vllm_api_key_variable_is_the_key_without_the_flag(start_double):
    double = start_double(env={"VLLM_API_KEY": KEY})
    double.wait_ready()
    assert requests.get(f"{double.url}/v1/models", timeout=DEADLINE_S).status_code == 401
    assert double.client().models.list().data[0].id == SERVED_NAME


def test_answers_are_deterministic(start_double):
    double = start_double("--api-key", KEY)
    double.wait_ready()
    client = double.client()

    chat = client.chat.completions.create(model=SERVED_NAME, messages=[{"role": "user", "content": "hello"}])
    text = client.completions.create(model=SERVED_NAME, prompt="ping")
    vectors = client.embeddings.create(model=SERVED_NAME, input=["a", "b", "a"])

    assert chat.choices[0].message.content == "double says: hello"
    assert chat.usage.completion_tokens == 8
    assert text.choices[0].text == "double says: ping"
    a, b, a_again = (item.embedding for item in vectors.data)
    assert a == pytest.approx(a_again) and a != pytest.approx(b) and len(a) == 8


def test_stream_chunks_arrive_in_order_and_end_with_done(start_double):
    double = start_double("--api-key", KEY, env={"ENGINE_DOUBLE_TOKENS": "6",
                                                 "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.01"})
    double.wait_ready()
    body = {"model": SERVED_NAME, "stream": True,
            "messages": [{"role": "user", "content": "one two"}]}

    stream = double.client().chat.completions.create(**body)
    chunks = list(stream)
    with requests.post(f"{double.url}/v1/chat/completions", json=body, stream=True,
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=DEADLINE_S) as raw:
        lines = list(sse_lines(raw))

    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert deltas == ["double", " says:", " one", " two", " tok", " tok"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert lines[-1] == "data: [DONE]" and len(lines) == 1 + 6 + 1 + 1


def test_unknown_route_and_unknown_model_get_404(start_double):
    double = start_double()
    double.wait_ready()
    route = requests.get(f"{double.url}/nothing-here", timeout=DEADLINE_S)
    with pytest.raises(openai.NotFoundError):
        double.client().chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    assert (route.status_code, route.json()) == (404, {"detail": "Not Found"})


def test_fail_at_start_exits_1_with_the_message_on_stderr(start_double):
    double = start_double(env={"ENGINE_DOUBLE_FAIL_AT_START": "Total number of attention heads (4) "
                                                              "must be divisible by tensor parallel size (3)."})
    assert double.process.wait(timeout=DEADLINE_S) == 1
    assert double.errors().splitlines()[-1] == ("ValueError: Total number of attention heads (4) "
                                                "must be divisible by tensor parallel size (3).")


def test_sigkill_leaves_the_workers_alive_until_the_group_is_killed(start_double, tmp_path):
    pid_file = tmp_path / "engine.pids"
    double = start_double(env={"ENGINE_DOUBLE_WORKERS": "2", "ENGINE_DOUBLE_PID_FILE": str(pid_file)})
    double_pid, *workers = read_pids(pid_file, 3)
    assert double_pid == double.process.pid

    os.kill(double.process.pid, signal.SIGKILL)
    double.process.wait(timeout=DEADLINE_S)
    watch_until = time.monotonic() + 0.3
    while time.monotonic() < watch_until:  # a worker that watched its parent would go now
        assert all(is_running(pid) for pid in workers)
        time.sleep(0.02)

    os.killpg(double.process.pid, signal.SIGKILL)
    wait_until(lambda: not any(is_running(pid) for pid in workers), "the workers to die")


def test_sigterm_stops_the_workers_and_exits_0(start_double, tmp_path):
    pid_file = tmp_path / "engine.pids"
    double = start_double(env={"ENGINE_DOUBLE_WORKERS": "3", "ENGINE_DOUBLE_PID_FILE": str(pid_file)})
    _, *workers = read_pids(pid_file, 4)
    double.wait_ready()

    double.process.send_signal(signal.SIGTERM)

    assert double.process.wait(timeout=DEADLINE_S) == 0
    assert not any(is_running(pid) for pid in workers)
    assert "shutting down" in double.output()


def start_stream(double: Double) -> tuple[requests.Response, list[str], Iterator[str]]:
    """A slow stream, read up to its first token."""
    response = requests.post(f"{double.url}/v1/completions", stream=True, timeout=DEADLINE_S,
                             json={"model": SERVED_NAME, "prompt": "p", "stream": True})
    lines = sse_lines(response)
    return response, [next(lines)], lines


def test_shutdown_timeout_lets_a_stream_in_flight_finish(start_double):
    double = start_double("--shutdown-timeout", "5", env={"ENGINE_DOUBLE_TOKENS": "10",
                                                          "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.05"})
    double.wait_ready()
    response, seen, rest = start_stream(double)

    os.killpg(double.process.pid, signal.SIGTERM)  # what supervisord's stopasgroup sends
    seen.extend(rest)

    assert seen[-1] == "data: [DONE]" and len(seen) == 10 + 1 + 1
    assert double.process.wait(timeout=DEADLINE_S) == 0
    response.close()


def test_shutdown_timeout_0_cuts_a_stream_in_flight(start_double):
    double = start_double(env={"ENGINE_DOUBLE_TOKENS": "10", "ENGINE_DOUBLE_TOKEN_INTERVAL": "0.05"})
    double.wait_ready()
    response, seen, rest = start_stream(double)

    double.process.send_signal(signal.SIGTERM)
    with pytest.raises(requests.RequestException):
        seen.extend(rest)

    assert "data: [DONE]" not in seen
    assert double.process.wait(timeout=DEADLINE_S) == 0
    response.close()


def test_sigterm_is_ignored_while_loading_when_asked(start_double):
    double = start_double(env={"ENGINE_DOUBLE_STARTUP_DELAY": "0.5",
                               "ENGINE_DOUBLE_IGNORE_SIGTERM_DURING_STARTUP": "1"})
    wait_until(lambda: "loading model" in double.output(), "the loading line")

    double.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM ignored" in double.output(), "the ignored-SIGTERM line")
    double.wait_ready()
    double.process.send_signal(signal.SIGTERM)

    assert double.process.wait(timeout=DEADLINE_S) == 0


def test_exit_after_ends_the_engine_with_the_given_code(start_double, tmp_path):
    pid_file = tmp_path / "engine.pids"
    double = start_double(env={"ENGINE_DOUBLE_EXIT_AFTER": "0.2", "ENGINE_DOUBLE_EXIT_CODE": "3",
                               "ENGINE_DOUBLE_PID_FILE": str(pid_file)})
    _, worker = read_pids(pid_file, 2)

    assert double.process.wait(timeout=DEADLINE_S) == 3
    assert "engine core died" in double.errors().splitlines()[-1]
    assert not is_running(worker)


def test_health_answers_the_status_in_the_status_file(start_double, tmp_path):
    status_file = tmp_path / "health-status"
    double = start_double("--api-key", KEY, env={"ENGINE_DOUBLE_HEALTH_STATUS_FILE": str(status_file)})
    double.wait_ready()

    status_file.write_text("503\n")
    dead = double.health()
    status_file.unlink()

    assert (dead, double.health()) == (503, 200)


def test_many_concurrent_keep_alive_clients_are_served(start_double):
    double = start_double("--api-key", KEY)
    double.wait_ready()
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}]}

    def client(_):
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {KEY}"
            return [session.post(f"{double.url}/v1/chat/completions", json=body,
                                 timeout=DEADLINE_S).status_code for _ in range(10)]

    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = [s for result in pool.map(client, range(32)) for s in result]

    assert statuses == [200] * 320
