// troupe serve: the all-in-one cluster. Gateway, scheduler and N CPU workers in one
// process, talking Cap'n Proto over inproc:// ZeroMQ sockets (the same code as across
// processes); clients connect to --listen.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "cli/cluster_common.h"
#include "cli/policy_flags.h"
#include "commands.h"

namespace troupe::cli {

namespace {

struct serve_args {
  std::string model;
  std::string listen = "tcp://127.0.0.1:5555";
  int workers = 1;
  worker_flags worker;
  scheduler_flags scheduler;
  gateway_flags gateway;
};

int run_serve(const serve_args& a) {
  block_stop_signals();
  const loaded_model model = load_served_model(a.model, a.worker.kernels);
  actors::transport_options transport;
  transport.max_message_bytes = a.gateway.max_message_kb << 10;
  actors::node n({.worker_threads = 2}, transport);
  const std::string control = "inproc://troupe-scheduler";
  const scheduler_options so = make_scheduler_options(a.scheduler, model.file->config().max_seq_len);
  spdlog::info("scheduler: policy {}", describe_policy(so.policy));
  n.add_scheduler(control, so);
  for (int i = 0; i < a.workers; ++i) {
    actors::worker_options wo;
    wo.identity = {"local", model.name, a.worker.max_batch};
    wo.step_log = a.worker.step_log;
    n.add_worker(control, "worker-" + std::to_string(i), make_cpu_backend(model, a.worker), wo);
  }
  const std::string endpoint = add_gateway_with_http(n, a.listen, control, a.gateway, {&model});
  spdlog::info("serve: ready on {} ({} workers{})", endpoint, a.workers,
               n.http_endpoint().empty() ? std::string() : ", HTTP on http://" + n.http_endpoint());
  wait_for_signal(n);
  const size_t cancelled = n.drain(a.gateway.drain_s);
  spdlog::info("serve: drained ({} jobs cancelled at the deadline); stopping", cancelled);
  n.stop();
  spdlog::info("serve: stopped");
  return 0;
}

}  // namespace

void add_serve(CLI::App& app) {
  auto a = std::make_shared<serve_args>();
  auto* sub = app.add_subcommand("serve", "All-in-one cluster: gateway, scheduler and workers in one process");
  add_config_flag(*sub);
  sub->add_option("--model", a->model, "GGUF file, llama2.c .bin or Hugging Face directory")->required();
  sub->add_option("--listen", a->listen, "Client address (tcp://HOST:PORT)")->capture_default_str();
  sub->add_option("--workers", a->workers, "CPU workers (model replicas)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  add_worker_flags(*sub, a->worker);
  sub->get_option("--max-batch-tokens")->description("Deprecated here: --max-step-tokens (the workers take it too)");
  add_scheduler_flags(*sub, a->scheduler);
  a->gateway.http_listen = "127.0.0.1:8000";
  add_gateway_flags(*sub, a->gateway);
  sub->callback([a, sub] {
    // The in-process workers' step budget is the policy's: a plan never exceeds what they hold.
    auto& step_tokens = a->scheduler.policy.max_step_tokens;
    if (sub->count("--max-batch-tokens") && !sub->count("--max-step-tokens"))
      step_tokens = static_cast<int32_t>(a->worker.max_batch_tokens);
    a->worker.max_batch_tokens = step_tokens;
    set_runner([a] { return run_serve(*a); });
  });
}

}  // namespace troupe::cli
