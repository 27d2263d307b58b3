"""supervisord as llm-entry's process manager: start it, ask it, stop it.

supervisord starts the engine and the proxy in their own process groups and
reports their states over XML-RPC on a unix socket in the private run folder.
It never decides anything here: it does not fail fast and exits 0 whatever
happened, so llm-entry polls the states and acts itself.
"""

from __future__ import annotations

import ctypes
import http.client
import signal
import socket
import subprocess
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# supervisor ships no type information; its states module imports nothing else.
from supervisor.states import ProcessStates, getProcessStateDescription

PR_SET_PDEATHSIG = 1
# A local supervisord answers in milliseconds. The monitor blocks on each call,
# and its tick refreshes the heartbeat, so a silent supervisord may delay the
# heartbeat by this much at most.
RPC_TIMEOUT = 1.0   # each XML-RPC call while the programs run (shutdown_plan.SHUTDOWN_RPC_TIMEOUT after)


def state_names(*codes: int) -> frozenset[str]:
    """The names supervisord gives its process states in getAllProcessInfo's
    "statename": taken from supervisor itself, so they cannot drift from it."""
    return frozenset(getProcessStateDescription(code) for code in codes)


# A process that is there (its pid leads the program's process group).
RUNNING_STATES = state_names(ProcessStates.STARTING, ProcessStates.RUNNING, ProcessStates.STOPPING)
# A program that has ended, or could not start: llm-entry decides what follows
# (supervisord never restarts on its own here).
EXITED_STATES = state_names(ProcessStates.EXITED, ProcessStates.FATAL, ProcessStates.BACKOFF)
EXITED = getProcessStateDescription(ProcessStates.EXITED)


@dataclass(frozen=True)
class ProgramState:
    """One program as supervisord sees it."""

    name: str
    state: str          # supervisord's name for it (supervisor.states.ProcessStates): RUNNING, EXITED, ...
    pid: int            # 0 when not running
    exit_status: int    # -1 when killed by a signal (supervisord's convention)
    spawn_error: str

    @property
    def alive(self) -> bool:
        return self.state in RUNNING_STATES and self.pid > 0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's unix socket, with a timeout so a stuck
    supervisord can never freeze the monitor (supervisor's own transport has none)."""

    def __init__(self, path: str, timeout: float):
        super().__init__()
        self._path = path
        self.timeout = timeout

    def make_connection(self, host):
        return _UnixConnection(self._path, self.timeout)


class SupervisorError(Exception):
    """supervisord did not answer, or answered with a fault."""


class Supervisor:
    def __init__(self, run_dir: Path, timeout: float = RPC_TIMEOUT):
        self.run_dir = run_dir
        self.config_path = run_dir / "supervisord.conf"
        self.socket_path = run_dir / "supervisor.sock"
        self.log_path = run_dir / "supervisord.log"
        self.process: subprocess.Popen | None = None
        self._transport = _UnixTransport(str(self.socket_path), timeout)
        self._rpc = xmlrpc.client.ServerProxy("http://localhost", transport=self._transport, allow_none=True)

    def set_timeout(self, seconds: float) -> None:
        """Limit every later call to this long (the shutdown counts each call in its budget)."""
        self._transport.timeout = seconds

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, python: str, env: Mapping[str, str]) -> None:
        """Start supervisord in a session of its own (a Ctrl-C meant for us
        must not reach it) that dies with us if we are ever SIGKILLed."""
        self.process = subprocess.Popen(
            [python, "-m", "supervisor.supervisord", "-n", "-c", str(self.config_path)],
            env=dict(env), stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent, cwd=self.run_dir,
        )

    def _call(self, method: str, *args):
        try:
            return getattr(self._rpc.supervisor, method)(*args)
        except (OSError, xmlrpc.client.Error, http.client.HTTPException) as error:
            raise SupervisorError(f"supervisord {method}: {error}") from error

    def states(self) -> dict[str, ProgramState]:
        return {
            info["name"]: ProgramState(
                name=info["name"], state=info["statename"], pid=info["pid"],
                exit_status=info["exitstatus"], spawn_error=info.get("spawnerr", ""),
            )
            for info in self._call("getAllProcessInfo")
        }

    def start_program(self, name: str) -> None:
        self._call("startProcess", name, False)

    def shutdown(self) -> None:
        self._call("shutdown")

    def exit_reason(self, name: str) -> str:
        """How supervisord saw `name` end ("exit status 0", "terminated by
        SIGKILL"): its log is the only place that keeps the signal."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        marker = f"exited: {name} ("
        for line in reversed(lines):
            if marker in line:
                return line.split(marker, 1)[1].split(";", 1)[0].rstrip(")")
        return ""

    def signal_self(self, sig: int) -> None:
        if self.process is not None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: orphans are handled by the container runtime instead
