"""The key check LiteLLM runs for its own routes (``general_settings.custom_auth``):
the worker's key ring (entrypoint.inside.key_ring) says who holds the key,
and LiteLLM is given llm-entry's id for the caller, never the key; a refusal
is answered and logged as the front's are (entrypoint.inside.refusals).

LiteLLM imports this module while it starts (the rendered llm_entry_auth.py
re-exports `user_api_key_auth`), so LiteLLM itself is imported only inside
functions: importing this module alone reads nothing and imports nothing
heavy. The environment is read when LiteLLM looks up ``user_api_key_auth``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from entrypoint.inside.key_ring import KeyRing, KeySource, holder_in, shared_key_ring
from entrypoint.inside.refusals import MODEL_ROUTES_ONLY, NOT_ALLOWED_REASON, Refused, log_refusal

# The flag on a refusal's ProxyException (LiteLLM's own class) that llm-entry has logged it.
LOGGED_BY_LLM_ENTRY = "logged_by_llm_entry"


def proxy_authenticator(key_ring: KeyRing,
                        reaches_model: Callable[[str], bool] | None = None) -> Callable[[Any, str], Awaitable[Any]]:
    """The coroutine function LiteLLM calls as custom auth for every authenticated route.

    LiteLLM passes ``api_key`` already stripped of any 'Bearer '/'Basic ' prefix,
    so the headers are read again from the request to reject malformed ones.
    Keys from the file open only the routes ``reaches_model`` accepts (LiteLLM's
    LLM API routes): with custom auth LiteLLM checks no routes itself, and some
    management routes (/model/new) took such a key and failed only for want of
    a database.
    """
    # Imported here, not at module top: importing litellm takes seconds, and the
    # pure parts of the key check are used (and tested) without it.
    from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
    from litellm.proxy.auth.auth_utils import get_request_route
    from litellm.proxy.auth.route_checks import RouteChecks

    reaches_model = reaches_model or RouteChecks.is_llm_api_route
    refusal = _litellm_refusal()

    async def user_api_key_auth(request: Any, api_key: str) -> UserAPIKeyAuth:
        holder = holder_in(key_ring, request.headers.items())
        if isinstance(holder, Refused):
            raise refusal(request, holder)
        if holder.source is KeySource.MASTER:
            return UserAPIKeyAuth(api_key=holder.label, key_alias=holder.name,
                                  user_role=LitellmUserRoles.PROXY_ADMIN)
        if not reaches_model(get_request_route(request)):
            raise refusal(request, Refused(403, MODEL_ROUTES_ONLY, NOT_ALLOWED_REASON))
        # No rpm_limit, tpm_limit or max_parallel_requests here: llm-entry's own
        # limiter counts every request in front of LiteLLM; LiteLLM's would
        # count the same requests a second time.
        return UserAPIKeyAuth(api_key=holder.label, key_alias=holder.name,
                              user_role=LitellmUserRoles.INTERNAL_USER)

    return user_api_key_auth


def _litellm_refusal() -> Callable[[Any, Refused], Exception]:
    """What custom auth raises to refuse a request: LiteLLM's auth error, after
    llm-entry's one log line for it; LiteLLM's own lines for it are left out
    of its log from now on."""
    from litellm.proxy._types import ProxyException
    from litellm.proxy.auth.auth_utils import get_request_route

    logging.getLogger("LiteLLM Proxy").addFilter(_without_logged_refusals)

    def refusal(request: Any, refused: Refused) -> ProxyException:
        client = request.client.host if request.client else "unknown"
        log_refusal(request.method, get_request_route(request), client, refused.reason)
        answer = refused.answer()
        # LiteLLM's handler writes these fields in the shape of the front's own answer.
        error = ProxyException(message=answer.message, type=answer.kind, param=None, code=answer.status,
                               headers=dict(answer.headers) or None)
        setattr(error, LOGGED_BY_LLM_ENTRY, True)   # LiteLLM's own ERROR lines for it are dropped
        return error

    return refusal


def _without_logged_refusals(record: logging.LogRecord) -> bool:
    """A logging filter for LiteLLM's proxy logger: LiteLLM logs every refused
    request at ERROR, over two lines (the exception, then the client's address);
    llm-entry has written its own one line for the refusals it made."""
    args = record.args if isinstance(record.args, tuple) else ()
    return not any(getattr(arg, LOGGED_BY_LLM_ENTRY, False) for arg in args)


def __getattr__(name: str) -> Any:
    # LiteLLM resolves `custom_auth` with getattr on this module (or on the shim that
    # re-exports it), once, while it loads its config: the environment is read then,
    # and a missing master key stops the proxy from booting. Importing the module
    # alone (tests, llm-entry itself) reads nothing.
    if name == "user_api_key_auth":
        authenticate = proxy_authenticator(shared_key_ring())
        globals()[name] = authenticate
        return authenticate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
