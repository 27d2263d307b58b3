"""GET /llm-entry/key: the caller's own key, and nothing about any other.

The front (entrypoint.inside.proxy_front) answers it after the same key check
as every route, for the key the request presents: its name, where it comes
from, its limits as configured, and what it has used of each in the current
windows, read from the counters that enforce them (entrypoint.inside.proxy_limits),
not from a count of its own. The request itself is not counted against the
limits. The path is under llm-entry's own prefix: LiteLLM's /key/info and the
like need its database.

    {"name": "team-a", "source": "keys file",
     "limits": {"rpm": 5, "tpm": null, "max_parallel": 2},
     "usage": [{"limit": "rpm", "allowed": 5, "used": 2, "left": 3, "resets_in": 41},
               {"limit": "max_parallel", "allowed": 2, "used": 0, "left": 2, "resets_in": null}],
     "quotas": []}

`limits` holds null for a limit the key does not have; `usage` one entry per
limit it has; `quotas` one per token quota (entrypoint.inside.proxy_quotas),
in the same shape with its `period` ("day", "month", ...), read from the
quota's own counter.

Import rules: those of proxy_limits (standard library, `limits`, redis-py).
"""

from __future__ import annotations

import dataclasses
import json

from entrypoint.inside.asgi import Response
from entrypoint.inside.key_ring import Holder
from entrypoint.inside.keys_file import LIMIT_FIELDS
from entrypoint.inside.proxy_limits import InUse, Limiter
from entrypoint.inside.proxy_quotas import QUOTA_LIMIT

OWN_KEY_ROUTE = "/llm-entry/key"


def in_use_entry(found: InUse) -> dict:
    entry = {**dataclasses.asdict(found), "left": found.left}
    if found.period is None:
        del entry["period"]
    return entry


def own_key_body(holder: Holder, in_use: tuple[InUse, ...]) -> dict:
    return {
        "name": holder.name,
        "source": holder.source.value,
        "limits": {field: getattr(holder.limits, field) for field in LIMIT_FIELDS},
        "usage": [in_use_entry(found) for found in in_use if found.limit != QUOTA_LIMIT],
        "quotas": [in_use_entry(found) for found in in_use if found.limit == QUOTA_LIMIT],
    }


async def own_key_answer(holder: Holder, limiter: Limiter) -> Response:
    body = json.dumps(own_key_body(holder, await limiter.in_use(holder.name, holder.limits))).encode()
    return 200, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                 (b"cache-control", b"no-store")], body
