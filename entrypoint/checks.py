"""Checks of the engine and the proxy (HTTP) and of the private redis-server
(PING), each in its own thread.

Each check has one deadline (--check-timeout), however many requests it
makes, so a stuck server costs one timeout and never freezes anything; the
two threads never wait for each other. A thread only
checks while its program is alive, and every result is tagged with the
start it belongs to, so the monitor can ignore results from before a restart.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from .engine_proof import GenerationProof
from .keys import Secret

# While a program has not passed a check yet, poll this often: "ready" should
# follow the moment it can answer, not up to a whole interval later.
STARTUP_POLL = 0.25

# check(session, deadline): deadline is a time.monotonic() reading.
Check = Callable[[requests.Session, float], tuple[bool, str]]


def time_left(deadline: float, clock: Callable[[], float] = time.monotonic) -> float:
    """What remains of one check's deadline, for the next request's timeout."""
    left = deadline - clock()
    if left <= 0:
        raise requests.exceptions.Timeout("the check's deadline passed")
    return left


def engine_check(port: int, internal_key: Secret, served_model_name: str) -> Check:
    """vLLM's /health (200 while the engine core lives, 503 once it died),
    then the proof that it still generates (engine_proof), within the one
    deadline."""
    base = f"http://127.0.0.1:{port}"
    proof = GenerationProof(base, internal_key, served_model_name, time_left)

    def check(session: requests.Session, deadline: float) -> tuple[bool, str]:
        response = session.get(base + "/health", timeout=time_left(deadline))
        if response.status_code != 200:
            return False, f"/health answered {response.status_code}"
        return proof.prove(session, deadline)

    return check


def headless_engine_check() -> Check:
    """A worker's engine serves no HTTP: while it runs (the monitor checks that
    first) it counts as up, and its exit ends the run. Whether the group still
    generates is proven at the leader (engine_proof), which sees a lost worker."""

    def check(session: requests.Session, deadline: float) -> tuple[bool, str]:
        return True, "runs headless (no HTTP to check); its exit is watched"

    return check


def leader_check(host: str, port: int, leader: str, clock: Callable[[], float] = time.monotonic) -> Check:
    """A worker's view of its leader: a TCP connection to the rendezvous port,
    opened and closed within the deadline. The port listens from the moment
    the leader's engine starts its group until that engine is gone (vLLM's
    torch.distributed store, which takes a bare connection in its stride:
    measured here), so a refused connection means the leader is not there."""

    def check(session: requests.Session, deadline: float) -> tuple[bool, str]:
        try:
            with socket.create_connection((host, port), timeout=time_left(deadline, clock)):
                pass
        except TimeoutError:
            return False, f"{leader} does not answer: connect timed out"
        except OSError as error:
            why = "connection refused" if isinstance(error, ConnectionRefusedError) else (error.strerror or str(error))
            return False, f"{leader} does not answer: {why}"
        return True, f"{leader} answers"

    return check


def proxy_check(base: str, master_key: Secret, served_model_name: str,
                clock: Callable[[], float] = time.monotonic) -> Check:
    """Readiness, then one authenticated request that never reaches the model:
    a proxy that lost its config or its key fails here, not at a user. Both
    requests share the one deadline."""

    def check(session: requests.Session, deadline: float) -> tuple[bool, str]:
        response = session.get(base + "/health/readiness", timeout=time_left(deadline, clock))
        if response.status_code != 200:
            return False, f"/health/readiness answered {response.status_code}"
        response = session.get(
            base + "/v1/models", timeout=time_left(deadline, clock),
            headers={"Authorization": "Bearer " + master_key.reveal()},
        )
        if response.status_code != 200:
            return False, f"/v1/models with the master key answered {response.status_code}"
        ids = [model.get("id") for model in response.json().get("data", [])]
        if served_model_name not in ids:
            return False, f"/v1/models does not list {served_model_name!r}"
        return True, "/health/readiness and /v1/models 200"

    return check


def redis_check(socket_path: Path, clock: Callable[[], float] = time.monotonic) -> Check:
    """PING over the private redis-server's unix socket, within the one deadline."""
    import redis  # only when there is a private redis-server to check

    def check(session: requests.Session, deadline: float) -> tuple[bool, str]:
        left = time_left(deadline, clock)
        client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=left, socket_connect_timeout=left)
        try:
            client.ping()
        except redis.exceptions.TimeoutError:
            return False, "no answer to PING within the check timeout"
        except redis.exceptions.ConnectionError as error:
            cause = error.__cause__ or error.__context__
            if isinstance(cause, (FileNotFoundError, ConnectionRefusedError)):
                return False, "its socket does not answer yet (still starting?)"
            return False, f"PING failed: {error}"
        finally:
            client.close()
        return True, "PING answered"

    return check


def loopback_session() -> requests.Session:
    """A session for our own loopback checks. It ignores HTTP_PROXY and the
    like: a proxy variable set for the container's outbound traffic without
    NO_PROXY would otherwise send every check, master key included, to that
    proxy."""
    session = requests.Session()
    session.trust_env = False
    return session


def describe_failure(error: Exception) -> str:
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(error, requests.exceptions.Timeout):
        return "no answer within the check timeout"
    if isinstance(error, requests.exceptions.ConnectionError):
        text = str(error)
        return "connection refused (still loading?)" if "refused" in text.lower() else "connection failed"
    return f"{type(error).__name__}: {error}"


class Checker:
    """Runs one program's check every interval while that program is alive."""

    def __init__(self, name: str, check: Check, interval: float, timeout: float,
                 report: Callable[[str, int, bool, str, float], None],
                 began: Callable[[str, int, float], None] = lambda name, generation, at: None):
        self.name = name
        self._check = check
        self._interval = interval
        self._timeout = timeout
        self._report = report
        self._began = began   # so a check that overruns its timeout counts before it returns
        self._generation = 0
        self._alive = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"check-{name}", daemon=True)

    def start(self) -> Checker:
        self._thread.start()
        return self

    def follow(self, generation: int, alive: bool) -> None:
        """The monitor says which start of the program is current, and whether it runs."""
        with self._lock:
            changed = generation != self._generation or alive != self._alive
            self._generation, self._alive = generation, alive
        if changed:
            self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        session = loopback_session()
        passed = -1  # the latest generation that has passed a check
        while not self._stop.is_set():
            with self._lock:
                generation, alive = self._generation, self._alive
            if alive:
                started = time.monotonic()
                self._began(self.name, generation, started)
                try:
                    ok, detail = self._check(session, started + self._timeout)
                except Exception as error:  # noqa: BLE001 - a surprise is a failed check, not a dead thread
                    ok, detail = False, describe_failure(error)
                    session.close()  # a half-read connection must not be reused
                    session = loopback_session()
                self._report(self.name, generation, ok, detail, time.monotonic())
                if ok:
                    passed = generation
            self._wake.wait(self._interval if passed == generation else STARTUP_POLL)
            self._wake.clear()
        session.close()
