#!/bin/sh
# Entrypoint for OpenBayes-like platforms: the model is mounted at
# /output/model unless LLM_ENTRY_MODEL or --model says otherwise, the master
# key comes from LLM_ENTRY_MASTER_KEY / LITELLM_MASTER_KEY /
# LLM_ENTRY_MASTER_KEY_FILE, and llm-entry picks port 80 in serving
# deployments (OPENBAYES_SERVING_PRODUCTION set) and 8080 in workspaces.
# exec: llm-entry becomes PID 1 and receives SIGTERM itself.
set -eu
case " $* " in
    *" --model "*|*" --model="*) ;;
    *) [ -n "${LLM_ENTRY_MODEL:-}" ] || export LLM_ENTRY_MODEL=/output/model ;;
esac
exec llm-entry "$@"
