// What the cluster's subcommands (serve, gateway, scheduler, worker) share: the model a
// process serves, CPU workers over it, flags common to several roles, and waiting for
// SIGINT/SIGTERM.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/components.h"
#include "kernels/make_registry.h"
#include "src/model/tokenizer.h"
#include "troupe/kernel_registry.h"
#include "troupe/model.h"

namespace CLI {
class App;
}

namespace troupe {
class communicator;
namespace tp {
struct shard;
}
}  // namespace troupe

namespace troupe::cli {

// A model opened for serving: its file (weights stay mapped), tokenizer and kernels.
struct loaded_model {
  std::unique_ptr<model_file> file;
  std::unique_ptr<tokenizer> tok;
  std::unique_ptr<kernel_registry> registry;  // make_kernel_registry's, as `troupe generate` builds it
  std::string name;                           // the file's stem: what clients ask for
  served_model served() const;
};
// `kernels`: the variants workers run (the gateway, which runs none, takes the defaults).
loaded_model load_served_model(const std::string& path, const kern::kernel_registry_options& kernels = {});

struct worker_flags {
  int threads = 1;
  int64_t kv_mb = 64;  // per worker
  int32_t block_size = 16;
  int32_t max_batch = 64;
  int64_t max_batch_tokens = 512;
  std::string step_log;                   // per-step shapes and times (JSONL)
  int64_t swap_mb = 0;                    // host pool for preemption by swap, per worker
  std::string kv_dtype = "auto";          // KV pool elements: auto (f32 on the CPU, f16 on CUDA), f32, f16
  double kv_fraction = 0;                 // with kv_mb == 0: share of RAM / free GPU memory; 0 = default
  kern::kernel_registry_options kernels;  // --plugin, --kernel
};
void add_worker_flags(CLI::App& sub, worker_flags& f);
// With a shard and its group's communicator: this rank of a tensor-parallel group.
std::unique_ptr<worker_backend> make_cpu_backend(const loaded_model& m, const worker_flags& f,
                                                 const tp::shard* shard = nullptr, communicator* comm = nullptr);

struct scheduler_flags {
  // The policy's flags (cli/policy_flags.h); a serving role plans the next step while one
  // runs unless told otherwise.
  sched::policy_config policy = [] {
    sched::policy_config p;
    p.max_inflight_steps = 2;
    return p;
  }();
  std::string trace;  // policy decision trace (JSONL)
  double heartbeat_timeout_s = 2.0;
};
// The scheduler role's flags and the policy's (add_policy_flags).
void add_scheduler_flags(CLI::App& sub, scheduler_flags& f);
scheduler_options make_scheduler_options(const scheduler_flags& f, int64_t max_context);

struct gateway_flags {
  size_t max_queue = 256;
  size_t max_message_kb = 1024;
  double drain_s = 10.0;  // shutdown deadline for jobs in flight
  std::vector<std::string> api_keys;
  std::string gateway_id;  // empty: HOSTNAME-PID
  double scheduler_timeout_s = gateway_options{}.scheduler_timeout_s;
  // The OpenAI-compatible HTTP API: HOST:PORT, empty = none. `serve` defaults to
  // 127.0.0.1:8000 and, when that default is taken, runs without it (saying so).
  std::string http_listen;
  bool http_listen_given = false;  // set after parsing: an explicit address must bind
  size_t http_max_body_mb = 8;
  double http_request_timeout_s = 15;
  double http_sse_keepalive_s = 5;
  std::string chat_template_file;  // overrides the model's own chat template
};
gateway_options make_gateway_options(const gateway_flags& f);
void add_gateway_flags(CLI::App& sub, gateway_flags& f);
// Adds the gateway for `models` (the first is the default) to `n`, with the HTTP API when
// f.http_listen is set; returns the ZeroMQ client endpoint.
std::string add_gateway_with_http(actors::node& n, const std::string& listen, const std::string& scheduler,
                                  const gateway_flags& f, const std::vector<const loaded_model*>& models);

// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after), so that
// wait_for_signal() can take them synchronously. Call before starting any actor.
void block_stop_signals();
// Waits for SIGINT/SIGTERM (true) or, when `n` has workers, for one of them to exit
// (false), checking every 200 ms.
bool wait_for_signal(actors::node& n);

}  // namespace troupe::cli
