// Engine throughput on one model file: prefill tok/s for one long prompt and decode tok/s
// at several batch sizes, with resident memory. Drives the CPU worker backend with step
// plans directly, as the scheduler would.
//   bench_engine --model F.gguf [--threads 1,2] [--prompt 512] [--batch 1,8,32] [--gen 32]
//                [--reps 3] [--json] [--kv-dtype f32|f16]
// Prefill: one sequence of `prompt` seeded random ids in one step (best of reps).
// Decode: `batch` sequences of 16 prompt tokens each, then `gen` steps of one token per
// sequence; tok/s = batch * gen / decode time (best of reps).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/make_registry.h"
#include "src/engine/cpu_backend.h"
#include "troupe/kernel_registry.h"
#include "troupe/model.h"

namespace {

std::vector<int> parse_list(const char* s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::atoi(item.c_str()));
  return out;
}

double rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return 0.0;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Blocks [first, first + n) as one sequence's table.
std::vector<int32_t> table(int32_t first, int32_t n) {
  std::vector<int32_t> t(n);
  for (int32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  std::vector<int> threads{1}, batches{1, 8, 32};
  int prompt = 512, gen = 32, reps = 3;
  bool json = false, kv_f16 = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--model")
      model_path = v, ++i;
    else if (a == "--threads")
      threads = parse_list(v), ++i;
    else if (a == "--batch")
      batches = parse_list(v), ++i;
    else if (a == "--prompt")
      prompt = std::atoi(v), ++i;
    else if (a == "--gen")
      gen = std::atoi(v), ++i;
    else if (a == "--reps")
      reps = std::atoi(v), ++i;
    else if (a == "--json")
      json = true;
    else if (a == "--kv-dtype" && (std::string(v) == "f16" || std::string(v) == "f32"))
      kv_f16 = std::string(v) == "f16", ++i;
    else {
      std::fprintf(stderr, "bench_engine: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  if (model_path.empty()) {
    std::fprintf(stderr,
                 "usage: bench_engine --model F.gguf [--threads 1,2] [--prompt 512] [--batch 1,8,32] [--gen 32] "
                 "[--kv-dtype f32|f16]\n");
    return 2;
  }
  try {
    auto t_load = std::chrono::steady_clock::now();
    auto model = troupe::open_model(model_path);
    const double load_ms = seconds_since(t_load) * 1000;
    const auto reg_ptr = troupe::kern::make_kernel_registry({});
    const troupe::kernel_registry& reg = *reg_ptr;
    const auto& cfg = model->config();
    const int max_batch = *std::max_element(batches.begin(), batches.end());
    const int32_t bs = 16;
    const int32_t prompt_blocks = (prompt + bs - 1) / bs;
    const int32_t seq_blocks = (16 + gen + bs) / bs;
    std::mt19937 rng(42);
    std::uniform_int_distribution<int32_t> tok(3, (int32_t)cfg.vocab_size - 1);
    std::fprintf(stderr, "bench_engine: %s loaded in %.0f ms (mmap), RSS %.0f MiB\n", model_path.c_str(), load_ms,
                 rss_mib());

    for (int nt : threads) {
      troupe::kern::cpu::thread_pool pool(nt);
      const troupe_kctx kctx = troupe::kern::cpu::make_kctx(pool);
      troupe::cpu_backend_options opt;
      opt.kctx = &kctx;
      opt.block_size = bs;
      opt.max_batch_tokens = std::max(prompt, max_batch * 16);
      const int64_t kv_dim = cfg.n_kv_heads * cfg.head_dim;
      const int64_t blocks_needed = std::max<int64_t>(prompt_blocks, (int64_t)max_batch * seq_blocks) + 1;
      opt.kv_f16 = kv_f16;
      opt.kv_bytes = blocks_needed * bs * kv_dim * (kv_f16 ? 2 : 4) * 2 * cfg.n_layers;
      troupe::cpu_backend backend(*model, reg, opt);

      // ---- prefill: one prompt, one step ----
      double best_prefill = 1e30;
      for (int r = 0; r < reps; ++r) {
        troupe::step_plan plan;
        troupe::seq_work w;
        w.seq_id = 1;
        for (int i = 0; i < prompt; ++i) w.tokens.push_back(tok(rng));
        w.block_table = table(0, prompt_blocks);
        plan.seqs.push_back(w);
        const auto t0 = std::chrono::steady_clock::now();
        backend.step(plan);
        best_prefill = std::min(best_prefill, seconds_since(t0));
      }
      const double prefill_tok_s = prompt / best_prefill;
      if (!json)
        std::printf("%-28s threads %d  prefill %4d tok: %9.1f tok/s\n",
                    model_path.substr(model_path.rfind('/') + 1).c_str(), nt, prompt, prefill_tok_s);
      else
        std::printf("{\"model\":\"%s\",\"threads\":%d,\"mode\":\"prefill\",\"tokens\":%d,\"tok_s\":%.2f}\n",
                    model_path.c_str(), nt, prompt, prefill_tok_s);

      // ---- decode at each batch size ----
      for (int b : batches) {
        double best = 1e30;
        for (int r = 0; r < reps; ++r) {
          std::vector<troupe::seq_work> seqs(b);
          troupe::step_plan pre;
          for (int s = 0; s < b; ++s) {
            seqs[s].seq_id = 100 + s;
            for (int i = 0; i < 16; ++i) seqs[s].tokens.push_back(tok(rng));
            seqs[s].block_table = table(s * seq_blocks, seq_blocks);
            pre.seqs.push_back(seqs[s]);
          }
          auto res = backend.step(pre);
          const auto t0 = std::chrono::steady_clock::now();
          for (int g = 0; g < gen; ++g) {
            troupe::step_plan plan;
            for (int s = 0; s < b; ++s) {
              troupe::seq_work w;
              w.seq_id = seqs[s].seq_id;
              w.tokens = {res.outputs[s].token};
              w.start_pos = 16 + g;
              w.block_table = seqs[s].block_table;
              plan.seqs.push_back(std::move(w));
            }
            res = backend.step(plan);
          }
          best = std::min(best, seconds_since(t0));
        }
        const double tok_s = (double)b * gen / best;
        if (!json)
          std::printf("%-28s threads %d  decode batch %2d: %9.1f tok/s\n",
                      model_path.substr(model_path.rfind('/') + 1).c_str(), nt, b, tok_s);
        else
          std::printf("{\"model\":\"%s\",\"threads\":%d,\"mode\":\"decode\",\"batch\":%d,\"tok_s\":%.2f}\n",
                      model_path.c_str(), nt, b, tok_s);
        std::fflush(stdout);
      }
    }
    std::printf("# resident memory after the run: %.0f MiB (weights are memory-mapped)\n", rss_mib());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_engine: %s\n", e.what());
    return 1;
  }
  return 0;
}
