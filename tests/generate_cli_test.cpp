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

}  // namespace
}  // namespace troupe
