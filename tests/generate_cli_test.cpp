// `troupe generate` as a user runs it: the reference ids in --json, streamed text, bad flags.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "reference_run.h"
#include "test_support.h"

namespace troupe {
namespace {

using test::models_dir;

TEST(GenerateCli, JsonPrintsTheReferenceIds) {
  TROUPE_REQUIRE_MODELS();
  const auto ref = test::read_reference(models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
  const std::string cmd = test::troupe_bin() + " --log-level warn generate --model " +
                          (models_dir() / "stories260K/stories260K.gguf").string() +
                          " --prompt 'Once upon a time' --max-tokens 64 --json";
  const auto r = test::run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("prompt_ids").get<std::vector<int32_t>>(), ref.prompt_ids);
  EXPECT_EQ(j.at("ids").get<std::vector<int32_t>>(), ref.generated_ids);
  EXPECT_EQ("Once upon a time" + j.at("text").get<std::string>(), ref.text);
  EXPECT_EQ(j.at("finish_reason"), "length");
  EXPECT_EQ(j.at("timings").at("prefill_tokens"), 5);
  EXPECT_EQ(j.at("timings").at("decode_tokens"), 63);
  EXPECT_GT(j.at("timings").at("decode_tok_s").get<double>(), 0.0);
}

TEST(GenerateCli, StreamsTextAndRejectsBadFlags) {
  TROUPE_REQUIRE_MODELS();
  const std::string model = (models_dir() / "stories260K/stories260K.bin").string();
  const auto r = test::run_command(test::troupe_bin() + " --log-level off generate --model " + model +
                                   " --prompt 'Once upon a time' --max-tokens 12");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("Once upon a time, there was a little girl named Lily."), std::string::npos) << r.out;
  const auto bad =
      test::run_command(test::troupe_bin() + " generate --model " + model + " --prompt x --kernel attention=nonesuch");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("nonesuch"), std::string::npos) << bad.out;
}

// The KV pool's size by fraction of RAM and its element type, as the log reports them; a
// fraction outside [0, 1] is refused naming the flag.
TEST(GenerateCli, KvCacheSizedByFractionOfRamInF16) {
  TROUPE_REQUIRE_MODELS();
  const std::string model = (models_dir() / "stories260K/stories260K.gguf").string();
  auto pool_mib = [&](const std::string& flags) {
    const auto r = test::run_command(test::troupe_bin() + " generate --model " + model +
                                     " --prompt 'Once upon a time' --max-tokens 4 --kv-mb 0" + flags);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    const auto at = r.out.find("KV pool of ");
    EXPECT_NE(at, std::string::npos) << r.out;
    const auto open = r.out.find('(', at);
    return std::make_pair(std::stod(r.out.substr(open + 1)), r.out.substr(at, r.out.find('\n', at) - at));
  };
  const auto [small, small_line] = pool_mib(" --kv-fraction 0.01");
  const auto [large, large_line] = pool_mib(" --kv-fraction 0.02 --kv-dtype f16");
  EXPECT_NE(large_line.find("f16"), std::string::npos) << large_line;
  EXPECT_NE(small_line.find("f32"), std::string::npos) << small_line;
  // twice the fraction: twice the MiB (within a block's rounding)
  EXPECT_NEAR(large / small, 2.0, 0.01) << small_line << " / " << large_line;
  const auto bad =
      test::run_command(test::troupe_bin() + " generate --model " + model + " --prompt x --kv-fraction 1.5");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("--kv-fraction"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace troupe
