// troupe worker: one CPU worker (a model replica) connected to the scheduler at --scheduler.
// Exits 0 when the scheduler tells it to shut down or on SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "cli/cluster_common.h"
#include "commands.h"

namespace troupe::cli {

namespace {

struct worker_args {
  std::string model;
  std::string scheduler = "tcp://127.0.0.1:5556";
  std::string name;
  worker_flags worker;
};

int run_worker(const worker_args& a) {
  block_stop_signals();
  const loaded_model model = load_served_model(a.model);
  char host[256] = "unknown";
  gethostname(host, sizeof host - 1);
  const std::string name = a.name.empty() ? std::string(host) + "-" + std::to_string(getpid()) : a.name;
  actors::node n({.worker_threads = 1}, {});
  actors::worker_options wo;
  wo.identity = {host, model.name, a.worker.max_batch};
  n.add_worker(a.scheduler, name, make_cpu_backend(model, a.worker), wo);
  wait_for_signal(n);
  n.stop();
  spdlog::info("worker {}: stopped", name);
  return n.worker_refused() ? 1 : 0;
}

}  // namespace

void add_worker(CLI::App& app) {
  auto a = std::make_shared<worker_args>();
  auto* sub = app.add_subcommand("worker", "Run a worker role");
  add_config_flag(*sub);
  sub->add_option("--model", a->model, "GGUF file, llama2.c .bin or Hugging Face directory")->required();
  sub->add_option("--scheduler", a->scheduler, "Scheduler address")->capture_default_str();
  sub->add_option("--name", a->name, "Worker name (its routing id; default HOST-PID)");
  add_worker_flags(*sub, a->worker);
  sub->callback([a] { set_runner([a] { return run_worker(*a); }); });
}

}  // namespace troupe::cli
