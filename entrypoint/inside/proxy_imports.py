"""Optional LiteLLM imports that cannot succeed here, settled once per proxy worker.

LiteLLM 1.103 imports its OpenTelemetry V2 logger inside every request's key
check and swallows the failure (`_seed_request_destinations`): "no logger, so
no trace routing". With opentelemetry-api 1.44 or later (vLLM pulls in 1.45)
that import always fails, because `opentelemetry._events` is gone, and Python
retries a failed import from scratch each time: about 1.1 ms of CPU per
request, a tenth of what the proxy spends on one. Recording the failure in
`sys.modules` makes each later attempt fail at once with the same exception
type, so LiteLLM behaves exactly as before, only faster. Where the import
works (a compatible OpenTelemetry), nothing changes.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterable, MutableMapping
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

RETRIED_PER_REQUEST = ("litellm.integrations.otel.logger",)


def settle_optional_imports(names: Iterable[str] = RETRIED_PER_REQUEST,
                            modules: MutableMapping[str, Any] = sys.modules,
                            import_module: Callable[[str], ModuleType] = importlib.import_module) -> list[str]:
    """Import each module once; one that fails is marked missing for good. Returns those marked."""
    settled = []
    for name in names:
        try:
            import_module(name)
        except Exception as error:   # LiteLLM swallows any failure here; so does its proxy's start
            modules[name] = None   # the import system's own "known missing" marker
            settled.append(name)
            log.debug("%s cannot be imported (%s): later imports fail at once", name, error)
    return settled
