// The cluster end to end: real troupe processes on loopback TCP with the stories260K model.
// Every greedy answer must equal `troupe generate` on the same prompt, token for token, also
// when a worker is killed mid-stream (its sequences resume on the other worker).
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "cluster_jobs.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct separate_processes {
  std::filesystem::path dir;
  int sched_port = free_port(), gateway_port = free_port();
  std::unique_ptr<child_process> scheduler, gateway;
  std::vector<std::unique_ptr<child_process>> workers;

  explicit separate_processes(const std::string& name, int max_batch, std::vector<std::string> scheduler_flags = {})
      : dir(temp_dir(name)) {
    std::vector<std::string> args = {"scheduler", "--listen", tcp(sched_port), "--heartbeat-timeout", "1"};
    args.insert(args.end(), scheduler_flags.begin(), scheduler_flags.end());
    scheduler = std::make_unique<child_process>(args, dir / "scheduler.log");
    EXPECT_TRUE(scheduler->wait_for_log("ready on")) << scheduler->log();
    for (int w = 0; w < 2; ++w)
      workers.push_back(std::make_unique<child_process>(
          std::vector<std::string>{"worker", "--model", model_path(), "--scheduler", tcp(sched_port), "--name",
                                   "w" + std::to_string(w), "--max-batch", std::to_string(max_batch)},
          dir / ("worker" + std::to_string(w) + ".log")));
    gateway =
        std::make_unique<child_process>(std::vector<std::string>{"gateway", "--model", model_path(), "--listen",
                                                                 tcp(gateway_port), "--scheduler", tcp(sched_port)},
                                        dir / "gateway.log");
    EXPECT_TRUE(gateway->wait_for_log("ready on")) << gateway->log();
    EXPECT_TRUE(scheduler->wait_for_log("registered as replica 2")) << scheduler->log();
  }
  ~separate_processes() { std::filesystem::remove_all(dir); }
};

}  // namespace

TEST(ClusterIntegration, ServeAndSubmitMatchGenerate) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("serve");
  const int port = free_port();
  child_process serve({"serve", "--model", model_path(), "--listen", tcp(port), "--workers", "2"}, dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();

  auto json = run_command(troupe_bin() + " submit --json --gateway " + tcp(port) +
                          " --prompt 'Once upon a time' --max-tokens 64 2>/dev/null");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  auto got = nlohmann::json::parse(json.out);
  EXPECT_EQ(got.at("ids").get<std::vector<int32_t>>(), generate_ids("Once upon a time", 64));
  EXPECT_EQ(got.at("finish_reason"), "length");

  auto text =
      run_command(troupe_bin() + " submit --gateway " + tcp(port) + " --prompt 'Once upon a time' --max-tokens 64");
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("Once upon a time" + got.at("text").get<std::string>()), std::string::npos) << text.out;

  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  std::filesystem::remove_all(dir);
}

TEST(ClusterIntegration, GatewaySchedulerAndTwoWorkersAsProcesses) {
  TROUPE_REQUIRE_MODELS();
  separate_processes c("procs", 64);
  auto results = run_clients(tcp(c.gateway_port), 8, 48);
  expect_like_generate(results, 48);
  for (auto* p : {c.gateway.get(), c.workers[0].get(), c.workers[1].get(), c.scheduler.get()}) {
    p->signal(SIGTERM);
    EXPECT_EQ(p->wait(20), 0) << p->log();
  }
}

TEST(ClusterIntegration, WorkerKilledMidStreamEveryJobStillMatchesGenerate) {
  TROUPE_REQUIRE_MODELS();
  separate_processes c("kill", 4);  // small batches: the jobs take a while
  std::atomic<int> chunks{0};
  std::thread killer([&] {
    while (chunks < 24) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    c.workers[0]->signal(SIGKILL);
  });
  auto results = run_clients(tcp(c.gateway_port), 16, 100, &chunks);
  killer.join();
  expect_like_generate(results, 100);
  EXPECT_TRUE(c.scheduler->wait_for_log("(w0) removed")) << c.scheduler->log();
}

// An operator restarts a worker: SIGTERM makes it ask the scheduler to drain it. Its jobs
// finish there, jobs arriving meanwhile go to the other worker, then the scheduler sends
// shutdown and the worker exits 0. Checked on the scheduler's decision trace: after the
// drain_replica line, the drained replica admits nothing.
TEST(ClusterIntegration, SigtermDrainsAWorkerItsJobsFinishAndNewOnesGoElsewhere) {
  TROUPE_REQUIRE_MODELS();
  auto trace_dir = temp_dir("drain_trace");
  const auto trace = trace_dir / "policy.jsonl";
  separate_processes c("drain", 4, {"--trace", trace.string()});
  std::atomic<int> chunks{0};
  std::vector<actors::job_result> during;
  std::thread operator_([&] {
    while (chunks < 24) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    c.workers[0]->signal(SIGTERM);
    EXPECT_TRUE(c.scheduler->wait_for_log("(w0) draining")) << c.scheduler->log();
    EXPECT_EQ(c.scheduler->log().find("draining: 0 sequences"), std::string::npos)  // it had jobs to finish
        << c.scheduler->log();
    during = run_clients(tcp(c.gateway_port), 4, 32);  // while w0 finishes its jobs
  });
  auto results = run_clients(tcp(c.gateway_port), 8, 100, &chunks);
  operator_.join();
  expect_like_generate(results, 100);
  expect_like_generate(during, 32);
  EXPECT_EQ(c.workers[0]->wait(30), 0) << c.workers[0]->log();
  EXPECT_NE(c.workers[0]->log().find("shutdown (drained"), std::string::npos) << c.workers[0]->log();
  EXPECT_TRUE(c.scheduler->wait_for_log("(w0) drained")) << c.scheduler->log();
  auto after = run_clients(tcp(c.gateway_port), 2, 16);  // one worker left
  expect_like_generate(after, 16);
  for (auto* p : {c.gateway.get(), c.workers[1].get(), c.scheduler.get()}) {
    p->signal(SIGTERM);
    EXPECT_EQ(p->wait(20), 0) << p->log();
  }

  std::ifstream in(trace);
  std::string line;
  int64_t drained = -1;
  size_t admitted_elsewhere = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("ev") == "drain_replica") drained = j.at("replica");
    if (j.at("ev") != "step" || drained < 0) continue;
    const size_t admitted = j.at("admitted").size();
    if (j.at("replica") == drained)
      EXPECT_EQ(admitted, 0u) << "the draining replica admitted a job: " << line;
    else
      admitted_elsewhere += admitted;
  }
  EXPECT_GE(drained, 0) << "no drain_replica line in the trace";
  EXPECT_GE(admitted_elsewhere, 4u + 2u);
  std::filesystem::remove_all(trace_dir);
}

TEST(ClusterIntegration, SixtyFourConcurrentClientsMatchGenerate) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("many");
  const int port = free_port();
  child_process serve({"serve", "--model", model_path(), "--listen", tcp(port), "--workers", "2"}, dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  auto results = run_clients(tcp(port), 64, 32);
  expect_like_generate(results, 32);
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  std::filesystem::remove_all(dir);
}

TEST(ClusterIntegration, RolesReadTheirFlagsFromAConfigFile) {
  auto dir = temp_dir("config");
  const int port = free_port();
  {
    std::ofstream f(dir / "scheduler.toml");
    f << "# troupe scheduler\nlisten = \"" << tcp(port) << "\"\nheartbeat-timeout = 3.5\n";
  }
  child_process s({"scheduler", "--config", (dir / "scheduler.toml").string()}, dir / "scheduler.log");
  EXPECT_TRUE(s.wait_for_log("ready on " + tcp(port))) << s.log();
  s.signal(SIGTERM);
  EXPECT_EQ(s.wait(20), 0) << s.log();
  std::filesystem::remove_all(dir);
}

TEST(ClusterIntegration, SubmitFileRunsJobsConcurrentlyAndPrintsOneResultPerLineInOrder) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("file");
  const int port = free_port();
  child_process serve({"serve", "--model", model_path(), "--listen", tcp(port), "--workers", "2"}, dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  {
    std::ofstream f(dir / "prompts.jsonl");
    for (int i = 0; i < 6; ++i)
      f << nlohmann::json{{"id", "p" + std::to_string(i)}, {"prompt", prompt_number(i)}, {"max_tokens", 24}}.dump()
        << "\n";
    f << nlohmann::json{{"id", "bad"}, {"prompt", "x"}, {"temperature", -1}}.dump() << "\n";
  }
  auto r = run_command(troupe_bin() + " submit --gateway " + tcp(port) + " --concurrency 3 --file " +
                       (dir / "prompts.jsonl").string());
  EXPECT_EQ(r.exit_code, 1) << r.out;  // one job failed
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    if (n < 6) {
      EXPECT_EQ(j.at("id"), "p" + std::to_string(n));
      EXPECT_EQ(j.at("ids").get<std::vector<int32_t>>(), generate_ids(prompt_number(n), 24)) << line;
      EXPECT_TRUE(j.at("timings").contains("ttft_ms"));
    } else {
      EXPECT_EQ(j.at("id"), "bad");
      EXPECT_EQ(j.at("error").at("field"), "temperature");
    }
    ++n;
  }
  EXPECT_EQ(n, 7);
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  std::filesystem::remove_all(dir);
}
