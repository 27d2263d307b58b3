"""A fixed number of chat completions, sent by a few keep-alive clients, each
answered whatever its status: for measures taken per request (CPU per
request, per log line) rather than per second, and for refusals, which
bench.load counts as failures and backs off from.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from .load import FAILURES, REQUEST_TIMEOUT, Connection, request_bytes, uvloop


async def _send(port: int, key: str, body: dict, concurrency: int, count: int) -> Counter:
    head, payload = request_bytes(port, key, body)
    statuses: Counter = Counter()
    left = [count]

    async def client() -> None:
        conn = Connection(port)
        try:
            while left[0] > 0:
                left[0] -= 1
                try:
                    status, headers = await asyncio.wait_for(conn.send(head, payload), REQUEST_TIMEOUT)
                    await asyncio.wait_for(conn.body(headers), REQUEST_TIMEOUT)
                    if not conn.reusable(headers):
                        conn.close()
                except FAILURES as error:
                    conn.close()
                    status = type(error).__name__
                statuses[status] += 1
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
    return statuses


def send(port: int, key: str, body: dict, concurrency: int, count: int) -> Counter:
    """Send `count` requests, `concurrency` at a time; how many got each status
    (an HTTP status, or the name of the failure)."""
    coroutine = _send(port, key, body, concurrency, count)
    return uvloop.run(coroutine) if uvloop is not None else asyncio.run(coroutine)
