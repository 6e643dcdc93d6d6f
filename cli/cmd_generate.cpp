// troupe generate: load a model, generate from one prompt in this process, stream the text
// to stdout (or print one JSON object with --json). Several --prompt run as one batch and
// print when done ({"results": [...], "timings": ...} with --json). Lifecycle lines go to
// stderr.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>
#include <nlohmann/json.hpp>

#include "cli/cuda_worker.h"
#include "commands.h"
#include "kernels/make_registry.h"
#include "src/comm/rendezvous.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/shard.h"
#include "troupe/communicator.h"
#include "src/cluster/generate.h"
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
  std::string kv_dtype = "auto";
  double kv_fraction = 0;
  int32_t block_size = 16;
  int64_t max_batch_tokens = 512;
  kern::kernel_registry_options kernels = {.cuda = true};  // --plugin, --kernel; CUDA variants in CUDA builds
  bool json = false;
  // Tensor parallelism: every rank runs this same command (SPMD) with its own --tp-rank;
  // rank 0 serves the rendezvous at --rendezvous and prints the output.
  int tp_size = 1;
  int tp_rank = 0;
  std::string rendezvous = "tcp://127.0.0.1:29500";
  std::string tp_host = "127.0.0.1";
  std::string backend = "cpu";  // or "cuda"
  int device = -1;              // CUDA device; -1: tp_rank % the devices visible
};

int run_generate(const generate_args& a) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto model = open_model(a.model, a.tokenizer);
  const tokenizer tok(model->tokenizer());
  const double load_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  const model_config& c = model->config();
  spdlog::info("loaded {} ({}): dim {}, {} layers, {} heads ({} kv), vocab {} in {:.1f} ms", a.model, model->format(),
               c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, load_ms);

  // The best variant this CPU runs is each op's CPU default; CUDA variants are the CUDA ones.
  const auto registry_ptr = kern::make_kernel_registry(a.kernels);
  const kernel_registry& registry = *registry_ptr;

  // Tensor parallel: rank 0 hosts the rendezvous; every rank loads only its shard's views.
  std::unique_ptr<comm::rendezvous_service> rendezvous;
  std::unique_ptr<rendezvous_store> store;
  std::unique_ptr<communicator> group;
  std::optional<tp::shard> shard;
  if (a.tp_rank < 0 || a.tp_rank >= a.tp_size)
    throw error(
        error_kind::failed,
        "--tp-rank " + std::to_string(a.tp_rank) + ": expected a rank in [0, " + std::to_string(a.tp_size) + ")",
        "tp-rank");
  if (a.tp_size > 1) {
    if (a.tp_rank == 0) rendezvous = std::make_unique<comm::rendezvous_service>(a.rendezvous);
    store = std::make_unique<comm::zmq_rendezvous_store>(a.rendezvous);
    gloo_options gopts;
    gopts.hostname = a.tp_host;
    gopts.prefix = "generate";
    group = make_gloo_communicator(*store, a.tp_rank, a.tp_size, gopts);
    shard = tp::make_shard(c, model->weights(), a.tp_rank, a.tp_size);
    spdlog::info("tensor parallel: {}; {} of {} heads, {} KV heads, hidden {} on this rank ({:.1f} MiB copied)",
                 group->describe(), shard->config.n_heads, c.n_heads, shard->config.n_kv_heads,
                 shard->config.hidden_dim, shard->bytes_owned / 1048576.0);
  }

  std::unique_ptr<worker_backend> backend_ptr;
  std::unique_ptr<communicator> nccl;  // GPU ranks all-reduce through NCCL
  if (a.backend == "cuda") {
    cli::cuda_worker_options co;
    co.device = cuda_device_for_rank(a.device, a.tp_rank);
    co.kv_bytes = a.kv_mb << 20;
    co.kv_f16 = a.kv_dtype != "f32";
    co.kv_fraction = a.kv_fraction;
    co.block_size = a.block_size;
    co.max_batch_tokens = a.max_batch_tokens;
    co.max_seqs = 256;
    if (group)
      nccl =
          make_nccl_group(*store, a.tp_rank, a.tp_size, co.device, "generate/nccl", std::chrono::milliseconds(60000));
    backend_ptr = make_cuda_worker_backend(*model, registry, co, shard ? &*shard : nullptr, nccl.get());
  } else {
    cpu_backend_options opt;
    opt.shard = shard ? &*shard : nullptr;
    opt.comm = group.get();
    opt.n_threads = a.threads;
    opt.kv_bytes = a.kv_mb << 20;
    opt.kv_f16 = a.kv_dtype == "f16";
    if (a.kv_fraction > 0) opt.kv_fraction = a.kv_fraction;
    opt.block_size = a.block_size;
    opt.max_batch_tokens = a.max_batch_tokens;
    backend_ptr = std::make_unique<cpu_backend>(*model, registry, opt);
  }
  worker_backend& backend = *backend_ptr;
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
  const bool quiet = a.tp_rank != 0;  // the other ranks compute the same tokens
  const bool streaming = !a.json && reqs.size() == 1 && !quiet;
  if (streaming) {
    std::fwrite(a.prompts[0].data(), 1, a.prompts[0].size(), stdout);
    stream = [](size_t, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  }
  const auto outs = generate(backend, tok, reqs, gopt, stream, &tm);

  if (quiet) {
    spdlog::info("tensor-parallel rank {} done", a.tp_rank);
    return 0;
  }
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
  add_sampling_flags(*sub, a->sampling);
  sub->add_option("--threads", a->threads, "Kernel threads")->capture_default_str();
  sub->add_option("--kv-mb", a->kv_mb, "KV cache size in MiB (0 = 5% of RAM)")->capture_default_str();
  add_kv_cache_flags(*sub, a->kv_dtype, a->kv_fraction);
  sub->add_option("--block-size", a->block_size, "Tokens per KV block")->capture_default_str();
  sub->add_option("--max-batch-tokens", a->max_batch_tokens, "Tokens per step (prefill chunk)")->capture_default_str();
  add_kernel_flags(*sub, a->kernels);
  sub->add_flag("--json", a->json, "Print one JSON object instead of streaming text");
  sub->add_option("--tp-size", a->tp_size, "Tensor-parallel ranks (processes), each started with its --tp-rank")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  sub->add_option("--tp-rank", a->tp_rank, "This process's rank (0 prints the output)")->capture_default_str();
  sub->add_option("--rendezvous", a->rendezvous, "Rendezvous address; rank 0 serves it (tcp://host:port)")
      ->capture_default_str();
  sub->add_option("--tp-host", a->tp_host, "Address this rank's Gloo transport listens on")->capture_default_str();
  sub->add_option("--backend", a->backend, "cpu, or cuda (builds with CUDA)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  sub->add_option("--device", a->device, "CUDA device with --backend cuda (-1: --tp-rank % the GPUs visible)")
      ->capture_default_str();
  sub->callback([a] { set_runner([a] { return run_generate(*a); }); });
}

}  // namespace troupe::cli
