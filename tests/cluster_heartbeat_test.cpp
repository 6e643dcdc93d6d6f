// A worker busy with one long step (a big prefill takes seconds on a CPU) is not a dead
// worker: its heartbeats go on while the step runs, so the scheduler keeps it and the job
// ends with its tokens instead of being moved or failed.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "actors/client.h"
#include "actors/components.h"
#include "src/model/tokenizer.h"
#include "src/cluster/worker_core.h"

using namespace troupe;

namespace {

// Every step takes `delay` before answering like fixed_token_backend.
class slow_backend : public fixed_token_backend {
 public:
  explicit slow_backend(std::chrono::milliseconds delay) : fixed_token_backend(100), delay_(delay) {}
  step_result step(const step_plan& plan) override {
    std::this_thread::sleep_for(delay_);
    return fixed_token_backend::step(plan);
  }

 private:
  std::chrono::milliseconds delay_;
};

}  // namespace

TEST(ClusterHeartbeat, AStepLongerThanTheHeartbeatTimeoutKeepsTheWorker) {
  const tokenizer tok(byte_vocabulary());
  actors::node n({.worker_threads = 2}, {});
  scheduler_options so;
  so.heartbeat_timeout_s = 0.4;  // each step below takes three times that
  n.add_scheduler("inproc://hb-scheduler", so);
  actors::worker_options wo;
  wo.identity = {"hb", "slow", 8};
  wo.heartbeat_s = 0.05;
  n.add_worker("inproc://hb-scheduler", "slow-worker", std::make_unique<slow_backend>(std::chrono::milliseconds(1200)),
               wo);
  const std::string gw = n.add_gateway("tcp://127.0.0.1:*", "inproc://hb-scheduler", {}, {{"slow", &tok, 0}});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the worker registers

  proto::job j;
  j.client_request_id = "long-steps";
  j.prompt_text = "hello";
  j.sampling.max_tokens = 3;
  j.sampling.ignore_eos = true;
  actors::gateway_client c(gw);
  const auto r = actors::run_job(c, j, 30000);
  ASSERT_TRUE(r.ok) << "the job failed: " << r.error.message;
  EXPECT_EQ(r.ids, (std::vector<int32_t>{100, 100, 100}));
  EXPECT_FALSE(r.index_gap);
}
