// troupe bench against a real troupe serve: every request of the workload ends, the
// summary and per-request records say so, and the recorded trace replays in troupe sim.
// And --profile writes a step profile that troupe sim fits.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cluster_support.h"

using namespace troupe::test;

TEST(BenchCli, LoadRunAgainstServeRecordsEveryRequest) {
  TROUPE_REQUIRE_MODELS();
  const int port = free_port();
  auto dir = temp_dir("bench");
  const auto steps = dir / "steps.jsonl";
  child_process serve(
      {"serve", "--model", model_path(), "--listen", tcp(port), "--workers", "2", "--step-log", steps.string()},
      dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  const auto summary = dir / "summary.json", records = dir / "requests.jsonl", trace = dir / "trace.csv";
  auto r = run_command(troupe_bin() + " bench --gateway " + tcp(port) +
                       " --concurrency 6 --requests 30 --prompt-len uniform:8:40 --output-len fixed:12 --vocab 512"
                       " --tenants a:1,b:1 --summary-json " +
                       summary.string() + " --out-jsonl " + records.string() + " --record-trace " + trace.string());
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("TTFT"), std::string::npos) << r.out;
  auto s = nlohmann::json::parse(read_file(summary));
  EXPECT_EQ(s["requests"], 30);
  EXPECT_EQ(s["finished"], 30);
  EXPECT_GT(s["ttft_s"]["p50"].get<double>(), 0.0);
  int lines = 0, tokens = 0;
  std::ifstream in(records);
  for (std::string line; std::getline(in, line); ++lines) tokens += nlohmann::json::parse(line)["generated"].get<int>();
  EXPECT_EQ(lines, 30);
  EXPECT_EQ(tokens, 30 * 12);  // ignore_eos: exactly the output length, no token lost or duplicated
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  // Every step the workers ran is in the step log, in the simulator's profile format.
  int step_lines = 0, fed = 0;
  std::ifstream sl(steps);
  for (std::string line; std::getline(sl, line); ++step_lines) fed += nlohmann::json::parse(line)["tokens"].get<int>();
  EXPECT_GT(step_lines, 0);
  EXPECT_GE(fed, 30 * 8);  // at least the shortest prompts were fed

  // The arrivals as sent replay in the simulator.
  auto sim = run_command(troupe_bin() + " sim run --trace " + trace.string() + " --device h100 --model llama-3.2-1b");
  EXPECT_EQ(sim.exit_code, 0) << sim.out;
  EXPECT_NE(sim.out.find("requests   30"), std::string::npos) << sim.out;
}

TEST(BenchCli, ProfileModeWritesAFittableStepProfile) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("profile");
  const auto prof = dir / "profile.jsonl";
  auto r = run_command(troupe_bin() + " bench --profile " + prof.string() + " --model-file " + model_path() +
                       " --threads 1 --reps 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::ifstream in(prof);
  std::string first;
  std::getline(in, first);
  EXPECT_TRUE(nlohmann::json::parse(first).contains("meta"));
  int steps = 0;
  for (std::string line; std::getline(in, line); ++steps) EXPECT_GT(nlohmann::json::parse(line)["time_s"], 0.0);
  EXPECT_GE(steps, 30);
  auto fit = run_command(troupe_bin() + " sim fit --cost-model fitted " + prof.string());
  EXPECT_EQ(fit.exit_code, 0) << fit.out;
  EXPECT_NE(fit.out.find("fitted("), std::string::npos) << fit.out;
}

// A policy trace recorded by a real cluster run, replayed through the simulator's policy,
// makes the same batching decisions; under another token budget it does not.
TEST(BenchCli, RealRunTraceReplaysToTheSameDecisions) {
  TROUPE_REQUIRE_MODELS();
  const int port = free_port();
  auto dir = temp_dir("trace");
  const auto trace = dir / "policy.jsonl";
  child_process serve(
      {"serve", "--model", model_path(), "--listen", tcp(port), "--workers", "2", "--trace", trace.string()},
      dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  auto r = run_command(troupe_bin() + " bench --gateway " + tcp(port) +
                       " --rate 60 --requests 40 --prompt-len uniform:8:40 --output-len uniform:4:30 --vocab 512");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  serve.signal(SIGTERM);
  ASSERT_EQ(serve.wait(20), 0) << serve.log();
  // The trace records the run's policy settings (async scheduling's 2 steps in flight
  // included), so the replay needs no flags.
  auto same = run_command(troupe_bin() + " sim replay --trace " + trace.string());
  EXPECT_EQ(same.exit_code, 0) << same.out;
  EXPECT_NE(same.out.find("the same decisions (policy configuration recorded"), std::string::npos) << same.out;
  auto other = run_command(troupe_bin() + " sim replay --trace " + trace.string() +
                           " --with-flags --max-step-tokens 16 --max-inflight-steps 2");
  EXPECT_EQ(other.exit_code, 1) << other.out;
  EXPECT_NE(other.out.find("differ"), std::string::npos) << other.out;
}
