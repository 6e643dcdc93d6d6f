#include "actors/actor_system.h"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

namespace troupe::actors {

process_runtime::process_runtime(const actor_system_options& opts)
    : cfg_(std::make_unique<caf::actor_system_config>()) {
  cfg_->set("scheduler.max-threads", opts.worker_threads);
  // Work sharing wakes an idle thread through a condition variable the moment a message
  // arrives; CAF's default work stealing lets idle threads sleep in polling intervals, which
  // added tens to hundreds of microseconds to every hop between components.
  cfg_->set("scheduler.policy", caf::atom("sharing"));
  cfg_->set("logger.console-verbosity", caf::atom("quiet"));  // Troupe logs through spdlog
  sys_ = std::make_unique<caf::actor_system>(*cfg_);
}

process_runtime::~process_runtime() {
  sys_.reset();  // waits for all actors to finish
}

caf::actor_system& process_runtime::system() { return *sys_; }

}  // namespace troupe::actors
