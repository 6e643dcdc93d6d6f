// troupe scheduler: the scheduler role alone. Gateways and workers connect to --listen.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "cli/cluster_common.h"
#include "cli/policy_flags.h"
#include "src/comm/rendezvous.h"
#include "commands.h"

namespace troupe::cli {

namespace {

struct scheduler_args {
  std::string listen = "tcp://127.0.0.1:5556";
  int64_t max_context = 0;
  scheduler_flags scheduler;
  std::string rendezvous;  // where tensor-parallel worker groups meet (tcp://HOST:PORT); empty: none
};

int run_scheduler(const scheduler_args& a) {
  block_stop_signals();
  // The control plane's rendezvous: the ranks of each worker group publish their Gloo
  // addresses here and read each other's (keys are namespaced by group).
  std::unique_ptr<comm::rendezvous_service> rendezvous;
  if (!a.rendezvous.empty()) {
    rendezvous = std::make_unique<comm::rendezvous_service>(a.rendezvous);
    spdlog::info("scheduler: rendezvous for worker groups on {}", rendezvous->address());
  }
  actors::node n({.worker_threads = 2}, {});
  const scheduler_options opts = make_scheduler_options(a.scheduler, a.max_context);
  spdlog::info("scheduler: policy {}", describe_policy(opts.policy));
  const std::string endpoint = n.add_scheduler(a.listen, opts);
  spdlog::info("scheduler: ready on {}", endpoint);
  wait_for_signal(n);
  n.stop();
  spdlog::info("scheduler: stopped");
  return 0;
}

}  // namespace

void add_scheduler(CLI::App& app) {
  auto a = std::make_shared<scheduler_args>();
  auto* sub = app.add_subcommand("scheduler", "Run the scheduler role");
  add_config_flag(*sub);
  sub->add_option("--listen", a->listen, "Address components connect to (tcp://HOST:PORT)")->capture_default_str();
  sub->add_option("--max-context", a->max_context, "Prompt + generated tokens bound (0 = none; the gateway checks too)")
      ->capture_default_str();
  add_scheduler_flags(*sub, a->scheduler);
  sub->add_option("--rendezvous", a->rendezvous,
                  "Address where tensor-parallel worker groups meet (tcp://HOST:PORT; empty: none)")
      ->capture_default_str();
  sub->callback([a] { set_runner([a] { return run_scheduler(*a); }); });
}

}  // namespace troupe::cli
