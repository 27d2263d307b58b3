"""Connection reuse toward the engine: how many TCP connections the proxy
opens to the engine for how many requests.

The socket table (/proc/net/tcp) is sampled every few milliseconds while a
load runs through the proxy; every client port seen connected to the
engine's port that was not connected before the load began is a connection
opened for it (other proxies of the benchmark keep idle pooled connections
to the same engine: those are counted apart). A connection that opened and
closed between two samples is missed, so a proxy that did not reuse
connections would still show many new ones; a handful for hundreds of
requests is what reuse looks like.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from . import load, runner

SAMPLE_EVERY = 0.005   # seconds
ESTABLISHED = "01"


@dataclass
class Reuse:
    clients: int
    requests: int
    opened: int               # engine connections seen during the load, not open before it
    open_before: int          # engine connections already open (idle pools) when it began


def engine_peers(port: int) -> set[int]:
    """Client ports of the established connections to 127.0.0.1:port."""
    peers = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == ESTABLISHED and int(fields[1].rsplit(":", 1)[1], 16) == port:
                peers.add(int(fields[2].rsplit(":", 1)[1], 16))
    return peers


def measure(proxy_port: int, master_key: str, engine_port: int, clients: int, duration: float) -> Reuse:
    before = engine_peers(engine_port)
    seen: set[int] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.update(engine_peers(engine_port))
            stop.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, name="bench-reuse", daemon=True)
    sampler.start()
    try:
        result = load.run_load(proxy_port, master_key, runner.chat_body(), clients, duration, 0.0)
    finally:
        stop.set()
        sampler.join()
    return Reuse(clients, len(result.latencies), len(seen - before), len(before))
