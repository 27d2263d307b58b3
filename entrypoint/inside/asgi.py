"""ASGI as the proxy's own code speaks it: the types of a scope and its
messages, an answer sent in one piece, OpenAI-shaped errors, and an answer
that closes its connection. The front (entrypoint.inside.proxy_front) and the
model relay (entrypoint.inside.proxy_relay) answer through these.

Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

# ASGI's types, as starlette spells them: a scope and messages are mutable mappings.
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
# A whole answer: status, headers (lower-case names, as ASGI wants them) and body.
Response = tuple[int, list[tuple[bytes, bytes]], bytes]

CLOSE = (b"connection", b"close")


@dataclass(frozen=True)
class ErrorAnswer:
    """An OpenAI-shaped error, as LiteLLM's ProxyException handler writes one:
    the proxy's own code answers it as it is (`response`), and LiteLLM's
    custom auth raises the same fields as a ProxyException."""

    status: int
    message: str
    kind: str                                  # the error's "type"
    headers: tuple[tuple[str, str], ...] = ()
    code: str | None = None                    # the error's "code": the status unless said

    def response(self) -> Response:
        body = json.dumps({"error": {"message": self.message, "type": self.kind, "param": None,
                                     "code": self.code or str(self.status)}}).encode()
        extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers]
        return self.status, [(b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode()), *extra], body


def error_response(status: int, message: str, kind: str,
                   extra_headers: tuple[tuple[str, str], ...] = (), code: str | None = None) -> Response:
    return ErrorAnswer(status, message, kind, extra_headers, code).response()


def closing(response: Response) -> Response:
    """The answer with `connection: close`: the rest of the request's body is never read."""
    status, headers, body = response
    return status, [*headers, CLOSE], body


async def respond(send: Callable, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def client_address(scope: Message) -> str:
    return (scope.get("client") or ("unknown",))[0]


class PreparedAnswer:
    """An ASGI app that gives one prepared answer, reading nothing (so that a
    middleware, LiteLLM's CORS, can wrap it)."""

    def __init__(self, response: Response) -> None:
        self.response = response

    async def __call__(self, scope: Message, receive: Callable, send: Callable) -> None:
        await respond(send, *self.response)


async def never_received() -> Message:
    """The `receive` of an app that reads no body (a PreparedAnswer)."""
    raise RuntimeError("a prepared answer reads no body")
