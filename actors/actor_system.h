// The CAF actor system of one Troupe process: every component (gateway, scheduler,
// worker, I/O bridge) is an actor in it, with its own mailbox and thread of control.
#pragma once
#include <cstddef>
#include <memory>

namespace caf {
class actor_system;
class actor_system_config;
}  // namespace caf

namespace troupe::actors {

struct actor_system_options {
  size_t worker_threads = 2;  // CAF scheduler threads
};

// Owns an actor_system configured from options; destroying it waits for all actors.
class process_runtime {
 public:
  explicit process_runtime(const actor_system_options& opts);
  ~process_runtime();
  process_runtime(const process_runtime&) = delete;
  process_runtime& operator=(const process_runtime&) = delete;
  caf::actor_system& system();

 private:
  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> sys_;
};

}  // namespace troupe::actors
