// troupe worker: one worker (a model replica, or one rank of a tensor-parallel group) on the
// CPU or a GPU (--backend cuda), connected to the scheduler at --scheduler.
// Exits 0 when the scheduler tells it to shut down. SIGINT/SIGTERM drains it first: the
// scheduler stops giving it new work, lets its running jobs finish here (at most
// --drain-timeout seconds, then moves them elsewhere) and sends shutdown; a second signal
// stops it at once.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <signal.h>

#include <chrono>
#include <optional>

#include "cli/cluster_common.h"
#include "cli/cuda_worker.h"
#include "src/comm/rendezvous.h"
#include "src/comm/tp_group.h"
#include "src/engine/shard.h"
#include "troupe/communicator.h"
#include "troupe/error.h"
#include "commands.h"

namespace troupe::cli {

namespace {

struct worker_args {
  std::string model;
  std::string scheduler = "tcp://127.0.0.1:5556";
  std::string name;
  worker_flags worker;
  // Tensor parallelism: the ranks of one group all run `troupe worker` with the same
  // --group, --tp-size and --rendezvous (the scheduler's), each with its --rank. Rank 0 is
  // the replica the scheduler sees; it relays each step plan to the others.
  int tp_size = 1;
  int rank = 0;
  std::string group = "g0";
  std::string rendezvous = "tcp://127.0.0.1:5557";
  std::string tp_host = "127.0.0.1";
  double tp_timeout_s = 10;
  std::string backend = "cpu";  // or "cuda"
  int device = -1;              // CUDA device; -1: rank % the devices visible
  double drain_s = 60;
};

// The options of a CUDA rank, from the worker's flags.
cuda_worker_options cuda_options(const worker_args& a) {
  cuda_worker_options co;
  co.device = cuda_device_for_rank(a.device, a.rank);
  co.kv_bytes = a.worker.kv_mb << 20;
  co.block_size = a.worker.block_size;
  co.max_batch_tokens = a.worker.max_batch_tokens;
  co.max_seqs = a.worker.max_batch;
  co.swap_bytes = a.worker.swap_mb << 20;
  co.kv_f16 = a.worker.kv_dtype != "f32";
  co.kv_fraction = a.worker.kv_fraction;
  return co;
}

// After the drain request: until the scheduler's shutdown ends the worker, a second signal
// comes, or the deadline (plus slack for the scheduler's tick) passes without a shutdown.
void wait_for_drain(actors::node& n, const std::string& name, double deadline_s) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    if (n.wait_for_workers(0.2)) return;
    timespec zero{0, 0};
    if (sigtimedwait(&set, nullptr, &zero) > 0) {
      spdlog::warn("worker {}: second signal while draining; stopping now", name);
      return;
    }
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (deadline_s > 0 && waited > deadline_s + 5) {
      spdlog::warn("worker {}: no shutdown from the scheduler {:.0f} s after the drain request; stopping", name,
                   waited);
      return;
    }
  }
}

int run_worker(const worker_args& a) {
  block_stop_signals();
  const bool on_gpu = a.backend == "cuda";
  kern::kernel_registry_options kernels = a.worker.kernels;
  kernels.cuda = on_gpu;
  const loaded_model model = load_served_model(a.model, kernels);
  char host[256] = "unknown";
  gethostname(host, sizeof host - 1);
  const std::string name = a.name.empty() ? std::string(host) + "-" + std::to_string(getpid()) : a.name;
  std::unique_ptr<comm::zmq_rendezvous_store> store;
  std::unique_ptr<communicator> group;
  std::unique_ptr<communicator> nccl;  // GPU ranks: the all-reduces; `group` relays the plans
  std::optional<tp::shard> shard;
  std::unique_ptr<worker_backend> backend;
  std::optional<cuda_worker_options> co;
  if (on_gpu) co = cuda_options(a);  // before any group forms: a rank without a usable GPU fails alone, at once
  if (a.tp_size > 1) {
    if (a.rank < 0 || a.rank >= a.tp_size)
      throw error(error_kind::failed,
                  "--rank " + std::to_string(a.rank) + ": expected a rank in [0, " + std::to_string(a.tp_size) + ")",
                  "rank");
    store = std::make_unique<comm::zmq_rendezvous_store>(a.rendezvous);
    gloo_options go;
    go.hostname = a.tp_host;
    go.prefix = "group/" + a.group;
    go.timeout = std::chrono::milliseconds((int64_t)(a.tp_timeout_s * 1000));
    spdlog::info("worker {}: joining tensor-parallel group {} as rank {} of {} (rendezvous {})", name, a.group, a.rank,
                 a.tp_size, a.rendezvous);
    group = make_gloo_communicator(*store, a.rank, a.tp_size, go);
    shard = tp::make_shard(model.file->config(), model.file->weights(), a.rank, a.tp_size);
    if (on_gpu) {
      nccl = make_nccl_group(*store, a.rank, a.tp_size, co->device, "group/" + a.group + "/nccl", go.timeout);
      backend = make_cuda_worker_backend(*model.file, *model.registry, *co, &*shard, nccl.get());
    } else {
      backend = make_cpu_backend(model, a.worker, &*shard, group.get());
    }
    if (a.rank > 0) {
      // A follower: no connection to the scheduler; it runs what rank 0 relays.
      spdlog::info("worker {}: rank {} of group {} ready ({}; {})", name, a.rank, a.group, group->describe(),
                   backend->describe());
      const std::string why = comm::run_tp_follower(*backend, *group);
      spdlog::info("worker {}: rank {} of group {} ends: {}", name, a.rank, a.group, why);
      return why == "stopped" ? 0 : 1;
    }
    backend = std::make_unique<comm::tp_group_leader>(
        std::move(backend), *group, std::chrono::milliseconds(500), [name](const std::string& why) {
          spdlog::error("worker {}: tensor-parallel group broken ({}); leaving the cluster", name, why);
          kill(getpid(), SIGTERM);
        });
  } else if (on_gpu) {
    backend = make_cuda_worker_backend(*model.file, *model.registry, *co);
  } else {
    backend = make_cpu_backend(model, a.worker);
  }
  spdlog::info("worker {}: {}", name, backend->describe());
  actors::node n({.worker_threads = 1}, {});
  actors::worker_options wo;
  wo.identity = {host, model.name, a.worker.max_batch};
  wo.step_log = a.worker.step_log;
  n.add_worker(a.scheduler, name, std::move(backend), wo);
  if (wait_for_signal(n)) {
    n.drain_workers(a.drain_s);
    wait_for_drain(n, name, a.drain_s);
  }
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
  sub->add_option("--tp-size", a->tp_size, "Ranks in this worker's tensor-parallel group")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  sub->add_option("--rank", a->rank, "This worker's rank in its group (0 talks to the scheduler)")
      ->capture_default_str();
  sub->add_option("--group", a->group, "Tensor-parallel group name")->capture_default_str();
  sub->add_option("--rendezvous", a->rendezvous, "The scheduler's rendezvous address (troupe scheduler --rendezvous)")
      ->capture_default_str();
  sub->add_option("--tp-host", a->tp_host, "Address this rank's Gloo transport listens on (reachable by the others)")
      ->capture_default_str();
  sub->add_option("--tp-timeout", a->tp_timeout_s, "Seconds a rank waits on the others before the group is broken")
      ->capture_default_str();
  sub->add_option("--backend", a->backend, "cpu, or cuda (builds with CUDA; with --tp-size, NCCL between the GPUs)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  sub->add_option("--device", a->device, "CUDA device with --backend cuda (-1: rank % the GPUs visible)")
      ->capture_default_str();
  sub->add_option("--drain-timeout", a->drain_s,
                  "On SIGTERM, seconds this worker's running jobs may take to finish here before the scheduler "
                  "moves them to other workers (0 = no limit)")
      ->capture_default_str();
  sub->callback([a] { set_runner([a] { return run_worker(*a); }); });
}

}  // namespace troupe::cli
