# llm-entry on the official vLLM OpenAI image (CUDA). The image already has
# vLLM; llm-entry adds supervisord, the LiteLLM proxy and the probe scripts.
FROM vllm/vllm-openai:v0.32.0

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
# Core only: vLLM comes from the base image (the `gpu` extra would pin it again).
RUN python3 -m pip install --no-cache-dir . \
 && chmod 0755 probes/readiness probes/liveness probes/startup start.sh \
 && mkdir -p /etc/probe

# Exec probes call /opt/llm-entry/probes/{startup,readiness,liveness}.
# HF_HUB_OFFLINE is left to the deployment: a hub id as --model needs the hub;
# set HF_HUB_OFFLINE=1 in air-gapped clusters that serve a mounted folder.
ENV LLM_ENTRY_PROBE_DIR=/etc/probe
# 8080 in workspaces; 80 when OPENBAYES_SERVING_PRODUCTION is set.
EXPOSE 8080 80
STOPSIGNAL SIGTERM
ENTRYPOINT ["llm-entry"]
