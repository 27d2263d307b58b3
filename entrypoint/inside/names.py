"""Names that cross a process boundary for keys' limits and usage: set by
llm-entry in the proxy's environment or run folder, read inside the proxy.

Standard library only (nothing here imports anything): both sides import it.
"""

from __future__ import annotations

# Where the proxy's limiter keeps its counters: a `limits` storage URI
# ("memory://", "async+redis+unix:///run/llm-entry-x/redis.sock",
# "async+redis://host:6379/0").
LIMITS_STORAGE_VARIABLE = "LLM_ENTRY_LIMITS_STORAGE"

# prometheus_client's own variable: the folder where every proxy worker
# keeps its metric files, so that /metrics adds them all up.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# The text file (Prometheus exposition format) where llm-entry keeps its own
# metrics (ready, healthy, restarts, checks); the proxy's /metrics appends it.
OWN_METRICS_VARIABLE = "LLM_ENTRY_OWN_METRICS"

# Files in the private run folder.
METRICS_DIR = "metrics"
OWN_METRICS_FILE = "llm-entry.prom"
REDIS_SOCKET = "redis.sock"

# The supervised program that holds exact limits across proxy workers.
LIMITER = "limiter"

# What the proxy's limiter puts before every counter's name in its storage:
# replicas of one deployment share it (and so their keys' limits); another
# deployment on the same Redis has its own.
LIMITS_PREFIX_VARIABLE = "LLM_ENTRY_LIMITS_PREFIX"
