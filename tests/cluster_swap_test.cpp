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

TEST(ClusterSwap, ServeWithATinyKvPoolSwapsAndMatchesGenerate) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("swap");
  const int port = free_port();
  const int jobs = 16, max_tokens = 96;
  // 1 MiB of KV holds a few dozen blocks of stories260K: 16 jobs of ~100 tokens need more.
  child_process serve({"serve", "--model", model_path(), "--listen", tcp(port), "--workers", "1", "--kv-mb", "1",
                       "--swap-mb", "8", "--preemption", "swap", "--trace", (dir / "trace.jsonl").string()},
                      dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  EXPECT_NE(serve.log().find("host swap pool of"), std::string::npos) << serve.log();
  auto results = run_clients(tcp(port), jobs, max_tokens);
  expect_like_generate(results, max_tokens);
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  const auto [out, in] = count_swaps(read_file(dir / "trace.jsonl"));
  std::printf("sequences swapped out: %d, swapped in: %d\n", out, in);
  EXPECT_GT(out, 0) << "no sequence was swapped out: the pool was not small enough";
  EXPECT_EQ(in, out);  // every job finished, so every swapped-out sequence came back
  std::filesystem::remove_all(dir);
}
