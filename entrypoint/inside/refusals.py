"""A request refused for its key, answered and logged the same way by the
front (entrypoint.inside.proxy_front) and by LiteLLM's custom auth
(entrypoint.inside.litellm_auth): 401 when it carries no key this server
accepts, 403 when its key does not open the route, and one log line that
says who, where and why, never the key.

Standard library only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from entrypoint.inside.asgi import ErrorAnswer
from entrypoint.inside.log_lines import field

AUTH_ERROR = "auth_error"   # the error type, LiteLLM's ProxyErrorTypes.auth_error
CHALLENGE = (("WWW-Authenticate", "Bearer"),)   # what a 401 asks for

WRONG_KEY = "Invalid API key: it is not a key this server accepts."
WRONG_KEY_REASON = "wrong key"
MODEL_ROUTES_ONLY = (
    "This key opens only the routes that reach the model (/v1/chat/completions, /v1/completions, "
    "/v1/embeddings, /v1/models, ...): other routes need the master key."
)
NOT_ALLOWED_REASON = "a keys-file key on a route for the master key only"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refused:
    """Why a request is refused: what the client is told, and in a few words for the log."""

    status: int      # 401: no key this server accepts; 403: the key does not open the route
    message: str     # safe to show: never the key
    reason: str

    def answer(self) -> ErrorAnswer:
        """The answer to every request refused for its key, whoever refuses it."""
        return ErrorAnswer(self.status, self.message, AUTH_ERROR, CHALLENGE if self.status == 401 else ())


def refusal_line(method: str, route: str, client: str, reason: str) -> str:
    """The one log line a refused request makes: who, where, why; never the key.
    The method and the path are the client's: each stays one token (log_lines.field)."""
    return f"refused {field(method)} {field(route)} from {field(client)}: {reason}"


def log_refusal(method: str, route: str, client: str, reason: str) -> None:
    # WARNING, not ERROR: a scanner hitting the port is the world, not a fault here.
    logger.warning(refusal_line(method, route, client, reason))
