#include "actors/components.h"

#include <cstdio>
#include <fstream>
#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <chrono>
#include <random>
#include <thread>

#include "actors/http_server.h"
#include "src/cluster/codec.h"

namespace troupe::actors {

namespace {

// Seconds on a steady clock: the `now` every core takes.
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::chrono::milliseconds ms(double seconds) { return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1e3)); }

// ---- gateway --------------------------------------------------------------------------------------

// The ZeroMQ front end of the gateway core: client frames are decoded here, and a frame that
// cannot be used gets an error reply to that client only; the core sees value types.
struct gateway_state {
  std::unique_ptr<gateway_core> core;
  codec::limits limits;
  io_handle io;
  uint32_t client_socket = 0;
  uint32_t scheduler_socket = 0;
  double heartbeat_s = 0.2;
  bool draining = false;
  caf::response_promise drained;
  size_t cancelled_at_deadline = 0;
  // The HTTP front end, when there is one: frames from its peers come as from a socket of
  // this id, and replies to them go back through it.
  static constexpr uint32_t http_socket = UINT32_MAX;
  std::shared_ptr<http_server> http;
  // What /health reads (from the HTTP thread): empty = ready. Refreshed every heartbeat tick
  // (readiness changes with the scheduler's heartbeat answers), not per message.
  std::shared_ptr<std::mutex> health_mu = std::make_shared<std::mutex>();
  std::shared_ptr<std::string> health = std::make_shared<std::string>("starting");
  void publish_health() {
    std::string why = core->not_ready();
    std::lock_guard lk(*health_mu);
    if (*health != why) *health = std::move(why);
  }

  bool is_client_socket(uint32_t socket) const { return socket == client_socket || (http && socket == http_socket); }
  void send_client(std::string peer, proto::server_message m) {
    if (http && http_server::owns(peer))
      http->deliver(peer, std::move(m));
    else
      io.send(client_socket, std::move(peer), codec::encode(m));
  }

  void on_client_frame(const std::string& peer, const std::string& bytes, double now) {
    proto::client_message msg;
    try {
      msg = codec::decode_client(bytes, limits);
    } catch (const error& e) {
      reject_frame(peer, error_info::of(e));
      return;
    }
    flush(core->on_client_message(peer, std::move(msg), now));
  }
  void reject_frame(const std::string& peer, error_info why) {
    spdlog::warn("gateway: rejected a frame from a client: {}", why.message);
    send_client(peer, proto::server_message{proto::job_error{0, "", std::move(why)}});
  }
  void flush(gateway_output&& out) {
    for (auto& r : out.to_clients) send_client(std::move(r.peer), std::move(r.message));
    for (auto& m : out.to_scheduler) io.send(scheduler_socket, {}, codec::encode(m));
  }
  void check_drained() {
    if (draining && core->in_flight() == 0 && drained.pending()) drained.deliver(cancelled_at_deadline);
  }
};

caf::behavior gateway_actor(caf::event_based_actor* self, std::shared_ptr<gateway_state> st) {
  return {
      [self, st](sockets_atom, uint32_t client, uint32_t scheduler) {
        st->client_socket = client;
        st->scheduler_socket = scheduler;
        self->send(self, tick_atom::value);  // the first heartbeat at once: the scheduler learns of us
      },
      // Heartbeats to the scheduler, and the end of every job when it has fallen silent.
      [self, st](tick_atom) {
        st->flush(st->core->on_tick(now_s()));
        st->publish_health();
        st->check_drained();
        self->delayed_send(self, ms(st->heartbeat_s), tick_atom::value);
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
          st->on_client_frame(peer, bytes, now);
        }
        st->check_drained();
      },
      [st](io_bad_atom, uint32_t socket, std::string& peer, std::string& reason) {
        if (st->is_client_socket(socket)) st->reject_frame(peer, {error_kind::failed, reason, "message"});
      },
      [st](io_peer_atom, uint32_t socket, std::string& peer) {
        if (st->is_client_socket(socket)) {
          st->flush(st->core->on_client_gone(peer, now_s()));
          st->check_drained();
        }
      },
      [self, st](drain_atom, double deadline_s) -> caf::result<size_t> {
        st->core->stop_accepting();
        st->publish_health();
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
  // The scheduler's share of the control loop: seconds from a step result's frame in to
  // the next plans out (decode, policy, encode), over all results.
  double result_handling_s = 0;
  uint64_t results = 0;

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
        const bool result = std::holds_alternative<proto::step_outcome>(msg);
        const double t0 = now_s();
        st->flush(st->core.on_message(peer, std::move(msg), t0));
        if (result) {
          st->result_handling_s += now_s() - t0;
          ++st->results;
        }
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
        if (st->results > 0)
          spdlog::info("scheduler: {} step results, {:.3f} ms mean from a result in to the next plans out", st->results,
                       1e3 * st->result_handling_s / double(st->results));
        st->flush(st->core.shutdown_workers(reason));
        st->write_trace();
        return true;
      },
  };
}

// ---- worker ----------------------------------------------------------------------------------------

// What the worker actor and its heartbeat actor share about the scheduler link.
struct scheduler_link {
  std::atomic<double> heard{0};    // steady seconds: the scheduler's last message
  std::atomic<double> idle_at{0};  // the end of the last step (a step's length is not silence)
  std::atomic<bool> busy{false};   // a step runs: the scheduler's messages wait in the mailbox
  std::atomic<bool> lost{false};
};

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

  // With a step log, one line per executed step: its shape, `time_s` from the plan
  // received to the result handed to the I/O actor, and the control loop around it:
  // `gap_s` from this worker's previous result sent to this plan received, `carried` =
  // sequences of this step that were in the previous one (then work was waiting, and the
  // gap is the loop's latency, not idleness). One write per line, so the workers of one
  // process may share the file. See docs/SIM.md.
  void log_step(const step_plan& plan, double received, double sent) {
    int64_t tokens = 0, context = 0, carried = 0;
    for (const auto& w : plan.seqs) {
      tokens += static_cast<int64_t>(w.tokens.size());
      context += w.start_pos;
      if (std::binary_search(prev_seqs.begin(), prev_seqs.end(), w.seq_id)) ++carried;
    }
    const double gap = last_sent > 0 ? received - last_sent : -1.0;
    char line[224];
    const int n = std::snprintf(line, sizeof line,
                                "{\"tokens\":%lld,\"context\":%lld,\"seqs\":%zu,\"time_s\":%.9f,\"gap_s\":%.9f,"
                                "\"carried\":%lld}\n",
                                (long long)tokens, (long long)context, plan.seqs.size(), sent - received, gap,
                                (long long)carried);
    std::fwrite(line, 1, static_cast<size_t>(n), step_log.get());
    std::fflush(step_log.get());
  }

  // Runs a plan that arrived at `received` (steady seconds) and sends its result.
  void run(step_plan& plan, double received) {
    link->busy = true;
    auto out = core.step(plan);
    link->idle_at = now_s();
    link->busy = false;
    const bool ok = out.error.empty();
    send(std::move(out));
    if (!step_log) return;
    const double sent = now_s();
    if (ok) log_step(plan, received, sent);
    last_sent = sent;
    prev_seqs.clear();
    for (const auto& w : plan.seqs) prev_seqs.push_back(w.seq_id);
    std::sort(prev_seqs.begin(), prev_seqs.end());
  }
  double last_sent = 0;             // steady seconds; 0 before the first step
  std::vector<uint64_t> prev_seqs;  // sorted seq ids of the previous step
  io_handle io;
  uint32_t socket = 0;
  bool reregistering = false;                  // registration re-sent; further `registration` errors are echoes
  std::shared_ptr<std::atomic<bool>> refused;  // set when the scheduler refused this worker
  std::shared_ptr<scheduler_link> link = std::make_shared<scheduler_link>();

  void send(proto::control_message m) { io.send(socket, {}, codec::encode(m)); }
};

// A worker's heartbeats come from an actor of their own on CAF's pool: the worker actor runs
// each step to its end (a long prefill on a large model takes seconds), and a heartbeat that
// waited for it would get a busy worker removed as dead. The heartbeats say the process and
// its connection live; they stop when the worker actor ends. The scheduler answers each, and
// this actor also notices when those answers stop (logged once: the scheduler is gone).
caf::behavior heartbeat_actor(caf::event_based_actor* self, caf::actor worker, io_handle io, uint32_t socket,
                              double interval_s, double timeout_s, std::shared_ptr<scheduler_link> link) {
  self->monitor(worker);
  self->set_down_handler([self](caf::down_msg&) { self->quit(); });
  auto sent = std::make_shared<uint64_t>(0);
  link->heard = link->idle_at = now_s();
  self->delayed_send(self, ms(interval_s), tick_atom::value);
  return {
      [self, io, socket, interval_s, timeout_s, sent, link](tick_atom) {
        io.send(socket, {}, codec::encode(proto::control_message{proto::heartbeat{++*sent}}));
        const double silent = now_s() - std::max(link->heard.load(), link->idle_at.load());
        if (!link->busy && silent > timeout_s && !link->lost.exchange(true))
          spdlog::warn(
              "worker: nothing heard from the scheduler for {:.1f} s: it is down or unreachable; waiting for "
              "it (this worker registers again when it answers)",
              silent);
        self->delayed_send(self, ms(interval_s), tick_atom::value);
      },
  };
}

caf::behavior worker_actor(caf::event_based_actor* self, std::shared_ptr<worker_state> st) {
  return {
      [self, st](sockets_atom, uint32_t socket, uint32_t) {
        st->socket = socket;
        st->send(st->core.registration());
        self->spawn(heartbeat_actor, caf::actor_cast<caf::actor>(self), st->io, socket, st->opts.heartbeat_s,
                    st->opts.scheduler_timeout_s, st->link);
      },
      [self, st](io_recv_atom, uint32_t, std::string&, std::string& bytes) {
        const double received = now_s();
        proto::control_message msg;
        try {
          msg = codec::decode_control(bytes);
        } catch (const error& e) {
          spdlog::error("worker: unusable message from the scheduler: {}", e.what());
          return;
        }
        st->link->heard = received;
        if (st->link->lost.exchange(false)) spdlog::info("worker: the scheduler answers again");
        if (auto* plan = std::get_if<step_plan>(&msg)) {
          st->run(*plan, received);
        } else if (auto* r = std::get_if<proto::registered>(&msg)) {
          st->reregistering = false;
          spdlog::info("worker: registered as replica {}", r->replica_id);
        } else if (auto* s = std::get_if<proto::shutdown>(&msg)) {
          spdlog::info("worker: shutdown ({}) after {} steps", s->reason, st->core.steps());
          self->quit();
        } else if (auto* e = std::get_if<proto::peer_error>(&msg)) {
          if (e->error.field == "registration") {
            // The scheduler lost us (restart, timeout). Every heartbeat sent before it has our
            // registration answers with this error: register once, not once per heartbeat.
            if (!st->reregistering) {
              spdlog::info(
                  "worker: the scheduler does not know this worker (it restarted or timed us out); "
                  "registering again");
              st->core.forget_sequences();  // a new replica: every sequence comes in full
              st->send(st->core.registration());
            }
            st->reregistering = true;
          } else {
            spdlog::error("worker: the scheduler refused us: {} ({})", e->error.message, e->error.field);
            st->refused->store(true);
            self->quit(caf::exit_reason::user_shutdown);
          }
        }
      },
      [st](drain_atom, double deadline_s) {
        spdlog::info("worker: draining: asked the scheduler to finish our sequences and send shutdown{}",
                     deadline_s > 0 ? fmt::format(" (deadline {:.1f} s)", deadline_s) : std::string());
        st->send(proto::drain{deadline_s});
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
                              std::vector<served_model> models, const http_front* http) {
  // The routing id is the gateway id plus a random nonce: ZeroMQ silently drops a second
  // connection with a routing id already in use, so two gateways with one id would leave
  // the second dead without a word. With the nonce both connect, and the scheduler refuses
  // the second by its gateway id with an error both sides log (scheduler_core.h).
  if (opts.gateway_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    opts.gateway_id = std::string(host) + "-" + std::to_string(getpid());
  }
  std::random_device rd;
  const uint64_t nonce = (uint64_t{rd()} << 32) | rd();
  const std::string routing_id = fmt::format("{}#{:016x}", opts.gateway_id, nonce);
  const std::string gateway_id = opts.gateway_id;
  auto st = std::make_shared<gateway_state>();
  st->limits = opts.limits;
  st->heartbeat_s = opts.heartbeat_s;
  st->core = std::make_unique<gateway_core>(std::move(opts), std::move(models));
  st->io = io_.handle();
  if (http && !http->options.listen.empty()) {
    // Bound first, so that an address in use fails before anything is spawned; it accepts
    // only once the actor below knows its sockets (start(), further down), and its
    // callbacks reach the actor through `to`, set before then.
    auto to = std::make_shared<caf::actor>();
    auto health_mu = st->health_mu;
    auto health = st->health;
    st->http = std::make_shared<http_server>(
        http->options, http->models, http->render,
        [to](const std::string& peer, std::string frame) {
          caf::anon_send(*to, io_recv_atom::value, gateway_state::http_socket, peer, std::move(frame));
        },
        [to](const std::string& peer) { caf::anon_send(*to, io_peer_atom::value, gateway_state::http_socket, peer); },
        [health_mu, health] {
          std::lock_guard lk(*health_mu);
          return *health;
        });
    gateway_ = rt_.system().spawn(gateway_actor, st);
    *to = gateway_;
    http_ = st->http;
  } else {
    gateway_ = rt_.system().spawn(gateway_actor, st);
  }
  // The scheduler socket first: the actor knows both sockets before any client can reach it.
  auto to_scheduler = io_.open(socket_role::dealer_connect, scheduler_address, gateway_, routing_id);
  auto clients = io_.open(socket_role::router_bind, listen, gateway_);
  caf::anon_send(gateway_, sockets_atom::value, clients.socket, to_scheduler.socket);
  spdlog::info("gateway: {} listening for clients on {}, scheduler at {}", gateway_id, clients.endpoint,
               scheduler_address);
  if (http_) {
    http_->start();
    spdlog::info("gateway: {} serving the OpenAI-compatible HTTP API on http://{}", gateway_id, http_->endpoint());
  }
  return clients.endpoint;
}

std::string node::http_endpoint() const { return http_ ? http_->endpoint() : std::string(); }

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

void node::drain_workers(double deadline_s) {
  for (auto& w : workers_) caf::anon_send(w, drain_atom::value, deadline_s);
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
  if (http_) http_->stop();  // no new requests; the gateway's replies to them are dropped
  for (auto* a : {&gateway_, &scheduler_})
    if (*a) self->send_exit(*a, caf::exit_reason::user_shutdown);
  for (auto& w : workers_) self->send_exit(w, caf::exit_reason::user_shutdown);
  for (auto* a : {&gateway_, &scheduler_})
    if (*a) self->wait_for(*a);
  for (auto& w : workers_) self->wait_for(w);
  io_.stop();
  http_.reset();
  gateway_ = scheduler_ = nullptr;
  workers_.clear();
}

}  // namespace troupe::actors
