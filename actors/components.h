// The component actors (gateway, scheduler, worker), each a thin shell over its src/ core,
// and `node`: the actors of one process wired to its I/O actor. `troupe serve` puts every
// role in one node over inproc://; `troupe gateway|scheduler|worker` put one role each in a
// node over tcp://. Same code, different addresses.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>

#include "actors/actor_system.h"
#include "actors/io_bridge.h"
#include "src/api/openai.h"
#include "src/cluster/gateway_core.h"
#include "src/cluster/scheduler_core.h"
#include "src/cluster/worker_core.h"

CAF_BEGIN_TYPE_ID_BLOCK(troupe_components, caf::first_custom_type_id + 50)
CAF_ADD_ATOM(troupe_components, troupe::actors, sockets_atom, "sockets")
CAF_ADD_ATOM(troupe_components, troupe::actors, tick_atom, "tick")
CAF_ADD_ATOM(troupe_components, troupe::actors, drain_atom, "drain")
CAF_ADD_ATOM(troupe_components, troupe::actors, deadline_atom, "deadline")
CAF_ADD_ATOM(troupe_components, troupe::actors, stop_atom, "stop")
CAF_END_TYPE_ID_BLOCK(troupe_components)

namespace troupe::actors {

class http_server;
struct http_options;

// The gateway's HTTP front door (actors/http_server.h): where it listens and what it serves.
struct http_front {
  const http_options& options;
  std::vector<api::api_model> models;
  api::chat_renderer render;
};

struct worker_options {
  worker_identity identity;
  double heartbeat_s = 0.2;
  // Nothing heard from the scheduler this long while idle: logged as lost (once) until it
  // answers again; the scheduler's answer to a heartbeat then asks for a new registration.
  double scheduler_timeout_s = 2.0;
  // Appends one line per executed step (tokens, context, seqs, time_s, gap_s, carried: the
  // step profile format of docs/SIM.md) to this file; empty: none. Fits the simulator's cost
  // model and control-loop latency to the steps this worker really ran.
  std::string step_log;
};

// One process's actors. Add roles, then wait; destroying it stops everything.
class node {
 public:
  node(const actor_system_options& sys, const transport_options& transport);
  ~node();

  // Binds the scheduler's ROUTER at `address` (components connect there). Returns the
  // bound endpoint (a tcp port 0 resolved).
  std::string add_scheduler(const std::string& address, scheduler_options opts);
  // Connects to the scheduler at `scheduler_address` and binds the client ROUTER at
  // `listen`. Returns the bound client endpoint.
  // With `http` (its listen address not empty), the OpenAI-compatible HTTP API too.
  std::string add_gateway(const std::string& listen, const std::string& scheduler_address, gateway_options opts,
                          std::vector<served_model> models, const http_front* http = nullptr);
  // The HTTP API's bound HOST:PORT, or "" without one.
  std::string http_endpoint() const;
  // A worker on its own thread, connected to the scheduler; `name` is its routing id.
  void add_worker(const std::string& scheduler_address, const std::string& name,
                  std::unique_ptr<worker_backend> backend, worker_options opts);

  // Shutdown: the gateway stops accepting and waits for its jobs, at most `deadline_s`
  // seconds, then cancels the rest. Returns how many were cancelled. No-op without a gateway.
  size_t drain(double deadline_s);
  // Each worker of this node asks the scheduler to drain it: no new work, its running
  // sequences finish there (or move elsewhere after `deadline_s`, 0 = none), then the
  // scheduler sends shutdown and the worker exits (see wait_for_workers).
  void drain_workers(double deadline_s);
  // Tells the workers connected to this node's scheduler to exit, then stops every actor.
  void stop();
  // Blocks until a worker of this node exits (told to shut down, or a fatal error) or
  // `timeout_s` passes; true when one exited.
  bool wait_for_workers(double timeout_s);
  bool has_workers() const { return !workers_.empty(); }
  // True when the scheduler refused a worker of this node (e.g. another protocol version).
  bool worker_refused() const { return worker_refused_->load(); }

 private:
  process_runtime rt_;
  io_bridge io_;
  caf::actor scheduler_, gateway_;
  std::shared_ptr<http_server> http_;
  std::vector<caf::actor> workers_;
  std::shared_ptr<std::atomic<bool>> worker_refused_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace troupe::actors
