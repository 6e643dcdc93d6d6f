// troupe sim end to end through the binary: flags, the TOML config, outputs and errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_support.h"

namespace {

std::filesystem::path temp_dir() {
  auto dir = std::filesystem::temp_directory_path() / ("troupe_sim_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string sim(const std::string& args) { return troupe::test::troupe_bin() + " sim --no-progress " + args; }

}  // namespace

TEST(SimCli, RunWritesRecordsSummaryAndReport) {
  const auto d = temp_dir();
  const auto r = troupe::test::run_command(sim("--requests 60 --rate 6 --model llama-3.2-1b --out-jsonl " +
                                               (d / "r.jsonl").string() + " --report-html " + (d / "r.html").string() +
                                               " --steps-jsonl " + (d / "steps.jsonl").string() + " --summary-json -"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("TTFT"), std::string::npos);
  EXPECT_NE(r.out.find("\"goodput\""), std::string::npos);
  const auto jsonl = slurp(d / "r.jsonl");
  EXPECT_EQ(std::count(jsonl.begin(), jsonl.end(), '\n'), 60);
  EXPECT_NE(slurp(d / "r.html").find("<svg"), std::string::npos);
  // The step log is a step profile: a linear model fits the roofline's steps.
  const auto fit = troupe::test::run_command(sim("fit --cost-model fitted " + (d / "steps.jsonl").string()));
  ASSERT_EQ(fit.exit_code, 0) << fit.out;
  EXPECT_NE(fit.out.find("rms relative error"), std::string::npos) << fit.out;
}

TEST(SimCli, ConfigFileSetsOptionsAndFlagsWin) {
  const auto d = temp_dir();
  {
    std::ofstream toml(d / "sim.toml");
    toml << "# a simulator config\n[sim]\nrequests = 25\nrate = 4.0\nmodel = \"llama-3.2-1b\"\n"
            "tenants = \"a:1:0,b:1:1\"\nprefix-caching = false\n";
  }
  auto r = troupe::test::run_command(
      sim("--config " + (d / "sim.toml").string() + " --summary-json " + (d / "s.json").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(slurp(d / "s.json").find("\"requests\": 25"), std::string::npos);
  r = troupe::test::run_command(
      sim("--config " + (d / "sim.toml").string() + " --requests 7 --summary-json " + (d / "s.json").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(slurp(d / "s.json").find("\"requests\": 7"), std::string::npos);
  {
    std::ofstream toml(d / "bad.toml");
    toml << "ratee = 3\n";
  }
  r = troupe::test::run_command(sim("--config " + (d / "bad.toml").string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("ratee"), std::string::npos) << "the error names the unknown key: " << r.out;
}

TEST(SimCli, FitModeReadsAProfileAndBadInputNamesTheField) {
  const auto d = temp_dir();
  {
    std::ofstream p(d / "steps.jsonl");
    p << "{\"meta\": {\"device\": \"cpu\", \"model\": \"llama-3.2-1b\", \"memory_bytes\": 32e9}}\n";
    for (int b = 1; b <= 16; ++b)
      for (int chunk : {0, 64})
        p << "{\"tokens\": " << b + chunk << ", \"context\": " << b * 300 << ", \"seqs\": " << b
          << ", \"time_s\": " << 0.02 + 0.001 * (b + chunk) + 1e-7 * b * 300 << "}\n";
  }
  auto r = troupe::test::run_command(sim("fit --cost-model fitted " + (d / "steps.jsonl").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("32 steps"), std::string::npos) << r.out;
  // The profile's device runs a simulation with the fitted model.
  r = troupe::test::run_command(sim("--device cpu --model llama-3.2-1b --requests 10 --rate 0.5 --cost-model fitted " +
                                    (d / "steps.jsonl").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("fitted("), std::string::npos) << r.out;
  r = troupe::test::run_command(sim("--prompt-len zipf:2"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("prompt-len"), std::string::npos) << r.out;
}

TEST(SimCli, FitLearnsTheControlLoopFromAStepLogAndTheRunUsesIt) {
  const auto d = temp_dir();
  {
    // A serving worker's step log: 4 ms between a result and the next plan while work was
    // carried over, 900 ms when the replica had been idle (not the loop).
    std::ofstream p(d / "served.jsonl");
    p << "{\"meta\": {\"device\": \"cpu\", \"model\": \"llama-3.2-1b\", \"memory_bytes\": 32e9}}\n";
    for (int i = 0; i < 40; ++i) {
      const int b = 1 + i % 8;
      p << "{\"tokens\": " << b << ", \"context\": " << b * (100 + i) << ", \"seqs\": " << b
        << ", \"time_s\": " << 0.01 + 0.002 * b << ", \"gap_s\": " << (i % 10 == 0 ? 0.9 : 0.004)
        << ", \"carried\": " << (i % 10 == 0 ? 0 : b) << "}\n";
    }
  }
  auto r = troupe::test::run_command(
      sim("fit --cost-model fitted " + (d / "served.jsonl").string() + " --summary-json " + (d / "fit.json").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("control loop: 4.000 ms mean"), std::string::npos) << r.out;
  EXPECT_NE(slurp(d / "fit.json").find("\"loop_samples\": 36"), std::string::npos) << slurp(d / "fit.json");
  // A run with that profile adds the loop to every step; a flag overrides it.
  r = troupe::test::run_command(sim("--device cpu --model llama-3.2-1b --requests 5 --rate 1 --cost-model fitted " +
                                    (d / "served.jsonl").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("control loop 4.000000 ms per step (synchronous"), std::string::npos) << r.out;
  r = troupe::test::run_command(sim("--device cpu --model llama-3.2-1b --requests 5 --rate 1 --cost-model fitted " +
                                    (d / "served.jsonl").string() + " --loop-latency-ms 2 --max-inflight-steps 2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("control loop 2.000000 ms per step (pipelined"), std::string::npos) << r.out;
}

TEST(SimCli, CheapestListsEveryCandidateWithItsPrice) {
  const auto r = troupe::test::run_command(
      sim("cheapest --model llama-3-70b --target-rate 5 --candidates h100:4:3,l4:1:1 --iterations 2 "
          "--probe-requests 50 --probe-seconds 2 --prompt-len fixed:128 --output-len fixed:32"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("cheapest: 4 x h100 (tp 4)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("does not fit on 1 x l4"), std::string::npos) << r.out;
}

// --max-inflight-steps: the simulator plans a replica's next step while one runs; every
// request still finishes, and 0 is refused by name.
TEST(SimCli, MaxInflightStepsRunsAndIsChecked) {
  auto r = troupe::test::run_command(
      sim("--requests 40 --rate 6 --model llama-3.2-1b --max-inflight-steps 2 --summary-json -"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("\"goodput\""), std::string::npos) << r.out;
  r = troupe::test::run_command(sim("--requests 4 --max-inflight-steps 0"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("max-inflight-steps"), std::string::npos) << r.out;
}
