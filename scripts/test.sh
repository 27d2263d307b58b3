#!/usr/bin/env bash
# Install everything the tests need into .venv, lint and type-check, and run every tier: unit,
# integration (real supervisord + real LiteLLM + engine double), end-to-end
# (real vLLM CPU build on the demo model), browser (the page at / in headless
# chromium), the quick benchmark run and the container tier (the CPU image
# built and run as a restricted pod; its build cache lives outside the clone,
# LLM_ENTRY_BUILD_CACHE).
# This is the README's test command; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run for real and CI machines start without, installed with apt:
# redis-server (the private limiter of the proxy workers); podman, buildah,
# runc and mmdebstrap (the container tier builds the CPU image from Debian's
# packages and runs it as a restricted pod).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "installing $* needs root or sudo: install redis-server podman buildah runc mmdebstrap chromium chromium-driver with apt" >&2; return 1
    fi
}
# The package of each is named as the program; runc lives in /usr/sbin.
apt_programs=(redis-server podman buildah runc mmdebstrap)
installed() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
missing=()
for program in "${apt_programs[@]}"; do installed "$program" || missing+=("$program"); done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=600 "${missing[@]}"; }
    apt_install || { as_root apt-get update && apt_install; }
    for program in "${missing[@]}"; do
        installed "$program" || { echo "$program is still missing after installing it with apt" >&2; exit 1; }
    done
fi
# Debian's chromium and chromedriver (package chromium-driver): the browser tier drives the page at / in them.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_browser() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=600 chromium chromium-driver; }
    apt_browser || { as_root apt-get update && apt_browser; }
    { command -v chromium && command -v chromedriver; } >/dev/null \
        || { echo "chromium or chromedriver is still not on PATH after installing them" >&2; exit 1; }
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
for module in ("vllm", "litellm", "supervisor", "transformers", "openai", "kubernetes_validate", "selenium", "entrypoint.cli"):
    importlib.import_module(module)
print("test dependencies import: ok")
PY

# Lint (ruff, import order included) and types (mypy on entrypoint/, as
# pyproject.toml configures them) before any test: a finding fails the run.
.venv/bin/ruff check .
.venv/bin/mypy

# pytest exits 5 when it collected no test: set -e turns that into a failure.
.venv/bin/python -m pytest --strict-markers -p no:cacheprovider -ra "$@"
