"""uvicorn's HTTP protocol with the bounds on a request head it lacks.

uvicorn (0.55, as LiteLLM runs it) closes an idle keep-alive connection, but
has no limit on the time a client takes to send a request head, nor on its
size with httptools: a connection opened and left silent, or fed one header
byte a second, stayed open for good (1,500 such connections were all open
after 45 s, the proxy's open files grew from 24 to 1,824). Neither uvicorn
nor LiteLLM has a setting for it, so the protocol is subclassed here, and
named to uvicorn by its import path (its `http` setting takes one):

- a timer from the connection's start, and from the first byte of each later
  request, until the head is complete: past `header_timeout` the client gets
  408 when it had begun a request, and the connection is closed;
- the request line and headers count against `max_header_size`: beyond it,
  431 and the connection is closed.

The settings come from the worker's environment (entrypoint.inside.client_limits).

Import rules: uvicorn and httptools (LiteLLM's server); runs in the proxy's interpreter.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from entrypoint.inside.client_limits import ClientLimits

PROTOCOL = "entrypoint.inside.proxy_protocol:BoundedHttpToolsProtocol"

_limits = ClientLimits.from_environment(os.environ)


class HeadTooLarge(Exception):
    """Raised from the parser's callbacks: httptools stops parsing and uvicorn
    answers its 400, which send_400_response turns into 431."""


def _answer(status: bytes, message: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message)


TIMED_OUT = _answer(b"408 Request Timeout", b"The request head did not arrive in time (--header-timeout).")
HEAD_TOO_LARGE = _answer(b"431 Request Header Fields Too Large",
                         b"The request head is larger than this server accepts (--max-header-size).")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits = _limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_too_large = False
        self._request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._request_begun = True
        if self._head_timer is None:
            self._arm_head_timer()   # a later request on a kept-alive connection

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)   # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._request_begun = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        self.transport.write(HEAD_TOO_LARGE)
        self.transport.close()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_size:
            self._head_too_large = True
            raise HeadTooLarge()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._request_begun:
            self.transport.write(TIMED_OUT)
        self.transport.close()
