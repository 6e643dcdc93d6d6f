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

# The embedded default: gateway, scheduler and a worker in one process (inproc:// inside,
# the client socket on loopback). Started in the background, stopped cleanly (SIGTERM) at exit.
port=${TROUPE_PORT:-5555}
gateway="tcp://127.0.0.1:$port"
log=$(mktemp -t troupe-serve.XXXXXX.log)
"$troupe" serve --model "$model" --listen "$gateway" --workers 1 >"$log" 2>&1 &
serve_pid=$!
stop_server() {
  if kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid"
    wait "$serve_pid" && echo "quickstart: server stopped cleanly" || echo "quickstart: server exited with $?"
  fi
}
trap stop_server EXIT
for _ in $(seq 1 100); do
  grep -q "ready on" "$log" && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$log"; echo "quickstart: the server did not start" >&2; exit 1; }
  sleep 0.1
done
grep -q "ready on" "$log" || { cat "$log"; echo "quickstart: the server is not ready after 10 s" >&2; exit 1; }
echo "quickstart: serving on $gateway (log: $log)"
"$troupe" submit --gateway "$gateway" --prompt "$prompt" --max-tokens 64
