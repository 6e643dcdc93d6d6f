#!/usr/bin/env bash
# Decode tok/s of one model at tensor-parallel sizes 1 and 2 on this machine (CPU ranks,
# Gloo over loopback), one kernel thread per rank, against one process with 1 and 2 threads.
#   bench/tp_decode.sh MODEL.gguf [MAX_TOKENS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
troupe=${TROUPE_BUILD_DIR:-$root/build}/cli/troupe
model=${1:?usage: $0 MODEL.gguf [MAX_TOKENS]}
n=${2:-32}
port=$((20000 + RANDOM % 20000))
gen() { "$troupe" --log-level error generate --model "$model" --prompt "Once upon a time" --max-tokens "$n" \
  --temperature 0 --json --kv-mb 256 "$@"; }
rate() { python3 -c "import json,sys; print(round(json.loads(sys.stdin.read())['timings']['decode_tok_s'], 1))"; }
echo "| $(basename "$model") | tp 1, 1 thread | $(gen --threads 1 | rate) tok/s |"
echo "| $(basename "$model") | tp 1, 2 threads | $(gen --threads 2 | rate) tok/s |"
gen --threads 1 --tp-size 2 --tp-rank 1 --rendezvous "tcp://127.0.0.1:$port" >/dev/null &
echo "| $(basename "$model") | tp 2 (2 processes x 1 thread, Gloo) | $(gen --threads 1 --tp-size 2 --tp-rank 0 --rendezvous "tcp://127.0.0.1:$port" | rate) tok/s |"
wait
