// Preemption by swap end to end: a real `troupe serve` whose KV pool is too small for the
// concurrent jobs, with --preemption swap and a host pool (--swap-mb). Sequences are swapped
// out and back (the decision trace says so), and every greedy answer still equals
// `troupe generate` on the same prompt.
#include <gtest/gtest.h>

#include <cstdio>

#include "cluster_jobs.h"

using namespace troupe;
using namespace troupe::test;

namespace {

// Sequences swapped out, and back in, over the whole trace.
std::pair<int, int> count_swaps(const std::string& trace) {
  int out = 0, in = 0;
  std::istringstream lines(trace);
  for (std::string line; std::getline(lines, line);) {
    auto json = nlohmann::json::parse(line);
    if (json.value("ev", "") != "step") continue;
    out += json.contains("swapped_out") ? static_cast<int>(json["swapped_out"].size()) : 0;
    in += json.contains("swapped_in") ? static_cast<int>(json["swapped_in"].size()) : 0;
  }
  return {out, in};
}

}  // namespace

// kv_dtype: the workers' --kv-dtype, and generate's for the reference answers.
static void serve_swaps_and_matches_generate(const std::string& kv_dtype) {
  auto dir = temp_dir("swap");
  const int port = free_port();
  // 1 MiB of KV holds a few dozen blocks of stories260K: 16 jobs of ~100 tokens need more;
  // f16 blocks are half the size, so twice the jobs.
  const int jobs = kv_dtype == "f16" ? 32 : 16, max_tokens = 96;
  child_process serve(
      {"serve", "--model", model_path(), "--listen", tcp(port), "--workers", "1", "--kv-mb", "1", "--kv-dtype",
       kv_dtype, "--swap-mb", "8", "--preemption", "swap", "--trace", (dir / "trace.jsonl").string()},
      dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  EXPECT_NE(serve.log().find("host swap pool of"), std::string::npos) << serve.log();
  EXPECT_NE(serve.log().find(kv_dtype == "f16" ? "MiB, f16" : "MiB, f32"), std::string::npos) << serve.log();
  auto results = run_clients(tcp(port), jobs, max_tokens);
  expect_like_generate(results, max_tokens, " --kv-dtype " + kv_dtype);
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  const auto [out, in] = count_swaps(read_file(dir / "trace.jsonl"));
  std::printf("sequences swapped out: %d, swapped in: %d\n", out, in);
  EXPECT_GT(out, 0) << "no sequence was swapped out: the pool was not small enough";
  EXPECT_EQ(in, out);  // every job finished, so every swapped-out sequence came back
  std::filesystem::remove_all(dir);
}

TEST(ClusterSwap, ServeWithATinyKvPoolSwapsAndMatchesGenerate) {
  TROUPE_REQUIRE_MODELS();
  serve_swaps_and_matches_generate("f32");
}

// The same with f16 KV pools: half-size elements through the swap copies, answers equal to
// `troupe generate --kv-dtype f16`.
TEST(ClusterSwap, F16KvPoolsSwapAndMatchGenerate) {
  TROUPE_REQUIRE_MODELS();
  serve_swaps_and_matches_generate("f16");
}
