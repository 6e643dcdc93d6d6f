#include "cli/cluster_common.h"

#include <CLI/CLI.hpp>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <ctime>
#include <filesystem>

#include "kernels/cpu/cpu.h"
#include "kernels/ref/ref.h"
#include "src/cpu_backend.h"

namespace troupe::cli {

served_model loaded_model::served() const { return {name, tok.get(), file->config().max_seq_len}; }

loaded_model load_served_model(const std::string& path) {
  loaded_model m;
  m.file = open_model(path);
  m.tok = std::make_unique<tokenizer>(m.file->tokenizer());
  m.registry = std::make_unique<kernel_registry>();
  for (const auto& v : kern::ref::variants()) m.registry->add(v);
  kern::cpu::register_all(*m.registry);  // as `troupe generate`: the best variant this CPU runs
  m.name = std::filesystem::path(path).stem().string();
  const auto& c = m.file->config();
  spdlog::info("model {}: {} ({}), {} layers, dim {}, vocab {}, context {}", m.name, path, m.file->format(), c.n_layers,
               c.dim, c.vocab_size, c.max_seq_len);
  return m;
}

void add_worker_flags(CLI::App& sub, worker_flags& f) {
  sub.add_option("--threads", f.threads, "Kernel threads per worker")->capture_default_str();
  sub.add_option("--kv-mb", f.kv_mb, "KV cache per worker, MiB")->capture_default_str();
  sub.add_option("--block-size", f.block_size, "Tokens per KV block")->capture_default_str();
  sub.add_option("--max-batch", f.max_batch, "Sequences per step")->capture_default_str();
  sub.add_option("--max-batch-tokens", f.max_batch_tokens, "Tokens per step")->capture_default_str();
}

std::unique_ptr<worker_backend> make_cpu_backend(const loaded_model& m, const worker_flags& f, const tp::shard* shard,
                                                 communicator* comm) {
  cpu_backend_options opt;
  opt.shard = shard;
  opt.comm = comm;
  opt.n_threads = f.threads;
  opt.kv_bytes = f.kv_mb << 20;
  opt.block_size = f.block_size;
  opt.max_batch_tokens = f.max_batch_tokens;
  return std::make_unique<cpu_backend>(*m.file, *m.registry, opt);
}

void add_scheduler_flags(CLI::App& sub, scheduler_flags& f) {
  sub.add_option("--max-queued", f.max_queued, "Requests waiting at the scheduler before overloaded")
      ->capture_default_str();
  sub.add_option("--heartbeat-timeout", f.heartbeat_timeout_s,
                 "Seconds without a worker's heartbeat before it is removed")
      ->capture_default_str();
}

scheduler_options make_scheduler_options(const scheduler_flags& f, const worker_flags& w, int64_t max_context) {
  scheduler_options o;
  o.policy.max_queued = f.max_queued;
  o.policy.max_step_tokens = static_cast<int32_t>(w.max_batch_tokens);
  o.policy.max_context = max_context;
  o.heartbeat_timeout_s = f.heartbeat_timeout_s;
  return o;
}

void add_gateway_flags(CLI::App& sub, gateway_flags& f) {
  sub.add_option("--max-queue", f.max_queue, "Jobs in flight at the gateway; past it, overloaded at once")
      ->capture_default_str();
  sub.add_option("--max-message-kb", f.max_message_kb, "Largest client message, KiB")->capture_default_str();
  sub.add_option("--drain-timeout", f.drain_s, "On SIGTERM, seconds jobs in flight may run before they are cancelled")
      ->capture_default_str();
  sub.add_option("--api-key", f.api_keys, "Accept only jobs carrying this key (repeatable; none = no check)");
}

gateway_options make_gateway_options(const gateway_flags& f) {
  gateway_options go;
  go.max_queue = f.max_queue;
  go.limits.max_message_bytes = f.max_message_kb << 10;
  go.api_keys = f.api_keys;
  return go;
}

void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

bool wait_for_signal(actors::node& n) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  for (;;) {
    timespec ts{0, 200 * 1000 * 1000};
    const int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("received {}: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
      return true;
    }
    if (n.has_workers() && n.wait_for_workers(0.0)) return false;
  }
}

}  // namespace troupe::cli
