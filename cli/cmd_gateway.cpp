// troupe gateway: the gateway role alone. Clients connect to --listen; it connects to the
// scheduler at --scheduler and tokenizes with --model's tokenizer.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "cli/cluster_common.h"
#include "commands.h"

namespace troupe::cli {

namespace {

struct gateway_args {
  std::string model;
  std::string listen = "tcp://127.0.0.1:5555";
  std::string scheduler = "tcp://127.0.0.1:5556";
  gateway_flags gateway;
};

int run_gateway(const gateway_args& a) {
  block_stop_signals();
  const loaded_model model = load_served_model(a.model);
  actors::transport_options transport;
  transport.max_message_bytes = a.gateway.max_message_kb << 10;
  actors::node n({.worker_threads = 2}, transport);
  const std::string endpoint = add_gateway_with_http(n, a.listen, a.scheduler, a.gateway, {&model});
  spdlog::info("gateway: ready on {}", endpoint);
  wait_for_signal(n);
  const size_t cancelled = n.drain(a.gateway.drain_s);
  spdlog::info("gateway: drained ({} jobs cancelled at the deadline); stopping", cancelled);
  n.stop();
  return 0;
}

}  // namespace

void add_gateway(CLI::App& app) {
  auto a = std::make_shared<gateway_args>();
  auto* sub = app.add_subcommand("gateway", "Run the gateway role (clients connect here)");
  add_config_flag(*sub);
  sub->add_option("--model", a->model, "Model file (its tokenizer and context length are used)")->required();
  sub->add_option("--listen", a->listen, "Client address (tcp://HOST:PORT)")->capture_default_str();
  sub->add_option("--scheduler", a->scheduler, "Scheduler address")->capture_default_str();
  add_gateway_flags(*sub, a->gateway);
  sub->callback([a] { set_runner([a] { return run_gateway(*a); }); });
}

}  // namespace troupe::cli
