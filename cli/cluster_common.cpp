#include "cli/cluster_common.h"

#include "cli/commands.h"
#include "cli/policy_flags.h"

#include <CLI/CLI.hpp>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <filesystem>

#include "actors/http_server.h"
#include "src/chat/chat_template.h"
#include "src/engine/cpu_backend.h"
#include "troupe/error.h"

namespace troupe::cli {

served_model loaded_model::served() const { return {name, tok.get(), file->config().max_seq_len}; }

loaded_model load_served_model(const std::string& path, const kern::kernel_registry_options& kernels) {
  loaded_model m;
  m.registry = kern::make_kernel_registry(kernels);  // first: a bad --kernel fails before the model loads
  m.file = open_model(path);
  m.tok = std::make_unique<tokenizer>(m.file->tokenizer());
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
  sub.add_option("--step-log", f.step_log,
                 "Append each step's shape, time and the control-loop gap before it to this JSONL file (a step "
                 "profile for troupe sim)");
  sub.add_option("--swap-mb", f.swap_mb,
                 "Host memory per worker, MiB, for KV blocks preempted by swap (the scheduler's --preemption swap)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  add_kv_cache_flags(sub, f.kv_dtype, f.kv_fraction);
  add_kernel_flags(sub, f.kernels);
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
  opt.swap_bytes = f.swap_mb << 20;
  opt.kv_f16 = f.kv_dtype == "f16";
  if (f.kv_fraction > 0) opt.kv_fraction = f.kv_fraction;
  return std::make_unique<cpu_backend>(*m.file, *m.registry, opt);
}

void add_scheduler_flags(CLI::App& sub, scheduler_flags& f) {
  sub.add_option("--trace", f.trace, "Append every scheduling decision to this JSONL file (replayable by troupe sim)");
  sub.add_option("--heartbeat-timeout", f.heartbeat_timeout_s,
                 "Seconds without a worker's heartbeat before it is removed (its jobs move to other workers), or a "
                 "gateway's before its jobs are cancelled")
      ->capture_default_str();
  add_policy_flags(sub, f.policy);
}

scheduler_options make_scheduler_options(const scheduler_flags& f, int64_t max_context) {
  scheduler_options o;
  o.policy = f.policy;
  o.trace_path = f.trace;
  o.policy.max_context = max_context;
  o.heartbeat_timeout_s = o.gateway_timeout_s = f.heartbeat_timeout_s;
  return o;
}

void add_gateway_flags(CLI::App& sub, gateway_flags& f) {
  sub.add_option("--max-queue", f.max_queue, "Jobs in flight at the gateway; past it, overloaded at once")
      ->capture_default_str();
  sub.add_option("--max-message-kb", f.max_message_kb, "Largest client message, KiB")->capture_default_str();
  sub.add_option("--drain-timeout", f.drain_s, "On SIGTERM, seconds jobs in flight may run before they are cancelled")
      ->capture_default_str();
  sub.add_option("--api-key", f.api_keys,
                 "KEY or KEY=TENANT: accept only jobs carrying one of these keys (repeatable); none: any key, "
                 "which then names the job's tenant");
  sub.add_option("--gateway-id", f.gateway_id,
                 "This gateway's name at the scheduler, unique among its gateways (default: HOSTNAME-PID)");
  sub.add_option("--scheduler-timeout", f.scheduler_timeout_s,
                 "Seconds without a word from the scheduler (it answers the gateway's heartbeats, 5 a second) "
                 "before the jobs in flight end with a `disconnected` error and new jobs get `overloaded`")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  auto* http = sub.add_option("--http-listen", f.http_listen,
                              "Serve the OpenAI-compatible HTTP API on HOST:PORT (/v1/completions, "
                              "/v1/chat/completions, /v1/models, /tokenize, /health, ...); empty: none")
                   ->capture_default_str();
  sub.add_option("--http-max-body-mb", f.http_max_body_mb, "Largest HTTP request body, MiB (larger: 413)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub.add_option("--http-request-timeout", f.http_request_timeout_s,
                 "Seconds a client has to send a whole request (slow clients are dropped), and the keep-alive "
                 "idle time")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub.add_option("--http-sse-keepalive", f.http_sse_keepalive_s,
                 "Seconds of silence in a stream (a long prefill, a queue) before an SSE comment keeps proxies "
                 "and clients from timing it out")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub.add_option("--chat-template", f.chat_template_file,
                 "Jinja chat template file for /v1/chat/completions, instead of the model's own "
                 "(GGUF tokenizer.chat_template or tokenizer_config.json)")
      ->check(CLI::ExistingFile);
  sub.parse_complete_callback([&f, http] { f.http_listen_given = http->count() > 0; });
}

std::string add_gateway_with_http(actors::node& n, const std::string& listen, const std::string& scheduler,
                                  const gateway_flags& f, const std::vector<const loaded_model*>& models) {
  const gateway_options go = make_gateway_options(f);
  std::vector<served_model> served;
  std::vector<api::api_model> api_models;
  const auto now = static_cast<int64_t>(std::time(nullptr));
  for (const auto* m : models) {
    served.push_back(m->served());
    api_models.push_back({m->name, m->tok.get(), m->file->config().max_seq_len, now});
  }
  if (f.http_listen.empty()) return n.add_gateway(listen, scheduler, go, served);
  actors::http_options ho;
  ho.listen = f.http_listen;
  ho.max_body_bytes = f.http_max_body_mb << 20;
  ho.request_timeout_s = f.http_request_timeout_s;
  ho.keepalive_comment_s = f.http_sse_keepalive_s;
  ho.api_keys = f.api_keys;
  // Each model's chat template, parsed once (a syntax error stops the start-up, naming it).
  std::map<std::string, std::shared_ptr<const chat_template>> templates;
  std::map<std::string, std::pair<std::string, std::string>> special;  // model -> bos_token, eos_token
  for (const auto* m : models) {
    std::string source = m->tok->data().chat_template;
    if (!f.chat_template_file.empty()) {
      std::ifstream in(f.chat_template_file);
      source.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    special[m->name] = {m->tok->data().bos_token, m->tok->data().eos_token};
    if (source.empty()) {
      spdlog::info("model {}: no chat template: /v1/chat/completions answers 400 (give --chat-template FILE)", m->name);
      continue;
    }
    templates[m->name] = std::make_shared<const chat_template>(source);
  }
  api::chat_renderer render = [templates, special](const std::string& model, const std::string& messages,
                                                   const std::string& tools, bool add_generation_prompt) {
    auto it = templates.find(model);
    if (it == templates.end()) throw error(error_kind::failed, "model " + model + " has no chat template", "messages");
    chat_template_inputs in;
    in.messages = nlohmann::ordered_json::parse(messages);
    const auto t = nlohmann::ordered_json::parse(tools);
    if (!t.empty()) in.tools = t;
    in.add_generation_prompt = add_generation_prompt;
    std::tie(in.bos_token, in.eos_token) = special.at(model);
    return it->second->render(in);
  };
  actors::http_front front{ho, api_models, templates.empty() ? api::chat_renderer{} : render};
  try {
    return n.add_gateway(listen, scheduler, go, served, &front);
  } catch (const error& e) {
    if (f.http_listen_given || e.field() != "http-listen") throw;
    spdlog::warn("{}: running without the HTTP API (give --http-listen HOST:PORT, or an empty one for none)", e.what());
    return n.add_gateway(listen, scheduler, go, served);
  }
}

gateway_options make_gateway_options(const gateway_flags& f) {
  gateway_options go;
  go.max_queue = f.max_queue;
  go.limits.max_message_bytes = f.max_message_kb << 10;
  go.api_keys = f.api_keys;
  go.gateway_id = f.gateway_id;
  go.scheduler_timeout_s = f.scheduler_timeout_s;
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
