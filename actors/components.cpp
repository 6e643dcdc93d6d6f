#include "actors/components.h"

#include <cstdio>
#include <fstream>
#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "src/codec.h"

namespace troupe::actors {

namespace {

// Seconds on a steady clock: the `now` every core takes.
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::chrono::milliseconds ms(double seconds) { return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1e3)); }

// ---- gateway --------------------------------------------------------------------------------------

struct gateway_state {
  std::unique_ptr<gateway_core> core;
  io_handle io;
  uint32_t client_socket = 0;
  uint32_t scheduler_socket = 0;
  bool draining = false;
  caf::response_promise drained;
  size_t cancelled_at_deadline = 0;

  void flush(gateway_output&& out) {
    for (auto& r : out.to_clients) io.send(client_socket, std::move(r.peer), std::move(r.bytes));
    for (auto& m : out.to_scheduler) io.send(scheduler_socket, {}, codec::encode(m));
  }
  void check_drained() {
    if (draining && core->in_flight() == 0 && drained.pending()) drained.deliver(cancelled_at_deadline);
  }
};

caf::behavior gateway_actor(caf::event_based_actor* self, std::shared_ptr<gateway_state> st) {
  return {
      [st](sockets_atom, uint32_t client, uint32_t scheduler) {
        st->client_socket = client;
        st->scheduler_socket = scheduler;
      },
      [st](io_recv_atom, uint32_t socket, std::string& peer, std::string& bytes) {
        const double now = now_s();
        if (socket == st->scheduler_socket) {
          try {
            st->flush(st->core->on_scheduler(codec::decode_control(bytes), now));
          } catch (const error& e) {
            spdlog::error("gateway: unusable message from the scheduler: {}", e.what());
          }
        } else {
          st->flush(st->core->on_client_frame(peer, bytes, now));
        }
        st->check_drained();
      },
      [st](io_bad_atom, uint32_t socket, std::string& peer, std::string& reason) {
        if (socket == st->client_socket) st->flush(st->core->on_bad_frame(peer, reason));
      },
      [st](io_peer_atom, uint32_t socket, std::string& peer) {
        if (socket == st->client_socket) {
          st->flush(st->core->on_client_gone(peer, now_s()));
          st->check_drained();
        }
      },
      [self, st](drain_atom, double deadline_s) -> caf::result<size_t> {
        st->core->stop_accepting();
        st->draining = true;
        spdlog::info("gateway: draining {} jobs in flight (deadline {:.1f} s)", st->core->in_flight(), deadline_s);
        if (st->core->in_flight() == 0) return size_t{0};
        st->drained = self->make_response_promise();
        self->delayed_send(self, ms(deadline_s), deadline_atom::value);
        return st->drained;
      },
      [st](deadline_atom) {
        const size_t n = st->core->in_flight();
        if (n == 0) return;
        spdlog::warn("gateway: shutdown deadline passed; cancelling {} jobs", n);
        st->cancelled_at_deadline = n;
        st->flush(st->core->cancel_all("cancelled: the server is shutting down and the deadline passed", now_s()));
        st->check_drained();
      },
  };
}

// ---- scheduler --------------------------------------------------------------------------------------

struct scheduler_state {
  explicit scheduler_state(scheduler_options o) : trace_path(o.trace_path), core(std::move(o)) {
    if (!trace_path.empty()) {
      trace.open(trace_path, std::ios::app);
      if (!trace) throw error(error_kind::failed, "scheduler: cannot write the trace " + trace_path, "trace");
      spdlog::info("scheduler: recording the policy trace in {}", trace_path);
    }
  }
  std::string trace_path;
  std::ofstream trace;
  scheduler_core core;
  io_handle io;
  uint32_t socket = 0;

  void write_trace() {
    if (trace.is_open()) trace << core.take_trace() << std::flush;
  }

  void flush(scheduler_core::outbox&& out) {
    for (auto& m : out) io.send(socket, std::move(m.peer), codec::encode(m.message));
  }
};

caf::behavior scheduler_actor(caf::event_based_actor* self, std::shared_ptr<scheduler_state> st) {
  self->delayed_send(self, std::chrono::milliseconds(100), tick_atom::value);
  return {
      [st](sockets_atom, uint32_t socket, uint32_t) { st->socket = socket; },
      [st](io_recv_atom, uint32_t, std::string& peer, std::string& bytes) {
        proto::control_message msg;
        try {
          msg = codec::decode_control(bytes);
        } catch (const error& e) {
          spdlog::warn("scheduler: unusable message from {}: {}", peer, e.what());
          st->io.send(st->socket, peer, codec::encode(proto::peer_error{e.kind(), e.what(), e.field()}));
          return;
        }
        st->flush(st->core.on_message(peer, std::move(msg), now_s()));
      },
      [](io_bad_atom, uint32_t, std::string& peer, std::string& reason) {
        spdlog::warn("scheduler: unusable frame from {}: {}", peer, reason);
      },
      [st](io_peer_atom, uint32_t, std::string& peer) { st->flush(st->core.on_peer_gone(peer, now_s())); },
      [self, st](tick_atom) {
        st->flush(st->core.on_tick(now_s()));
        st->write_trace();
        self->delayed_send(self, std::chrono::milliseconds(100), tick_atom::value);
      },
      [st](stop_atom, std::string& reason) {
        st->flush(st->core.shutdown_workers(reason));
        st->write_trace();
        return true;
      },
  };
}

// ---- worker ----------------------------------------------------------------------------------------

struct worker_state {
  worker_state(std::unique_ptr<worker_backend> b, worker_options o)
      : core(std::move(b), o.identity), opts(std::move(o)) {
    if (!opts.step_log.empty()) {
      step_log.reset(std::fopen(opts.step_log.c_str(), "a"));
      if (!step_log) throw error(error_kind::failed, "worker: cannot write the step log " + opts.step_log, "step-log");
    }
  }
  worker_core core;
  worker_options opts;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> step_log{nullptr, &std::fclose};

  // Runs a plan; with a step log, records its shape and time (one write per line, so the
  // workers of one process may share the file).
  proto::step_outcome run(const step_plan& plan) {
    const auto t0 = std::chrono::steady_clock::now();
    auto out = core.step(plan);
    if (step_log && out.error.empty()) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      int64_t tokens = 0, context = 0;
      for (const auto& w : plan.seqs) {
        tokens += static_cast<int64_t>(w.tokens.size());
        context += w.start_pos;
      }
      char line[160];
      const int n =
          std::snprintf(line, sizeof line, "{\"tokens\":%lld,\"context\":%lld,\"seqs\":%zu,\"time_s\":%.9f}\n",
                        (long long)tokens, (long long)context, plan.seqs.size(), s);
      std::fwrite(line, 1, static_cast<size_t>(n), step_log.get());
      std::fflush(step_log.get());
    }
    return out;
  }
  io_handle io;
  uint32_t socket = 0;
  uint64_t heartbeats = 0;
  std::shared_ptr<std::atomic<bool>> refused;  // set when the scheduler refused this worker

  void send(proto::control_message m) { io.send(socket, {}, codec::encode(m)); }
};

caf::behavior worker_actor(caf::event_based_actor* self, std::shared_ptr<worker_state> st) {
  return {
      [self, st](sockets_atom, uint32_t socket, uint32_t) {
        st->socket = socket;
        st->send(st->core.registration());
        self->delayed_send(self, ms(st->opts.heartbeat_s), tick_atom::value);
      },
      [self, st](io_recv_atom, uint32_t, std::string&, std::string& bytes) {
        proto::control_message msg;
        try {
          msg = codec::decode_control(bytes);
        } catch (const error& e) {
          spdlog::error("worker: unusable message from the scheduler: {}", e.what());
          return;
        }
        if (auto* plan = std::get_if<step_plan>(&msg)) {
          st->send(st->run(*plan));
        } else if (auto* r = std::get_if<proto::registered>(&msg)) {
          spdlog::info("worker: registered as replica {}", r->replica_id);
        } else if (auto* s = std::get_if<proto::shutdown>(&msg)) {
          spdlog::info("worker: shutdown ({}) after {} steps", s->reason, st->core.steps());
          self->quit();
        } else if (auto* e = std::get_if<proto::peer_error>(&msg)) {
          if (e->field == "registration") {
            st->send(st->core.registration());  // the scheduler lost us (restart, timeout)
          } else {
            spdlog::error("worker: the scheduler refused us: {} ({})", e->message, e->field);
            st->refused->store(true);
            self->quit(caf::exit_reason::user_shutdown);
          }
        }
      },
      [self, st](tick_atom) {
        st->send(proto::heartbeat{++st->heartbeats});
        self->delayed_send(self, ms(st->opts.heartbeat_s), tick_atom::value);
      },
  };
}

}  // namespace

// ---- node ---------------------------------------------------------------------------------------------

node::node(const actor_system_options& sys, const transport_options& transport)
    : rt_(sys), io_(rt_.system(), transport) {}

node::~node() { stop(); }

std::string node::add_scheduler(const std::string& address, scheduler_options opts) {
  auto st = std::make_shared<scheduler_state>(std::move(opts));
  st->io = io_.handle();
  scheduler_ = rt_.system().spawn(scheduler_actor, st);
  auto bound = io_.open(socket_role::router_bind, address, scheduler_);
  caf::anon_send(scheduler_, sockets_atom::value, bound.socket, uint32_t{0});
  spdlog::info("scheduler: listening for components on {}", bound.endpoint);
  return bound.endpoint;
}

std::string node::add_gateway(const std::string& listen, const std::string& scheduler_address, gateway_options opts,
                              std::vector<served_model> models) {
  auto st = std::make_shared<gateway_state>();
  st->core = std::make_unique<gateway_core>(std::move(opts), std::move(models));
  st->io = io_.handle();
  gateway_ = rt_.system().spawn(gateway_actor, st);
  // The scheduler socket first: the actor knows both sockets before any client can reach it.
  auto to_scheduler = io_.open(socket_role::dealer_connect, scheduler_address, gateway_, "gateway");
  auto clients = io_.open(socket_role::router_bind, listen, gateway_);
  caf::anon_send(gateway_, sockets_atom::value, clients.socket, to_scheduler.socket);
  spdlog::info("gateway: listening for clients on {}, scheduler at {}", clients.endpoint, scheduler_address);
  return clients.endpoint;
}

void node::add_worker(const std::string& scheduler_address, const std::string& name,
                      std::unique_ptr<worker_backend> backend, worker_options opts) {
  auto st = std::make_shared<worker_state>(std::move(backend), std::move(opts));
  st->io = io_.handle();
  st->refused = worker_refused_;
  auto w = rt_.system().spawn<caf::detached>(worker_actor, st);
  auto sock = io_.open(socket_role::dealer_connect, scheduler_address, w, name);
  caf::anon_send(w, sockets_atom::value, sock.socket, uint32_t{0});
  spdlog::info("worker {}: {} connecting to {}", name, st->core.registration().device, scheduler_address);
  workers_.push_back(w);
}

size_t node::drain(double deadline_s) {
  if (!gateway_) return 0;
  caf::scoped_actor self{rt_.system()};
  size_t cancelled = 0;
  self->request(gateway_, caf::infinite, drain_atom::value, deadline_s)
      .receive([&](size_t n) { cancelled = n; },
               [&](caf::error& e) { spdlog::error("gateway: drain failed: {}", to_string(e)); });
  return cancelled;
}

bool node::wait_for_workers(double timeout_s) {
  caf::scoped_actor self{rt_.system()};
  for (auto& w : workers_) self->monitor(w);
  bool exited = false;
  self->receive([&](caf::down_msg&) { exited = true; }, caf::after(caf::duration(ms(timeout_s))) >> [] {});
  return exited;
}

void node::stop() {
  if (!io_.handle()) return;
  caf::scoped_actor self{rt_.system()};
  if (scheduler_) {
    self->request(scheduler_, std::chrono::seconds(5), stop_atom::value, std::string("the scheduler is stopping"))
        .receive([](bool) {}, [](caf::error&) {});
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the I/O actor send the shutdowns
  }
  for (auto* a : {&gateway_, &scheduler_})
    if (*a) self->send_exit(*a, caf::exit_reason::user_shutdown);
  for (auto& w : workers_) self->send_exit(w, caf::exit_reason::user_shutdown);
  for (auto* a : {&gateway_, &scheduler_})
    if (*a) self->wait_for(*a);
  for (auto& w : workers_) self->wait_for(w);
  io_.stop();
  gateway_ = scheduler_ = nullptr;
  workers_.clear();
}

}  // namespace troupe::actors
