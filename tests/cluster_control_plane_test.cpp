// The control plane as an operator meets it, with real troupe processes on loopback TCP and
// the stories260K model:
// - limits negotiated: `troupe scheduler --max-step-tokens 2048` with a worker of a smaller
//   budget and six long prompts (the 512 and 200 tokens; 256 and ~100 here, the
//   model's context being 128) used to take the replica down and fail all six; the worker now
//   reports its budget and every job gets the answer `troupe generate` gives;
// - the scheduler's death noticed: SIGKILL or SIGSTOP it mid-run and every job in flight ends
//   with a `disconnected` error naming the scheduler (within the gateway's 2 s
//   --scheduler-timeout) instead of hanging, new jobs get `overloaded` at once, and a
//   scheduler that comes back gets the worker and the gateway back by themselves.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "cluster_jobs.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct cluster {
  std::filesystem::path dir;
  int sched_port = free_port();
  int gateway_port = free_port();
  std::vector<std::string> scheduler_flags;
  std::unique_ptr<child_process> scheduler, worker, gateway;
  int schedulers_started = 0;

  cluster(const std::string& name, std::vector<std::string> sched_flags, std::vector<std::string> worker_flags)
      : dir(temp_dir(name)), scheduler_flags(std::move(sched_flags)) {
    start_scheduler();
    std::vector<std::string> w = {"worker", "--model", model_path(), "--scheduler", tcp(sched_port), "--name", "w0"};
    w.insert(w.end(), worker_flags.begin(), worker_flags.end());
    worker = std::make_unique<child_process>(w, dir / "worker.log");
    EXPECT_TRUE(scheduler->wait_for_log("registered as replica 1")) << scheduler->log() << worker->log();
    gateway = std::make_unique<child_process>(
        std::vector<std::string>{"gateway", "--model", model_path(), "--listen", tcp(gateway_port), "--scheduler",
                                 tcp(sched_port), "--gateway-id", "front"},
        dir / "gateway.log");
    EXPECT_TRUE(gateway->wait_for_log("ready on")) << gateway->log();
  }
  void start_scheduler() {
    std::vector<std::string> args = {"scheduler", "--listen", tcp(sched_port)};
    args.insert(args.end(), scheduler_flags.begin(), scheduler_flags.end());
    scheduler =
        std::make_unique<child_process>(args, dir / ("scheduler" + std::to_string(++schedulers_started) + ".log"));
    EXPECT_TRUE(scheduler->wait_for_log("ready on")) << scheduler->log();
  }
  std::string logs() const { return scheduler->log() + worker->log() + gateway->log(); }
  ~cluster() { std::filesystem::remove_all(dir); }
};

// One job on its own client; errors (a client timeout too) land in the result.
actors::job_result run_one(int port, const proto::job& j, int timeout_ms = 30000) {
  try {
    actors::gateway_client c(tcp(port));
    return actors::run_job(c, j, timeout_ms);
  } catch (const std::exception& e) {
    actors::job_result r;
    r.error.message = std::string("client: ") + e.what();
    return r;
  }
}

// Kills or stops the scheduler while 16 jobs stream; every one that had not finished must
// end with the gateway's error naming the scheduler, then new jobs get overloaded at once.
void lose_the_scheduler_mid_run(cluster& c, int sig) {
  constexpr int jobs = 16, tokens = 120;  // stories260K's context is 128
  std::atomic<int> chunks{0};
  std::vector<actors::job_result> results(jobs);
  std::vector<std::thread> clients;
  std::vector<std::chrono::steady_clock::time_point> ended(jobs);
  for (int i = 0; i < jobs; ++i)
    clients.emplace_back([&, i] {
      try {
        actors::gateway_client client(tcp(c.gateway_port));
        results[i] = actors::run_job(client, greedy_job(prompt_number(i), tokens, "j" + std::to_string(i)), 30000,
                                     [&](const proto::token_chunk&) { ++chunks; });
      } catch (const std::exception& e) {
        results[i].error.message = std::string("client: ") + e.what();
      }
      ended[i] = std::chrono::steady_clock::now();
    });
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (chunks < 32 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GE(chunks, 32) << "the jobs never streamed\n" << c.logs();
  const auto lost_at = std::chrono::steady_clock::now();
  c.scheduler->signal(sig);
  for (auto& t : clients) t.join();

  int cut = 0;
  double slowest = 0;
  for (int i = 0; i < jobs; ++i) {
    if (results[i].ok) continue;  // finished before the scheduler went
    ++cut;
    EXPECT_EQ(results[i].error.kind, error_kind::disconnected) << "job " << i << ": " << results[i].error.message;
    EXPECT_EQ(results[i].error.field, "scheduler") << "job " << i << ": " << results[i].error.message;
    EXPECT_NE(results[i].error.message.find("scheduler stopped answering"), std::string::npos)
        << "job " << i << ": " << results[i].error.message;
    slowest = std::max(slowest, std::chrono::duration<double>(ended[i] - lost_at).count());
  }
  EXPECT_GT(cut, 0) << "every job finished before the scheduler went: the loss was not mid-run";
  // Informational (timing is not asserted): the gateway's --scheduler-timeout is 2 s.
  std::printf("%d of %d jobs ended with the scheduler's loss, the last %.2f s after it\n", cut, jobs, slowest);
  std::fflush(stdout);  // before the next child process inherits the buffer
  EXPECT_TRUE(c.gateway->wait_for_log("lost the scheduler")) << c.gateway->log();

  const auto refused = run_one(c.gateway_port, greedy_job("Once upon a time", 8, "while-gone"), 10000);
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.error.kind, error_kind::overloaded) << refused.error.message;
  EXPECT_EQ(refused.error.field, "scheduler") << refused.error.message;
}

// After the scheduler is back, the worker and the gateway find it by themselves.
void expect_jobs_flow_again(cluster& c) {
  EXPECT_TRUE(c.gateway->wait_for_log("the scheduler answers again")) << c.gateway->log();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  actors::job_result r;
  // The worker may register a moment after the gateway is back: a job before that waits in
  // the scheduler's queue, so one attempt suffices unless it raced the gateway's heartbeat.
  do {
    r = run_one(c.gateway_port, greedy_job("Once upon a time", 24, "after"), 20000);
  } while (!r.ok && r.error.kind == error_kind::overloaded && std::chrono::steady_clock::now() < give_up);
  ASSERT_TRUE(r.ok) << r.error.message << "\n" << c.logs();
  EXPECT_EQ(r.ids, generate_ids("Once upon a time", 24));
}

}  // namespace

TEST(ClusterControlPlane, ASchedulerStepBudgetAboveTheWorkersIsPlannedWithinTheWorkers) {
  TROUPE_REQUIRE_MODELS();
  // The worker's budget is a quarter of the default's, so that any three of the prompts below
  // overflow it however the six arrive.
  cluster c("limits", {"--max-step-tokens", "2048"}, {"--max-batch-tokens", "256"});
  EXPECT_TRUE(c.scheduler->wait_for_log("steps of 256 tokens: the worker's own, below the policy's 2048"))
      << c.scheduler->log();
  std::string prompt;
  // Six prompts of ~100 tokens (stories260K's context is 128): any three are more than the
  // worker's 256, and all fit one step of the scheduler's 2048.
  for (int i = 0; i < 7; ++i) prompt += "Once upon a time there was a little girl named Lily. ";
  constexpr int jobs = 6, tokens = 16;
  std::vector<actors::job_result> results(jobs);
  std::vector<std::thread> clients;
  for (int i = 0; i < jobs; ++i)
    clients.emplace_back([&, i] {
      results[i] = run_one(c.gateway_port, greedy_job(prompt + std::to_string(i), tokens, "long" + std::to_string(i)));
    });
  for (auto& t : clients) t.join();
  uint32_t prompt_tokens = 0;
  for (int i = 0; i < jobs; ++i) {
    ASSERT_TRUE(results[i].ok) << "job " << i << ": " << results[i].error.message << "\n" << c.logs();
    prompt_tokens += results[i].done.prompt_tokens;
    EXPECT_EQ(results[i].ids, generate_ids(prompt + std::to_string(i), tokens)) << "job " << i;
  }
  EXPECT_GT(prompt_tokens, 6u * 256 / 3) << "the prompts would fit the worker's steps anyway";
  EXPECT_EQ(c.scheduler->log().find("removed"), std::string::npos) << c.scheduler->log();
  EXPECT_EQ(c.scheduler->log().find("rejected"), std::string::npos) << c.scheduler->log();
}

TEST(ClusterControlPlane, ASchedulerKilledMidRunEndsEveryJobWithAnErrorAndARestartedOneIsFoundAgain) {
  TROUPE_REQUIRE_MODELS();
  cluster c("sched_kill", {}, {"--max-batch", "4"});
  lose_the_scheduler_mid_run(c, SIGKILL);
  c.scheduler->wait(5);
  EXPECT_TRUE(c.worker->wait_for_log("nothing heard from the scheduler")) << c.worker->log();
  c.start_scheduler();  // the same address
  EXPECT_TRUE(c.scheduler->wait_for_log("registered as replica 1")) << c.scheduler->log() << c.worker->log();
  EXPECT_TRUE(c.worker->wait_for_log("registering again")) << c.worker->log();
  expect_jobs_flow_again(c);
}

TEST(ClusterControlPlane, AStoppedSchedulerEndsEveryJobWithAnErrorAndJobsFlowWhenItContinues) {
  TROUPE_REQUIRE_MODELS();
  cluster c("sched_stop", {}, {"--max-batch", "4"});
  lose_the_scheduler_mid_run(c, SIGSTOP);
  c.scheduler->signal(SIGCONT);
  expect_jobs_flow_again(c);
}
