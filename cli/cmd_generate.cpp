// troupe generate: load a model, generate from one prompt in this process, stream the text
// to stdout (or print one JSON object with --json). Several --prompt run as one batch and
// print when done ({"results": [...], "timings": ...} with --json). Lifecycle lines go to
// stderr.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ref/ref.h"
#include "src/cpu_backend.h"
#include "src/generate.h"
#include "troupe/error.h"
#include "troupe/kernel_registry.h"

namespace troupe::cli {

namespace {

struct generate_args {
  std::string model, tokenizer;
  std::vector<std::string> prompts;  // several: generated together in one batch
  sampling_params sampling;
  int threads = (int)std::max(1u, std::thread::hardware_concurrency());
  int64_t kv_mb = 0;
  int32_t block_size = 16;
  int64_t max_batch_tokens = 512;
  std::vector<std::string> kernels;  // OP=VARIANT
  bool json = false;
};

// "--kernel OP=VARIANT": chooses a registered variant for one op.
void select_kernel(kernel_registry& registry, const std::string& spec) {
  const auto eq = spec.find('=');
  troupe_op op;
  if (eq == std::string::npos || !op_from_name(spec.substr(0, eq), &op))
    throw error(error_kind::failed, "--kernel " + spec + ": expected OP=VARIANT with a known op (e.g. matmul_f32=ref)",
                "kernel");
  registry.select(op, spec.substr(eq + 1));
}

int run_generate(const generate_args& a) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto model = open_model(a.model, a.tokenizer);
  const tokenizer tok(model->tokenizer());
  const double load_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  const model_config& c = model->config();
  spdlog::info("loaded {} ({}): dim {}, {} layers, {} heads ({} kv), vocab {} in {:.1f} ms", a.model, model->format(),
               c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, load_ms);

  kernel_registry registry;
  for (const auto& v : kern::ref::variants()) registry.add(v);
  kern::cpu::register_all(registry);  // the best variant this CPU runs becomes the default
  for (const auto& k : a.kernels) select_kernel(registry, k);

  cpu_backend_options opt;
  opt.n_threads = a.threads;
  opt.kv_bytes = a.kv_mb << 20;
  opt.block_size = a.block_size;
  opt.max_batch_tokens = a.max_batch_tokens;
  cpu_backend backend(*model, registry, opt);
  spdlog::info("backend: {}", backend.describe());

  std::vector<generation_request> reqs(a.prompts.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].prompt = a.prompts[i];
    reqs[i].sampling = a.sampling;
  }
  generate_options gopt;
  gopt.max_batch_tokens = a.max_batch_tokens;
  gopt.max_seq_len = c.max_seq_len;
  generation_timings tm;
  tm.load_ms = load_ms;
  text_callback stream;
  const bool streaming = !a.json && reqs.size() == 1;
  if (streaming) {
    std::fwrite(a.prompts[0].data(), 1, a.prompts[0].size(), stdout);
    stream = [](size_t, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  }
  const auto outs = generate(backend, tok, reqs, gopt, stream, &tm);

  if (a.json) {
    auto result = [](const generation_output& o) {
      return nlohmann::json{
          {"prompt_ids", o.prompt_ids}, {"ids", o.ids}, {"text", o.text}, {"finish_reason", o.finish_reason}};
    };
    const nlohmann::json timings = {{"load_ms", tm.load_ms},
                                    {"prefill_tok_s", tm.prefill_tok_s()},
                                    {"decode_tok_s", tm.decode_tok_s()},
                                    {"prefill_tokens", tm.prefill_tokens},
                                    {"decode_tokens", tm.decode_tokens}};
    nlohmann::json j;
    if (outs.size() == 1) {
      j = result(outs[0]);
    } else {
      j["results"] = nlohmann::json::array();
      for (const auto& o : outs) j["results"].push_back(result(o));
    }
    j["timings"] = timings;
    // replace: a token may end in the middle of a UTF-8 character at max_tokens
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else if (streaming) {
    std::printf("\n");
  } else {
    for (size_t i = 0; i < outs.size(); ++i)
      std::printf("%s[%zu] %s%s\n", i ? "\n" : "", i, a.prompts[i].c_str(), outs[i].text.c_str());
  }
  std::fflush(stdout);
  spdlog::info("prefill {} tokens at {:.1f} tok/s, decode {} tokens at {:.1f} tok/s; finish: {}", tm.prefill_tokens,
               tm.prefill_tok_s(), tm.decode_tokens, tm.decode_tok_s(), outs[0].finish_reason);
  return 0;
}

}  // namespace

void add_generate(CLI::App& app) {
  auto a = std::make_shared<generate_args>();
  auto* sub = app.add_subcommand("generate", "Generate text from a model file in this process (no cluster)");
  sub->add_option("--model", a->model, "GGUF file, llama2.c .bin or Hugging Face directory")->required();
  sub->add_option("--prompt", a->prompts, "Text to continue; several: generated together as one batch")->required();
  sub->add_option("--tokenizer", a->tokenizer, "Tokenizer file (llama2.c checkpoints)");
  sub->add_option("--max-tokens", a->sampling.max_tokens, "Most tokens to generate")->capture_default_str();
  sub->add_option("--temperature", a->sampling.temperature, "0 = greedy")->capture_default_str();
  sub->add_option("--top-k", a->sampling.top_k, "0 = off")->capture_default_str();
  sub->add_option("--top-p", a->sampling.top_p, "1 = off")->capture_default_str();
  sub->add_option("--min-p", a->sampling.min_p, "0 = off")->capture_default_str();
  sub->add_option("--repeat-penalty", a->sampling.repetition_penalty, "1 = off")->capture_default_str();
  sub->add_option("--seed", a->sampling.seed, "Seed of the sampler")->capture_default_str();
  sub->add_option("--stop", a->sampling.stop_strings, "Stop string (repeatable)");
  sub->add_option("--threads", a->threads, "Kernel threads")->capture_default_str();
  sub->add_option("--kv-mb", a->kv_mb, "KV cache size in MiB (0 = 5% of RAM)")->capture_default_str();
  sub->add_option("--block-size", a->block_size, "Tokens per KV block")->capture_default_str();
  sub->add_option("--max-batch-tokens", a->max_batch_tokens, "Tokens per step (prefill chunk)")->capture_default_str();
  sub->add_option("--kernel", a->kernels, "OP=VARIANT: pick a kernel variant (repeatable)");
  sub->add_flag("--json", a->json, "Print one JSON object instead of streaming text");
  sub->callback([a] { set_runner([a] { return run_generate(*a); }); });
}

}  // namespace troupe::cli
