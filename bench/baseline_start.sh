#!/bin/sh
# The baseline llm-entry is compared with: what common hand-written start
# scripts for "vLLM behind LiteLLM" do. Start the engine, poll it with curl
# once a second until it answers, then write a LiteLLM config, start the proxy
# with a master key, and poll it once a second until it answers. One after
# the other: the proxy's start-up begins only once the engine is up.
#
# Inputs (environment):
#   ENGINE_CMD     command that starts the engine (default: vLLM's API server)
#   MODEL          model path or id
#   SERVED_NAME    model name clients ask for
#   ENGINE_PORT    engine port on 127.0.0.1
#   PORT           public port of the proxy
#   HOST           address the proxy listens on (default 127.0.0.1)
#   WORK_DIR       where the LiteLLM config is written
#   LITELLM_MASTER_KEY  the key clients must present
set -eu

ENGINE_CMD=${ENGINE_CMD:-"python -m vllm.entrypoints.openai.api_server"}
HOST=${HOST:-127.0.0.1}
: "${MODEL:?}" "${SERVED_NAME:?}" "${ENGINE_PORT:?}" "${PORT:?}" "${WORK_DIR:?}" "${LITELLM_MASTER_KEY:?}"

echo "baseline: starting the engine"
# shellcheck disable=SC2086  # ENGINE_CMD is a command line
$ENGINE_CMD --model "$MODEL" --served-model-name "$SERVED_NAME" \
    --host 127.0.0.1 --port "$ENGINE_PORT" &

until curl -sf -o /dev/null "http://127.0.0.1:$ENGINE_PORT/health"; do
    sleep 1
done
echo "baseline: engine up, starting the proxy"

cat > "$WORK_DIR/litellm_config.yaml" <<EOF
model_list:
  - model_name: $SERVED_NAME
    litellm_params:
      model: hosted_vllm/$SERVED_NAME
      api_base: http://127.0.0.1:$ENGINE_PORT/v1
      api_key: none
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
EOF

litellm --config "$WORK_DIR/litellm_config.yaml" --host "$HOST" --port "$PORT" &

until curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/readiness"; do
    sleep 1
done
echo "baseline: proxy up"
wait
