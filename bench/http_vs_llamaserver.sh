#!/usr/bin/env bash
# Troupe's HTTP front door beside llama.cpp's llama-server, on the same GGUF file and the same
# load from the same client (`troupe bench --http`, OpenAI /v1/completions with SSE).
#   bench/http_vs_llamaserver.sh MODEL.gguf
# Needs LLAMA_BIN: a directory holding llama.cpp's llama-server, built by you outside this
# repository (Troupe ships none of it). Two loads per server:
#   one stream   50 jobs one after another (TTFT and time per output token at p50);
#   many streams CONC jobs in flight at once (default 1000), REQUESTS in all (default 2000),
# with the server's resident memory before and at its peak and its CPU seconds for the run,
# read from /proc. Prompts PROMPT (default 16) tokens, outputs OUT (default 64) tokens,
# ignore_eos, greedy. llama-server runs with SLOTS parallel slots (default 64, Troupe's
# default batch) and THREADS threads (default 2); its HTTP thread pool is its default
# (slots + 2 threads), or HTTP_THREADS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
troupe=${TROUPE_BUILD_DIR:-$root/build}/cli/troupe
[[ -x $troupe ]] || { echo "no $troupe: build first (deploy/build.sh) or set TROUPE_BUILD_DIR" >&2; exit 2; }
: "${LLAMA_BIN:?set LLAMA_BIN to the directory holding the llama-server of llama.cpp}"
model=${1:?usage: $0 MODEL.gguf}
conc=${CONC:-1000} requests=${REQUESTS:-2000} prompt=${PROMPT:-16} out=${OUT:-64}
slots=${SLOTS:-64} threads=${THREADS:-2} vocab=${VOCAB:-512}
tmp=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

wait_healthy() {  # PORT
  for _ in $(seq 1 600); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health") == 200 ]] && return 0
    sleep 0.1
  done
  echo "bench: the server on port $1 never became healthy" >&2
  return 1
}
cpu_s() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }  # user + system, in seconds (USER_HZ 100)
rss_mb() { awk '/VmRSS/ {print $2 / 1024}' "/proc/$1/status"; }

# One load against a server: prints "requests errors ttft_p50_ms tpot_p50_ms tok_s cpu_s rss0 rss_peak".
load() {  # PORT PID CONCURRENCY REQUESTS
  local port=$1 p=$2 c=$3 n=$4 peak
  local c0 r0
  c0=$(cpu_s "$p") r0=$(rss_mb "$p")
  (while sleep 0.2; do rss_mb "$p"; done >"$tmp/rss") &
  local sampler=$!
  "$troupe" --log-level warn bench --http "127.0.0.1:$port" --concurrency "$c" --requests "$n" \
    --prompt-len "fixed:$prompt" --output-len "fixed:$out" --vocab "$vocab" --timeout 600 \
    --summary-json "$tmp/summary.json" >/dev/null 2>"$tmp/bench.log" || true
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  peak=$(sort -n "$tmp/rss" | tail -n 1)
  python3 - "$tmp/summary.json" "$(cpu_s "$p")" "$c0" "$r0" "${peak:-$r0}" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
errors = s["requests"] - s["finished"]
print(s["finished"], errors, s["ttft_s"]["p50"] * 1e3, s["tpot_s"]["p50"] * 1e3, s["throughput"]["output_tok_s"],
      float(sys.argv[2]) - float(sys.argv[3]), sys.argv[4], sys.argv[5])
PY
}

declare -A row
run_server() {  # NAME COMMAND...
  local name=$1
  shift
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$@" "$port" >"$tmp/$name.log" 2>&1 &
  pid=$!
  wait_healthy "$port" || { tail -n 20 "$tmp/$name.log" >&2; exit 1; }
  echo "bench: $name: one stream" >&2
  row[$name.one]=$(load "$port" "$pid" 1 50)
  echo "bench: $name: $conc streams, $requests jobs" >&2
  row[$name.many]=$(load "$port" "$pid" "$conc" "$requests")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

troupe_serve() {
  exec "$troupe" serve --model "$model" --listen "tcp://127.0.0.1:$(($1 + 1))" --http-listen "127.0.0.1:$1" \
    --threads "$threads" --max-queue $((conc * 4)) --max-queued $((conc * 4))
}
llama_server() {
  local extra=()
  [[ -n ${HTTP_THREADS:-} ]] && extra=(--threads-http "$HTTP_THREADS")
  local ctx
  ctx=$("$troupe" --log-level off model inspect "$model" 2>/dev/null | awk '/^context/ {print $2; exit}')
  exec "$LLAMA_BIN/llama-server" -m "$model" --host 127.0.0.1 --port "$1" -t "$threads" -np "$slots" \
    -c $(( ${ctx:-2048} * slots )) "${extra[@]}"
}
run_server troupe troupe_serve
run_server llama-server llama_server

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
echo "Model $(basename "$model"), prompts $prompt tokens, outputs $out tokens; $cpu, $(nproc) cores."
echo
echo "| server | load | requests (errors) | TTFT p50 ms | TPOT p50 ms | output tok/s | server CPU s | RSS MB before / peak |"
echo "|---|---|---|---|---|---|---|---|"
for name in troupe llama-server; do
  for what in one many; do
    read -r n e ttft tpot tps cpu r0 rp <<<"${row[$name.$what]}"
    label=$([[ $what == one ]] && echo "1 stream" || echo "$conc streams")
    printf '| %s | %s | %s (%s) | %.1f | %.2f | %.0f | %.1f | %.0f / %.0f |\n' "$name" "$label" "$n" "$e" "$ttft" "$tpot" \
      "$tps" "$cpu" "$r0" "$rp"
  done
done
