#!/bin/bash
# The stand-in's entrypoint: tensorflow/serving's own script, plus `exec` so that the server
# (its tiny init, bench.docker_entry) is PID 1 and receives docker stop's SIGTERM.
exec tensorflow_model_server --port=8500 --rest_api_port=8501 \
  --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} \
  "$@"
