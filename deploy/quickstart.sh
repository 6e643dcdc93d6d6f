#!/usr/bin/env bash
# Installs dependencies, builds Release, and runs the main job: a prompt answered by the
# embedded default (all roles in one process, CPU backend), the answer streamed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/deploy/install-deps.sh"
"$root/deploy/build.sh"
troupe="${TROUPE_BUILD_DIR:-$root/build}/cli/troupe"
prompt=${1:-"Once upon a time"}

model="$root/../shared/models/stories260K/stories260K.gguf"
if [[ ! -f "$model" ]]; then
  model="$root/build/quickstart-tiny.gguf"
  echo "quickstart: ../shared/models not found; generating a small random model at $model"
  "$troupe" model synth --preset tiny --dtype f32 --out "$model"
fi
echo "quickstart: model $model"
"$troupe" generate --model "$model" --prompt "$prompt" --max-tokens 64
