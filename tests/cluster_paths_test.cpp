// Paths that unit tests cover, through a real `troupe serve` process on loopback: a prefix
// cache hit skipping a prefill, recompute preemption under a tiny KV pool, and API keys with
// tenant limits. Every greedy answer must still equal `troupe generate`.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cluster_support.h"

using namespace troupe::test;

namespace {

struct serve_process {
  std::filesystem::path dir;
  int port = free_port();
  std::unique_ptr<child_process> serve;

  serve_process(const std::string& name, std::vector<std::string> flags) : dir(temp_dir(name)) {
    std::vector<std::string> args = {"serve", "--model", model_path(), "--listen", tcp(port), "--workers", "1"};
    args.insert(args.end(), flags.begin(), flags.end());
    serve = std::make_unique<child_process>(args, dir / "serve.log");
    EXPECT_TRUE(serve->wait_for_log("ready on")) << serve->log();
  }
  // One job through `troupe submit --json`: its JSON line.
  nlohmann::json submit(const std::string& prompt, int max_tokens, const std::string& extra = "") const {
    // stderr (a refused job's message) away: run_command merges it into the JSON otherwise.
    auto r =
        run_command("(" + troupe_bin() + " submit --json --gateway " + tcp(port) + " --prompt " + shell_quote(prompt) +
                    " --max-tokens " + std::to_string(max_tokens) + " " + extra + " 2>/dev/null)");
    return nlohmann::json::parse(r.out);
  }
  // Stops the server (the trace is complete after that).
  void stop() {
    serve->signal(SIGTERM);
    EXPECT_EQ(serve->wait(20), 0) << serve->log();
  }
  ~serve_process() { std::filesystem::remove_all(dir); }
};

std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(nlohmann::json::parse(l));
  return lines;
}

}  // namespace

// The second job with the same long prompt starts past the blocks the first one cached: its
// first step feeds tokens from a position > 0 (the trace's `pos`), and its answer is the same.
TEST(ClusterPaths, APrefixCacheHitSkipsThePrefillOfSharedBlocks) {
  TROUPE_REQUIRE_MODELS();
  const std::string prompt =
      "Once upon a time there was a little girl named Lily. She loved to play outside in the park with her friends.";
  auto dir = temp_dir("prefix_files");
  const auto trace = dir / "policy.jsonl";
  serve_process run("prefix", {"--trace", trace.string()});
  const auto a = run.submit(prompt, 16), b = run.submit(prompt, 16);
  run.stop();
  const auto expected = generate_ids(prompt, 16);
  ASSERT_TRUE(a.contains("ids")) << a.dump();
  ASSERT_TRUE(b.contains("ids")) << b.dump();
  EXPECT_EQ(a.at("ids").get<std::vector<int32_t>>(), expected);
  EXPECT_EQ(b.at("ids").get<std::vector<int32_t>>(), expected);
  ASSERT_GT(a.at("prompt_tokens").get<int>(), 32) << "the prompt must span more than two blocks";

  // Request ids in submit order: the first submit line is a, the second b.
  std::vector<uint64_t> ids;
  int b_first_pos = -1, a_first_pos = -1;
  for (const auto& l : read_jsonl(trace)) {
    if (l.at("ev") == "submit") ids.push_back(l.at("id"));
    if (l.at("ev") != "step" || ids.empty()) continue;
    for (const auto& w : l.at("seqs")) {
      if (w.at("id") == ids[0] && a_first_pos < 0) a_first_pos = w.at("pos");
      if (ids.size() > 1 && w.at("id") == ids[1] && b_first_pos < 0) b_first_pos = w.at("pos");
    }
  }
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(a_first_pos, 0);
  EXPECT_GE(b_first_pos, 32) << "the second job recomputed blocks the first one had cached";
  std::filesystem::remove_all(dir);
}

// A pool of 51 blocks (816 tokens) for eight jobs of ~160 tokens each: sequences are preempted
// and recomputed, and no answer changes.
TEST(ClusterPaths, RecomputePreemptionUnderATinyKvPoolChangesNoAnswer) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("preempt_files");
  const auto trace = dir / "policy.jsonl", jobs = dir / "jobs.jsonl";
  const char* const prompts[] = {"Once upon a time", "The cat sat", "Lily and Ben went to the park",
                                 "One day, a little dog"};
  {
    std::ofstream f(jobs);
    for (int i = 0; i < 8; ++i)
      f << nlohmann::json{{"prompt", std::string(prompts[i % 4]) + (i < 4 ? "" : " and")}, {"max_tokens", 150}}.dump()
        << "\n";
  }
  serve_process s("preempt", {"--kv-mb", "1", "--trace", trace.string()});
  auto r = run_command("(" + troupe_bin() + " submit --json --gateway " + tcp(s.port) + " --file " + jobs.string() +
                       " --concurrency 8 2>/dev/null)");
  s.stop();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::istringstream out(r.out);
  int i = 0;
  for (std::string l; std::getline(out, l); ++i) {
    const auto j = nlohmann::json::parse(l);
    ASSERT_TRUE(j.contains("ids")) << "job " << i << ": " << l;
    EXPECT_EQ(j.at("ids").get<std::vector<int32_t>>(),
              generate_ids(std::string(prompts[i % 4]) + (i < 4 ? "" : " and"), 150))
        << "job " << i;
  }
  EXPECT_EQ(i, 8);
  size_t preempted = 0;
  for (const auto& l : read_jsonl(trace))
    if (l.at("ev") == "step") preempted += l.at("preempted").size();
  EXPECT_GT(preempted, 0u) << "the pool was large enough for every job: the test did not preempt";
  std::filesystem::remove_all(dir);
}

// Keys map to tenants; a tenant over its queued-token limit is `overloaded`, another tenant
// is not; a missing or unknown key is refused naming the field.
TEST(ClusterPaths, ApiKeysAndTenantLimitsThroughServe) {
  TROUPE_REQUIRE_MODELS();
  serve_process s("keys", {"--api-key", "k1=a", "--api-key", "k2=b", "--tenant", "a:1:0:5"});
  const std::string prompt = "Once upon a time there was a little girl";
  const auto over = s.submit(prompt, 8, "--api-key k1");
  ASSERT_TRUE(over.contains("error")) << over.dump();
  EXPECT_EQ(over.at("error").at("kind"), "overloaded");
  EXPECT_EQ(over.at("error").at("field"), "tenant");
  const auto ok = s.submit(prompt, 8, "--api-key k2");
  ASSERT_TRUE(ok.contains("ids")) << ok.dump();
  EXPECT_EQ(ok.at("ids").get<std::vector<int32_t>>(), generate_ids(prompt, 8));
  for (const char* key : {"--api-key nope", ""}) {
    const auto bad = s.submit(prompt, 8, key);
    ASSERT_TRUE(bad.contains("error")) << key << ": " << bad.dump();
    EXPECT_EQ(bad.at("error").at("kind"), "failed");
    EXPECT_EQ(bad.at("error").at("field"), "api_key");
  }
  s.stop();
}
