// One policy configuration everywhere: troupe serve, troupe scheduler and troupe sim take the
// same scheduling-policy flags (cli/policy_flags.cpp defines them once), a config file's keys
// set them, and a value out of range fails naming the flag.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "cluster_support.h"

using namespace troupe::test;

namespace {

// Each command with what it needs besides the policy flags (serve's --model is required:
// given, the check that fails is the policy's).
const char* const policy_commands[] = {"serve --model m.gguf", "scheduler", "sim"};

// The long flags --help lists in the "Scheduling policy" group (CLI11: the group's title
// line, then one line per option starting with two spaces and its name, then a blank line).
std::set<std::string> policy_flags_in_help(const std::string& command) {
  const auto r = run_command(troupe_bin() + " " + command + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  std::set<std::string> flags;
  std::istringstream in(r.out);
  std::string line;
  bool in_group = false;
  const std::regex option("^  (--[a-z0-9-]+)");
  while (std::getline(in, line)) {
    if (line.rfind("Scheduling policy:", 0) == 0) {
      in_group = true;
    } else if (in_group && line.empty()) {
      break;
    } else if (std::smatch m; in_group && std::regex_search(line, m, option)) {
      flags.insert(m[1]);
    }
  }
  return flags;
}

}  // namespace

TEST(PolicyFlagsCli, ServeSchedulerAndSimTakeTheSameSet) {
  const std::set<std::string> expected = {"--max-step-tokens",
                                          "--chunked-prefill",
                                          "--max-queued",
                                          "--max-inflight-steps",
                                          "--prefix-caching",
                                          "--kv-watermark",
                                          "--preemption",
                                          "--host-kv-blocks",
                                          "--aging",
                                          "--tenant",
                                          "--default-tenant",
                                          "--affinity-load-factor",
                                          "--affinity-wait",
                                          "--admission-ttft-slo",
                                          "--prefill-tokens-per-s"};
  const auto scheduler = policy_flags_in_help("scheduler");
  EXPECT_EQ(scheduler, expected);
  EXPECT_EQ(policy_flags_in_help("serve"), scheduler);
  EXPECT_EQ(policy_flags_in_help("sim"), scheduler);
}

// The keys of a --config file are the flags: the scheduler logs the policy it runs.
TEST(PolicyFlagsCli, ConfigFileKeysSetTheSchedulersPolicy) {
  const auto dir = temp_dir("policy-config");
  {
    std::ofstream toml(dir / "scheduler.toml");
    toml << "aging = 3\nadmission-ttft-slo = 0.5\nprefill-tokens-per-s = 2000\nprefix-caching = false\n"
            "tenant = [\"a:2:4\", \"b:1\"]\nmax-step-tokens = 999\n";
  }
  child_process s({"scheduler", "--listen", tcp(free_port()), "--config", (dir / "scheduler.toml").string(),
                   "--max-step-tokens", "64"},
                  dir / "scheduler.log");
  ASSERT_TRUE(s.wait_for_log("ready on")) << s.log();
  s.signal(SIGTERM);
  EXPECT_EQ(s.wait(20), 0) << s.log();
  const auto log = s.log();
  for (const char* want : {"max_step_tokens=64 ", "prefix_caching=false ", "aging_s=3 ", "ttft_slo_s=0.5 ",
                           "prefill_tokens_per_s=2000 ", "tenants=[a:2:4:0,b:1:0:0] ", "max_inflight_steps=2 "})
    EXPECT_NE(log.find(want), std::string::npos) << want << " missing from: " << log;
  std::filesystem::remove_all(dir);
}

// On serve, the workers' --max-batch-tokens is a deprecated spelling of --max-step-tokens.
TEST(PolicyFlagsCli, ServesMaxBatchTokensSetsTheStepBudget) {
  TROUPE_REQUIRE_MODELS();
  const auto dir = temp_dir("policy-serve");
  child_process s({"serve", "--model", model_path(), "--listen", tcp(free_port()), "--max-batch-tokens", "48"},
                  dir / "serve.log");
  ASSERT_TRUE(s.wait_for_log("ready on")) << s.log();
  s.signal(SIGTERM);
  EXPECT_EQ(s.wait(20), 0) << s.log();
  EXPECT_NE(s.log().find("max_step_tokens=48 "), std::string::npos) << s.log();
  std::filesystem::remove_all(dir);
}

TEST(PolicyFlagsCli, OutOfRangeValuesFailNamingTheFlag) {
  for (const char* command : policy_commands) {
    for (const char* bad : {"--kv-watermark 2", "--affinity-load-factor 0.5", "--tenant a:0", "--preemption evict"}) {
      const auto r = run_command(troupe_bin() + " " + command + " " + bad);
      EXPECT_NE(r.exit_code, 0) << command << " " << bad;
      const std::string flag = std::string(bad).substr(0, std::string(bad).find(' '));
      EXPECT_NE(r.out.find(flag), std::string::npos) << command << " " << bad << ": " << r.out;
    }
  }
}
