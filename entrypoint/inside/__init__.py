"""Code that runs inside another program's interpreter, not in llm-entry's.

Import rules, tested by tests/unit/test_import_rules.py:
- `launch`, `engine_guard` and `names` import the standard library alone:
  `launch` runs first in every program supervisord starts, and `engine_guard`
  inside vLLM, which has none of llm-entry's dependencies.
- The proxy's modules (`proxy_*`, `metrics_page`) run in each LiteLLM worker:
  they may import what the proxy's interpreter has (LiteLLM, aiohttp,
  prometheus_client, limits, redis); `proxy_auth` and `proxy_imports` import
  LiteLLM itself only lazily, inside functions, because LiteLLM imports them
  while it starts.
- Nothing here imports llm-entry's supervising side: besides each other they
  use only `entrypoint.keys` (the keys file format, read on both sides) and
  `entrypoint.errors`.
"""
