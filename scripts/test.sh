#!/usr/bin/env bash
# Install everything the tests need into .venv, lint and type-check, and run every tier: unit,
# integration (real supervisord + real LiteLLM + engine double), end-to-end
# (real vLLM CPU build on the demo model) and the quick benchmark run.
# This is the README's test command; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server: the private one that keeps the keys' limits exact across proxy
# workers; its tests run it for real. CI machines start without it.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "redis-server is missing and installing it needs root or sudo: install it (apt-get install redis-server)" >&2; return 1
    fi
}
if ! command -v redis-server >/dev/null; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server \
        || { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }
    command -v redis-server >/dev/null || { echo "redis-server is still not on PATH after installing it" >&2; exit 1; }
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
bash scripts/install-cpu-engine.sh .venv/bin/python

# No tier may be skipped for a missing dependency: fail loudly instead.
# Offline: importing LiteLLM 1.103 fetches its cost map unless
# LITELLM_LOCAL_MODEL_COST_MAP is set (LITELLM_OFFLINE_MODE alone does not stop it).
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_OFFLINE_MODE=true .venv/bin/python - <<'PY'
import importlib
for module in ("vllm", "litellm", "supervisor", "transformers", "openai", "entrypoint.cli"):
    importlib.import_module(module)
print("test dependencies import: ok")
PY

# Lint (ruff, import order included) and types (mypy on entrypoint/, as
# pyproject.toml configures them) before any test: a finding fails the run.
.venv/bin/ruff check .
.venv/bin/mypy

# pytest exits 5 when it collected no test: set -e turns that into a failure.
.venv/bin/python -m pytest --strict-markers -p no:cacheprovider -ra "$@"
