"""Runs the real llm-entry as a subprocess for integration tests.

Real supervisord, real LiteLLM, and the engine test double (or the real vLLM
in the e2e tier), on free ports, with a private probe dir. Every process the
run creates is recorded while it lives, and `assert_nothing_left` proves that
none outlived llm-entry. Waiting is polling against deadlines, never sleeping.
Reading /proc, finding free ports and waiting are bench.procs' functions,
which the benchmarks use too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from bench.procs import (
    alive,
    children_of,
    cmdline,
    descendants,
    environment_of,
    free_ports,
    pgid_of,
    program_under,
    supervisord_under,
    wait_for,
)

from repo_paths import ENGINE_DOUBLE

MASTER_KEY = "sk-test-" + "7f3a9c2e4b8d1f6a0c5e9b3d7a2f4c8e"
WRONG_KEY = "sk-wrong-" + "0123456789abcdef01234567"
PROXY_START_DEADLINE = 120.0   # LiteLLM takes 10-30 s on a busy 2-core machine


class Entry:
    """One llm-entry process and everything it starts."""

    def __init__(self, tmp: Path, args: list[str] | None = None, env: dict[str, str] | None = None,
                 model: str | None = None, engine_cmd: str | None = None, wrapper: list[str] | None = None):
        self.tmp = tmp
        self.wrapper = wrapper or []   # e.g. unshare, to run llm-entry as PID 1
        self.port, self.engine_port = free_ports(2)
        self.probe_dir = tmp / "probe"
        self.pid_file = tmp / "engine-pids"
        if model is None:
            model_dir = tmp / "model"
            model_dir.mkdir(exist_ok=True)
            (model_dir / "config.json").write_text('{"num_attention_heads": 8, "num_key_value_heads": 8}')
            model = str(model_dir)
        self.served_model_name = Path(model).name
        self.out_path = tmp / "stdout.log"
        self.err_path = tmp / "stderr.log"
        self.args = [
            "--model", model, "--host", "127.0.0.1", "--port", str(self.port),
            "--engine-port", str(self.engine_port), "--probe-dir", str(self.probe_dir),
            *(args or []),
        ]
        self.env = {
            **os.environ,
            "LLM_ENTRY_MASTER_KEY": MASTER_KEY,
            "LLM_ENTRY_ENGINE_CMD": engine_cmd or f"{sys.executable} {ENGINE_DOUBLE}",
            "ENGINE_DOUBLE_PID_FILE": str(self.pid_file),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        self.env.pop("KUBERNETES_SERVICE_HOST", None)
        self.process: subprocess.Popen | None = None
        self.seen: set[int] = set()

    # -- running --------------------------------------------------------------
    def start(self) -> Entry:
        self.process = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "entrypoint.cli", *self.args], env=self.env,
            stdout=self.out_path.open("wb"), stderr=self.err_path.open("wb"),
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """llm-entry's PID (as seen from here), under any wrapper."""
        assert self.process is not None
        pid = self.process.pid
        for _ in self.wrapper[:1]:
            children = wait_for(lambda pid=pid: children_of(pid), 10, "llm-entry under its wrapper")
            pid = children[0]
        return pid

    def record_tree(self) -> set[int]:
        """Remember every process of the run (called while it runs)."""
        if self.process is not None and self.process.poll() is None:
            self.seen |= descendants(self.pid)
        if self.pid_file.exists() and not self.wrapper:  # a PID namespace has its own numbers
            self.seen |= {int(x) for x in self.pid_file.read_text().split() if x.isdigit()}
        return self.seen

    def program_pid(self, name: str) -> int:
        """PID of the engine or proxy, as the leader of its process group."""
        pid = program_under(self.pid, name)
        if pid is None:
            raise AssertionError(f"no {name} process under llm-entry")
        return pid

    def supervisord_pid(self) -> int | None:
        """supervisord's PID, or None while llm-entry has not started it."""
        return supervisord_under(self.pid)

    def engine_key(self) -> str:
        """The internal key llm-entry gave the engine, read from the engine's
        environment as any process of the same user could."""
        return environment_of(self.program_pid("engine"))["VLLM_API_KEY"]

    def limiter_pid(self) -> int | None:
        """PID of the private redis-server (the `limiter` program), or None when none runs.
        redis-server rewrites its title: "redis-server unixsocket:/run/.../redis.sock"."""
        for pid in descendants(self.pid):
            title = cmdline(pid)[0].split(b" ")[0]
            if Path(title.decode(errors="replace")).name == "redis-server" and pgid_of(pid) == pid:
                return pid
        return None

    def run_dir(self) -> Path:
        """llm-entry's private run folder, from supervisord's command line."""
        supervisord = self.supervisord_pid()
        argv = cmdline(supervisord) if supervisord is not None else []
        if b"-c" not in argv:
            raise AssertionError("no supervisord under llm-entry")
        return Path(argv[argv.index(b"-c") + 1].decode()).parent

    def send(self, sig: int) -> None:
        self.record_tree()
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"llm-entry did not exit within {timeout:g} s\n{self.output()}") from None

    def stop(self, timeout: float = 60.0) -> int:
        self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill_everything(self) -> None:
        """Test teardown: whatever happened, leave nothing running."""
        self.record_tree()
        pids = set(self.seen)
        if self.process is not None and self.process.poll() is None:
            pids.add(self.pid)
        for pid in pids:
            for kill in (lambda pid=pid: os.killpg(pid, signal.SIGKILL), lambda pid=pid: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass

    # -- looking ----------------------------------------------------------------
    def has(self, name: str) -> bool:
        return (self.probe_dir / name).exists()

    def probe_text(self, name: str) -> str:
        try:
            return (self.probe_dir / name).read_text()
        except FileNotFoundError:
            return ""

    def ready(self) -> bool:
        """What the readiness probe decides: no not-ready and a heartbeat that
        vouches for now (a placeholder or an old one does not count)."""
        try:
            vouched_until = float(self.probe_text("heartbeat").strip() or 0)
        except ValueError:
            return False
        return vouched_until > time.time() and not self.has("not-ready")

    def wait_ready(self, timeout: float = PROXY_START_DEADLINE) -> None:
        def check():
            if self.process.poll() is not None:
                raise AssertionError(f"llm-entry exited with {self.process.returncode}\n{self.output()}")
            return self.ready()
        wait_for(check, timeout, "the probe files to say ready")
        self.record_tree()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def headers(self, key: str = MASTER_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def chat(self, content: str = "hello", key: str = MASTER_KEY, **extra) -> requests.Response:
        body = {"model": self.served_model_name, "messages": [{"role": "user", "content": content}], **extra}
        return requests.post(self.url("/v1/chat/completions"), json=body, headers=self.headers(key),
                             timeout=60, stream=bool(extra.get("stream")))

    def assert_nothing_left(self, timeout: float = 10.0) -> None:
        """No process of the run is alive (nor a zombie: see bench.procs.alive)."""
        assert self.process is not None and self.process.poll() is not None, "llm-entry still runs"
        wait_for(lambda: not [p for p in self.seen if alive(p)], timeout,
                 "every process of the run to be gone")
        assert self.seen, "no process was recorded: the check would prove nothing"


@contextlib.contextmanager
def running(tmp: Path, **kwargs) -> Iterator[Entry]:
    """An llm-entry started and ready; at the end everything it started is
    stopped, whatever happened (for module-scoped fixtures)."""
    entry = Entry(tmp, **kwargs).start()
    try:
        entry.wait_ready()
        yield entry
    finally:
        entry.kill_everything()


# -- a redis-server of the test's own --------------------------------------------

def start_redis(folder: Path, *, port: int = 0, unix_socket: Path | None = None,
                password: str | None = None) -> subprocess.Popen:
    """A redis-server on a loopback port or a unix socket, no persistence,
    answering PING when this returns. Stop it with stop_redis (by its PID)."""
    import redis

    if not port and unix_socket is None:
        raise ValueError("give the redis-server a port or a unix socket")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(folder)]
    if unix_socket is not None:
        unix_socket.unlink(missing_ok=True)
        argv += ["--unixsocket", str(unix_socket)]
    if password is not None:
        argv += ["--requirepass", password]
    try:
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        raise AssertionError("redis-server is not installed: scripts/test.sh installs it") from None
    where = {"unix_socket_path": str(unix_socket)} if unix_socket is not None else {"port": port}
    client = redis.Redis(**where, password=password, socket_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            assert server.poll() is None, "the test's redis-server exited"
            return False
    try:
        wait_for(answers, 10, "the test's redis-server to answer")
    finally:
        client.close()
    return server


def stop_redis(server: subprocess.Popen) -> None:
    server.kill()
    server.wait(10)
