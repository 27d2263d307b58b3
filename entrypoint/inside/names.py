"""Names that cross a process boundary: environment variables llm-entry sets
for a program it starts, files it leaves in the private run folder, the
names of the programs, and the few values both sides must read alike (the
request timeout, the limiter's in-memory storage). Both sides import them
from here, so they cannot drift.

Standard library only (nothing here imports anything): every side imports it.
"""

from __future__ import annotations

# -- the supervised programs (supervisord's program names) --------------------
ENGINE = "engine"
PROXY = "proxy"
LIMITER = "limiter"   # the private redis-server that keeps exact limits across proxy workers

# -- keys, set by llm-entry for the proxy -------------------------------------
MASTER_KEY_VARIABLE = "LLM_ENTRY_MASTER_KEY"
# LiteLLM's own name for it: llm-entry reads it too, and hides it from the engine.
LITELLM_MASTER_KEY_VARIABLE = "LITELLM_MASTER_KEY"
API_KEYS_FILE_VARIABLE = "LLM_ENTRY_API_KEYS_FILE"
# A file llm-entry touches when it has checked a new keys file (entrypoint.key_watch).
KEYS_RELOAD_MARKER_VARIABLE = "LLM_ENTRY_KEYS_RELOAD_MARKER"

# -- the engine, as the proxy's relay reaches it ------------------------------
ENGINE_URL_VARIABLE = "LLM_ENTRY_ENGINE_URL"
ENGINE_KEY_VARIABLE = "LLM_ENTRY_ENGINE_KEY"
REQUEST_TIMEOUT_VARIABLE = "LLM_ENTRY_REQUEST_TIMEOUT"
# Seconds the proxy waits for the engine's answer (or its next chunk): what
# llm-entry sets, and what the proxy's relay takes when it is not set.
DEFAULT_REQUEST_TIMEOUT = 600
# vLLM's own variable for its --api-key: the internal key, read by entrypoint.inside.engine_guard.
ENGINE_API_KEY_VARIABLE = "VLLM_API_KEY"

# -- what a client of the public port may send (entrypoint.inside.client_limits) --
MAX_BODY_SIZE_VARIABLE = "LLM_ENTRY_MAX_BODY_SIZE"
MAX_HEADER_SIZE_VARIABLE = "LLM_ENTRY_MAX_HEADER_SIZE"
HEADER_TIMEOUT_VARIABLE = "LLM_ENTRY_HEADER_TIMEOUT"
BODY_TIMEOUT_VARIABLE = "LLM_ENTRY_BODY_TIMEOUT"
KEEP_ALIVE_TIMEOUT_VARIABLE = "LLM_ENTRY_KEEP_ALIVE_TIMEOUT"

# -- the page at / (entrypoint.inside.ui_page) ------------------------------------
# "1" or "0": llm-entry's --ui/--no-ui, set for the proxy (the option's own variable, always set).
UI_VARIABLE = "LLM_ENTRY_UI"

# -- shutdown ------------------------------------------------------------------
# LiteLLM's variable: how long its workers drain after a SIGTERM.
PROXY_DRAIN_VARIABLE = "GRACEFUL_SHUTDOWN_TIMEOUT"

# -- keys' limits and usage -------------------------------------------------------
# click's variable for --redis-url: it may hold a password, so no child inherits it.
REDIS_URL_VARIABLE = "LLM_ENTRY_REDIS_URL"

# Where the proxy's limiter keeps its counters: a `limits` storage URI
# (MEMORY_STORAGE, "async+redis+unix:///run/llm-entry-x/redis.sock",
# "async+redis://host:6379/0").
LIMITS_STORAGE_VARIABLE = "LLM_ENTRY_LIMITS_STORAGE"
MEMORY_STORAGE = "memory://"   # each proxy worker's own memory

# Set (to "1") when the limiter's storage keeps counts across a restart
# (--redis-url, or the private redis-server with --state-dir): only then may
# a key carry a quota. Without it a reloaded line with a quota is set aside.
QUOTAS_DURABLE_VARIABLE = "LLM_ENTRY_QUOTAS_DURABLE"

# What the proxy's limiter puts before every counter's name in its storage:
# replicas of one deployment share it (and so their keys' limits); another
# deployment on the same Redis has its own.
LIMITS_PREFIX_VARIABLE = "LLM_ENTRY_LIMITS_PREFIX"

# prometheus_client's own variable: the folder where every proxy worker
# keeps its metric files, so that /metrics adds them all up.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# The text file (Prometheus exposition format) where llm-entry keeps its own
# metrics (ready, healthy, restarts, checks); the proxy's /metrics appends it.
OWN_METRICS_VARIABLE = "LLM_ENTRY_OWN_METRICS"

# -- files in the private run folder ---------------------------------------------
METRICS_DIR = "metrics"
OWN_METRICS_FILE = "llm-entry.prom"
REDIS_SOCKET = "redis.sock"
