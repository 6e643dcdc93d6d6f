#!/usr/bin/env bash
# Troupe's CPU engine beside llama.cpp on the very same GGUF files and thread counts.
#   bench/engine_vs_llamacpp.sh MODEL.gguf... [-- THREADS...]
# Needs LLAMA_BIN: a directory holding llama.cpp's llama-bench and llama-batched-bench,
# built by you outside this repository (Troupe ships none of it). Make the models with
#   build/cli/troupe model synth --preset 110m|1b --dtype f16|q8_0|q4_0 --out FILE.gguf
# Prints one Markdown row per (model, threads): prefill tok/s of a 512-token prompt and
# decode tok/s at batch 1, 8 and 32, Troupe / llama.cpp, and Troupe's resident memory.
# ROUNDS=N runs the two engines alternately N times and prints the median of each cell.
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

rounds=${ROUNDS:-1}
echo "| model | threads | prefill 512 (troupe / llama.cpp) | decode b1 | decode b8 | decode b32 | troupe RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for m in "${models[@]}"; do
  for t in "${threads[@]}"; do
    tmp=$(mktemp -d)
    # The two engines alternate, `rounds` times: on a shared machine the memory bandwidth
    # drifts by 10-30% between minutes, and alternating lets both see the same drift.
    for ((r = 1; r <= rounds; ++r)); do
      echo "bench: $(basename "$m") on $t thread(s), round $r of $rounds" >&2
      "$bench_engine" --model "$m" --threads "$t" --prompt 512 --batch 1,8,32 --gen 16 --reps 2 --json \
        >"$tmp/ours.$r" 2>/dev/null
      "$LLAMA_BIN/llama-bench" -m "$m" -t "$t" -p 512 -n 16 -r 2 -o json >"$tmp/pp.$r" 2>/dev/null
      "$LLAMA_BIN/llama-batched-bench" -m "$m" -t "$t" -c 4096 -b 2048 -ub 512 -npp 16 -ntg 16 -npl 8,32 2>/dev/null |
        grep -E '^\|\s+16 ' >"$tmp/bb.$r"
    done
    python3 - "$m" "$t" "$tmp" "$rounds" <<'PY'
import json, os, statistics, sys
model, threads, tmp, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cells = {}  # (what, side) -> values over the rounds
def add(key, v):
    cells.setdefault(key, []).append(v)
rss = "?"
for r in range(1, rounds + 1):
    ours = open(f"{tmp}/ours.{r}").read()
    rows = [json.loads(l) for l in ours.splitlines() if l.startswith("{")]
    rss = next((l.split(":")[1].split()[0] for l in ours.splitlines() if "resident memory" in l), rss)
    add(("pre", 0), next(x["tok_s"] for x in rows if x["mode"] == "prefill"))
    for x in rows:
        if x["mode"] == "decode":
            add((x["batch"], 0), x["tok_s"])
    for x in json.loads(open(f"{tmp}/pp.{r}").read()):
        add(("pre" if x["n_prompt"] else 1, 1), x["avg_ts"])
    for line in open(f"{tmp}/bb.{r}").read().splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        add((int(cols[2]), 1), float(cols[7]))  # B, S_TG t/s
def cell(what):
    a, b = cells.get((what, 0)), cells.get((what, 1))
    med = lambda v: f"{statistics.median(v):.1f}" if v else "?"
    return f"{med(a)} / {med(b)}"
print(f"| {os.path.basename(model)} | {threads} | {cell('pre')} | {cell(1)} | {cell(8)} | {cell(32)} | {rss} |")
PY
    rm -rf "$tmp"
  done
done
