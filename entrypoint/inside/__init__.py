"""Code that runs inside another program's interpreter, not in llm-entry's.

Import rules, tested by tests/unit/test_import_rules.py:
- These import the standard library alone (and each other): `launch`,
  `engine_cli` (vLLM only inside main()), `engine_guard`, `names`, `client_limits`, `log_lines`, the keys file
  (`weak_keys`, `keys_file`, `keys_file_changes`), the key check
  (`key_ring`, `refusals`), `asgi` and the page at / (`ui_page`). `launch` runs first in every program
  supervisord starts, `engine_guard` inside vLLM, which has none of
  llm-entry's dependencies; the keys file's modules are read by llm-entry too.
- The proxy's other modules (`proxy_*`, `metrics_page`, `litellm_auth`, `own_key`) run
  in each LiteLLM worker: they may import what the proxy's interpreter has
  (LiteLLM, aiohttp, prometheus_client, limits, redis); `litellm_auth` and
  `proxy_imports` import LiteLLM itself only lazily, inside functions,
  because LiteLLM imports them while it starts.
- Nothing here imports llm-entry's supervising side but `entrypoint.errors`:
  what both sides read (the keys file, the names that cross a process
  boundary) lives here, and the supervising side imports it.
"""
