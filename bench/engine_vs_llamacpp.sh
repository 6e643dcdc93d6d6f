#!/usr/bin/env bash
# Troupe's CPU engine beside llama.cpp on the very same GGUF files and thread counts.
#   bench/engine_vs_llamacpp.sh MODEL.gguf... [-- THREADS...]
# Needs LLAMA_BIN: a directory holding llama.cpp's llama-bench and llama-batched-bench,
# built by you outside this repository (Troupe ships none of it). Make the models with
#   build/cli/troupe model synth --preset 110m|1b --dtype f16|q8_0|q4_0 --out FILE.gguf
# Prints one Markdown row per (model, threads): prefill tok/s of a 512-token prompt and
# decode tok/s at batch 1, 8 and 32, Troupe / llama.cpp, and Troupe's resident memory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench_engine=${TROUPE_BUILD_DIR:-$root/build}/bench/bench_engine
[[ -x $bench_engine ]] || { echo "no $bench_engine: build first (deploy/build.sh) or set TROUPE_BUILD_DIR" >&2; exit 2; }
: "${LLAMA_BIN:?set LLAMA_BIN to the directory holding llama-bench and llama-batched-bench of llama.cpp}"
models=() threads=(1 2)
while (($#)); do
  if [[ $1 == -- ]]; then shift; threads=("$@"); break; fi
  models+=("$1"); shift
done
((${#models[@]})) || { echo "usage: $0 MODEL.gguf... [-- THREADS...]" >&2; exit 2; }

echo "| model | threads | prefill 512 (troupe / llama.cpp) | decode b1 | decode b8 | decode b32 | troupe RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for m in "${models[@]}"; do
  for t in "${threads[@]}"; do
    echo "bench: $(basename "$m") on $t thread(s)" >&2
    ours=$("$bench_engine" --model "$m" --threads "$t" --prompt 512 --batch 1,8,32 --gen 16 --reps 2 --json 2>/dev/null)
    pp=$("$LLAMA_BIN/llama-bench" -m "$m" -t "$t" -p 512 -n 16 -r 2 -o json 2>/dev/null)
    bb=$("$LLAMA_BIN/llama-batched-bench" -m "$m" -t "$t" -c 4096 -b 2048 -ub 512 -npp 16 -ntg 16 -npl 8,32 2>/dev/null |
      grep -E '^\|\s+16 ')
    python3 - "$m" "$t" "$ours" "$pp" "$bb" <<'PY'
import json, os, sys
model, threads, ours, pp, bb = sys.argv[1:]
rows = [json.loads(l) for l in ours.splitlines() if l.startswith("{")]
rss = next((l.split(":")[1].split()[0] for l in ours.splitlines() if "resident memory" in l), "?")
t_pre = next(r["tok_s"] for r in rows if r["mode"] == "prefill")
t_dec = {r["batch"]: r["tok_s"] for r in rows if r["mode"] == "decode"}
ll = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.loads(pp)}
ll_b = {}
for line in bb.splitlines():
    cols = [c.strip() for c in line.strip("|").split("|")]
    ll_b[int(cols[2])] = float(cols[7])  # B, S_TG t/s
f = lambda a, b: f"{a:.1f} / {b:.1f}" if b else f"{a:.1f} / ?"
print(f"| {os.path.basename(model)} | {threads} | {f(t_pre, ll.get('pp', 0))} | {f(t_dec[1], ll.get('tg', 0))} "
      f"| {f(t_dec[8], ll_b.get(8, 0))} | {f(t_dec[32], ll_b.get(32, 0))} | {rss} |")
PY
  done
done
