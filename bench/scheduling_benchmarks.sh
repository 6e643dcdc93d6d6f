#!/usr/bin/env bash
# The scheduling figures of docs/BENCHMARKS.md, against a real `troupe serve` (CPU workers):
#  1. batching: output tok/s with 32 concurrent streams vs one at a time;
#  2. a flood of long prompts: p99 TPOT of short jobs alone, under the flood with chunked
#     prefill, and under the flood without it;
#  3. fairness: two equal-weight tenants offered 10:1, tokens served while both have queued work.
#   bench/scheduling_benchmarks.sh MODEL.gguf [THREADS]
# BATCHING_MODEL=F.gguf runs experiment 1 on another model (a larger one shows the gain of
# batching better: its one-at-a-time decode is bound by memory bandwidth). EXPERIMENTS=3 runs
# only experiment 3 (any subset of 123).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
troupe=${TROUPE_BUILD_DIR:-$root/build}/cli/troupe
model=${1:?usage: $0 MODEL.gguf [THREADS]}
threads=${2:-2}
out=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$out"' EXIT

serve() {  # serve [extra flags...]: starts a server on $port and waits until it is ready
  "$troupe" serve --model "$model" --listen "tcp://127.0.0.1:$port" --threads "$threads" --kv-mb 512 "$@" \
    >"$out/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do grep -q "ready on" "$out/serve.log" && return; sleep 0.1; done
  echo "serve did not start:" >&2; cat "$out/serve.log" >&2; exit 1
}
stop() { kill -TERM "$server"; wait "$server" || true; port=$((port + 1)); }
# A run with rejected requests exits 1; here that is a figure, not a failure.
bench() { "$troupe" --log-level warn bench --gateway "tcp://127.0.0.1:$port" --vocab 256 "$@" 2>/dev/null || true; }
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

experiments=${EXPERIMENTS:-123}
main_model=$model
model=${BATCHING_MODEL:-$model}
if [[ $experiments == *1* ]]; then
echo "## 1. continuous batching: 32 streams vs one at a time ($(basename "$model"), $threads threads)"
serve --max-batch 64
bench --concurrency 1 --requests 8 --prompt-len 64 --output-len 64 --summary-json "$out/c1.json" >/dev/null
bench --concurrency 32 --requests 96 --prompt-len 64 --output-len 64 --summary-json "$out/c32.json" >/dev/null
stop
c1=$(field "$out/c1.json" "d['throughput']['output_tok_s']")
c32=$(field "$out/c32.json" "d['throughput']['output_tok_s']")
python3 -c "print(f'one at a time: {$c1:.1f} tok/s; 32 concurrent: {$c32:.1f} tok/s; ratio {$c32/$c1:.2f}x')"
fi
model=$main_model

if [[ $experiments == *2* ]]; then
echo "## 2. short jobs under a flood of long prompts (p99 TPOT of the short jobs)"
# Chunked prefill bounds what a decode step can carry: its token budget is the knob, and on a
# CPU, where prefill runs at a few hundred tokens/s, it must be small (16 tokens: at most ~12
# prompt tokens ride along with each decode step). Without chunking the budget must hold a
# whole 700-token prompt (1024), and a decode step that meets one waits for all of it.
for mode in alone chunked unchunked; do
  case $mode in
    alone | chunked) flags=(--max-step-tokens 16) ;;
    unchunked) flags=(--max-step-tokens 1024 --chunked-prefill false) ;;
  esac
  serve "${flags[@]}"
  flood=
  if [[ $mode != alone ]]; then
    # The flood is its own tenant: fair share keeps admitting the short jobs beside it.
    bench --rate 0.5 --duration 120 --prompt-len 700 --output-len 4 --tenants flood --timeout 900 >/dev/null &
    flood=$!
    sleep 2
  fi
  bench --concurrency 4 --requests 24 --prompt-len 32 --output-len 48 --summary-json "$out/$mode.json" >/dev/null
  if [[ -n $flood ]]; then kill "$flood" 2>/dev/null || true; wait "$flood" 2>/dev/null || true; fi
  stop
  echo "$mode (${flags[*]}): p99 TPOT $(field "$out/$mode.json" "round(d['tpot_s']['p99'] * 1000, 1)") ms, p50 TPOT $(field "$out/$mode.json" "round(d['tpot_s']['p50'] * 1000, 1)") ms, p50 TTFT $(field "$out/$mode.json" "round(d['ttft_s']['p50'] * 1000, 1)") ms"
done
fi

[[ $experiments == *3* ]] || exit 0
echo "## 3. fairness: tenants a and b, equal weights, offered 10:1, each above its fair share of capacity"
# Queues deep enough to hold the whole offered load: both tenants stay backlogged, and the
# policy's fair share, not the gateway's queue bound, decides who is served. The rate must
# put b's own offer (1/11 of it) well above half of what the worker serves (~25 jobs/s of
# prompt 16 + output 16 on 2 threads): at 120 req/s b offers ~11 jobs/s, about its share,
# its queue empties under Poisson arrivals and 1:1 is not owed. 330 req/s for 3 s offers b
# ~30 jobs/s, and the ~1000 jobs drain in under a minute.
serve --max-batch 8 --tenant a:1 --tenant b:1 --max-queue 100000 --max-queued 100000
bench --rate "${FAIR_RATE:-330}" --duration "${FAIR_DURATION:-3}" --requests 0 --prompt-len 16 --output-len 16 \
  --tenants a:10,b:1 --timeout 900 --out-jsonl "$out/fair.jsonl" >/dev/null
stop
python3 - "$out/fair.jsonl" <<'PY'
# Tokens served per tenant while both have queued work (a job is queued from its arrival to
# its first token), each request's tokens spread evenly between its first token and finish.
import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
done = [r for r in reqs if r["status"] == "finished" and r["generated"] > 0 and r["first_token"] >= 0]
# Sweep the queue lengths of both tenants; keep the intervals where both are > 0.
events = sorted([(r["arrival"], 1, r["tenant"]) for r in done] + [(r["first_token"], -1, r["tenant"]) for r in done])
queued, window, since = {"a": 0, "b": 0}, [], None
for t, d, who in events:
    queued[who] += d
    both = queued["a"] > 0 and queued["b"] > 0
    if both and since is None: since = t
    if not both and since is not None:
        window.append((since, t)); since = None
served = {"a": 0.0, "b": 0.0}
for r in done:
    t0, t1, n = r["first_token"], r["finish"], r["generated"]
    for w0, w1 in window:
        if t1 <= t0: served[r["tenant"]] += n if w0 <= t0 < w1 else 0
        else: served[r["tenant"]] += n * max(0.0, min(w1, t1) - max(w0, t0)) / (t1 - t0)
span = sum(w1 - w0 for w0, w1 in window)
first, last = (window[0][0], window[-1][1]) if window else (0, 0)
a, b = served["a"], served["b"]
print(f"both backlogged {span:.1f} s ({first:.1f}-{last:.1f} s, {len(window)} intervals): tenant a {a:.0f} tokens, "
      f"tenant b {b:.0f} tokens; b/a = {b/a:.3f} (1.0 = equal shares)")
PY
