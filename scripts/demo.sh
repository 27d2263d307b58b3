#!/usr/bin/env bash
# One command from a fresh checkout to an authenticated OpenAI-compatible
# endpoint: installs llm-entry and the CPU build of vLLM into .venv, builds
# the tiny demo model offline, and serves it on port 8080 (or $PORT).
# Probe files go to $LLM_ENTRY_PROBE_DIR (default ./.probe), the master key to
# ./.demo-master-key; vLLM listens on 127.0.0.1:3000 (llm-entry's default).
# Further arguments go to llm-entry, e.g. `--engine-port 3001` when 3000 is taken.
# With a GPU, use `pip install '.[gpu]'` and a real model instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
bash scripts/install-cpu-engine.sh .venv/bin/python

# A random master key, kept in a private file and never printed.
key_file=.demo-master-key
if [ ! -s "$key_file" ]; then
    (umask 077 && .venv/bin/python -c 'import secrets; print("sk-" + secrets.token_hex(24))' > "$key_file")
fi
echo "demo: the master key is in $key_file; try:"
echo "  curl -s localhost:${PORT:-8080}/v1/chat/completions -H \"Authorization: Bearer \$(cat $key_file)\" \\"
echo "       -H 'Content-Type: application/json' -d '{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'"
export HF_HUB_OFFLINE=1
exec .venv/bin/llm-entry --model demo --master-key-file "$key_file" \
    --port "${PORT:-8080}" --probe-dir "${LLM_ENTRY_PROBE_DIR:-$PWD/.probe}" "$@"
