// A tensor-parallel worker group in the cluster. Rank 0, the leader, is the replica the
// scheduler sees: it registers, receives step plans and returns results as any worker does.
// It relays every plan to the other ranks (the followers) by a broadcast on the group's
// communicator, then all ranks run it on their shards and meet in the all-reduces; only the
// leader's result goes back. The followers hold no connection to the scheduler. Plans reach
// the leader with async-scheduling placeholders already resolved (worker_core does it before
// any backend sees a plan). The leader relays plans as they came, diffs included
// (seq_work::diff), and every rank expands them with its own seq_cache: each rank's cache
// sees the same plans in the same order, so they hold the same state.
//
// While the scheduler sends nothing, the leader broadcasts a keepalive every `keepalive`
// and every rank joins a barrier after it: a follower waiting for the next plan tells an
// idle leader from a dead one (the communicator's timeout), and an idle leader notices a
// follower that died. A rank that dies makes the others' next collective fail: the
// leader's step then throws troupe::error(disconnected), the scheduler takes the replica out
// of service and re-plans its requests elsewhere, and the leader reports the group broken.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "src/cluster/seq_cache.h"
#include "troupe/communicator.h"
#include "troupe/model.h"

namespace troupe::comm {

class tp_group_leader : public worker_backend {
 public:
  // `on_broken(reason)` is called once, from the thread that found the group broken.
  tp_group_leader(std::unique_ptr<worker_backend> local, communicator& comm, std::chrono::milliseconds keepalive,
                  std::function<void(const std::string&)> on_broken = {});
  ~tp_group_leader() override;  // tells the followers to stop

  step_result step(const step_plan& plan) override;
  int64_t kv_blocks() const override { return local_->kv_blocks(); }
  int32_t block_size() const override { return local_->block_size(); }
  // Every rank sizes its host pool from the same flags; each swaps its own shard.
  int64_t host_blocks() const override { return local_->host_blocks(); }
  int64_t max_step_tokens() const override { return local_->max_step_tokens(); }
  std::string describe() const override;
  void copy_block(int32_t src, int32_t dst) override;
  bool expands_plan_diffs() const override { return true; }  // relays diffs; each rank expands

 private:
  enum class kind : uint32_t { keepalive = 0, plan = 1, copy_block = 2, stop = 3 };
  void send(kind k, const std::string& payload);  // caller holds mu_
  void broken(const std::string& why);
  void keepalive_loop(std::chrono::milliseconds every);

  std::unique_ptr<worker_backend> local_;
  seq_cache cache_;  // this rank's; every follower keeps its own
  communicator& comm_;
  std::function<void(const std::string&)> on_broken_;
  std::mutex mu_;  // one collective at a time: steps and keepalives
  std::condition_variable cv_;
  bool stopping_ = false;
  std::atomic<bool> broken_{false};
  std::chrono::steady_clock::time_point last_sent_;
  std::thread keepalive_;
};

// Runs a follower rank: receives what the leader relays and executes it on `local`, until
// the leader says stop (returns "stopped") or the group breaks (returns the reason).
std::string run_tp_follower(worker_backend& local, communicator& comm);

}  // namespace troupe::comm
