#!/usr/bin/env bash
# Install everything the tests need into .venv and run every tier: unit,
# integration (real supervisord + real LiteLLM + engine double), end-to-end
# (real vLLM CPU build on the demo model) and the quick benchmark run.
# This is the README's test command; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

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

# pytest exits 5 when it collected no test: set -e turns that into a failure.
.venv/bin/python -m pytest --strict-markers -p no:cacheprovider -ra "$@"
