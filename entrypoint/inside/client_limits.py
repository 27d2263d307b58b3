"""What a client of the public port may send, and how long it may take.

Every bound on what a client controls lives here, with its default, so that
the command line (entrypoint.cli reads the defaults through config.Options),
the proxy's front (the body) and the proxy's HTTP protocol (the head and the
connection, entrypoint.inside.proxy_protocol) read one definition:

- the request head (request line and headers) at most `max_header_size`
  bytes (431 beyond), sent within `header_timeout` seconds of the connection
  or of the request's first byte (408, then the connection is closed);
- the body at most `max_body_size` bytes, judged on Content-Length before a
  byte of it is read and counted while a chunked body streams in (413);
  `body_timeout` seconds at most between two reads of it (408);
- an idle keep-alive connection closed after `keep_alive_timeout` seconds
  (uvicorn's own setting).

A refused request's answer says `connection: close` (asgi.closing): the
rest of its body is never read (uvicorn would otherwise read and drop it to
keep the connection).

Import rules: standard library only (the supervising side imports it too).
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from entrypoint.inside import names

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# Sizes as people write them: 65536, 64KiB, 64MiB, 1GiB (binary) or 64KB, 64MB, 1GB (decimal).
_SIZE = re.compile(r"^\s*(\d+)\s*(?:(k|m|g)(i?)b?)?\s*$", re.IGNORECASE)
_UNITS = {"k": 1, "m": 2, "g": 3}


def parse_size(text: str) -> int:
    """Bytes from '64MiB', '100MB', '1g' (binary unless spelled KB/MB/GB) or a plain number."""
    found = _SIZE.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a size: write a number of bytes, or one with KiB, MiB or GiB (64MiB)")
    number, unit, binary = found.groups()
    if unit is None:
        return int(number)
    decimal = text.strip().lower().endswith("b") and not binary
    return int(number) * (1000 if decimal else 1024) ** _UNITS[unit.lower()]


def spell_size(size: int) -> str:
    """A size as parse_size reads it back, in the largest binary unit that divides it."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


@dataclass(frozen=True)
class ClientLimits:
    # Long contexts and images: a 128k-token prompt is about 0.5 MB of text,
    # a 20 MB image about 27 MB of base64; 64 MiB holds several.
    max_body_size: int = 64 * MIB
    # gunicorn allows 4 KB per request line and 8 KB per header; nginx 4 x 8 KB.
    max_header_size: int = 64 * KIB
    header_timeout: float = 15.0     # nginx: client_header_timeout 60 s
    body_timeout: float = 30.0       # nginx: client_body_timeout 60 s, between two reads
    keep_alive_timeout: float = 5.0  # uvicorn's default

    def to_environment(self) -> tuple[tuple[str, str], ...]:
        return tuple((_VARIABLES[field.name], str(getattr(self, field.name))) for field in fields(self))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ClientLimits:
        values: dict[str, Any] = {}
        for field in fields(cls):
            text = environ.get(_VARIABLES[field.name])
            if text:
                values[field.name] = int(text) if field.name.startswith("max_") else float(text)
        return cls(**values)


_VARIABLES = {
    "max_body_size": names.MAX_BODY_SIZE_VARIABLE,
    "max_header_size": names.MAX_HEADER_SIZE_VARIABLE,
    "header_timeout": names.HEADER_TIMEOUT_VARIABLE,
    "body_timeout": names.BODY_TIMEOUT_VARIABLE,
    "keep_alive_timeout": names.KEEP_ALIVE_TIMEOUT_VARIABLE,
}

class BodyRefused(Exception):
    """The body breaks a bound: the status and the message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def too_large(limit: int) -> BodyRefused:
    return BodyRefused(413, f"The request body is larger than this server accepts ({spell_size(limit)}, "
                            "--max-body-size).")


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The body's Content-Length, when the request declares one (uvicorn's parser
    has refused a malformed one already)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a body follows the head: a Content-Length above 0, or a chunked one."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


async def _within(waiting: Awaitable[dict], seconds: float) -> dict:
    """`waiting`, or asyncio.TimeoutError after `seconds`. asyncio.timeout
    (3.11) cancels the task in place; wait_for, before it, wraps the wait in
    a task of its own, a cost paid on every read of every body."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await waiting
    return await asyncio.wait_for(waiting, seconds)


async def read_body(receive: Callable[[], Awaitable[dict]], headers: Iterable[tuple[bytes, bytes]],
                    limits: ClientLimits) -> bytearray | None:
    """The whole body, or None when the client went away first; BodyRefused
    when it is too large (by its Content-Length, before any byte is read, or
    as it streams in) or stalls for longer than the body timeout.

    A bytearray, grown in place: joining a list of chunks would hold the body
    twice at the end."""
    declared = declared_length(headers)
    if declared is not None and declared > limits.max_body_size:
        raise too_large(limits.max_body_size)
    body = bytearray()
    while True:
        try:
            message = await _within(receive(), limits.body_timeout)
        except asyncio.TimeoutError:
            raise BodyRefused(408, f"The request body stalled: no byte came for {limits.body_timeout:g} s "
                                   "(--body-timeout).") from None
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limits.max_body_size:
            raise too_large(limits.max_body_size)
        if not message.get("more_body", False):
            return body
