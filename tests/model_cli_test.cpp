// troupe model synth | inspect | quantize, through the binary.
#include <gtest/gtest.h>

#include "temp_dir.h"
#include "test_support.h"

namespace {

using troupe::test::run_command;
using troupe::test::troupe_bin;

bool has(const std::string& out, const std::string& s) { return out.find(s) != std::string::npos; }

TEST(ModelCli, SynthInspectQuantize) {
  troupe::test::temp_dir dir;
  auto r = run_command(troupe_bin() + " model synth --preset tiny --dtype f16 --seed 3 --out " + (dir / "t.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(troupe_bin() + " model inspect " + (dir / "t.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "gguf v3")) << r.out;
  EXPECT_TRUE(has(r.out, "dim 64, 2 layers, 4 heads (2 kv, head_dim 16), hidden 192, vocab 512")) << r.out;
  EXPECT_TRUE(has(r.out, "sentencepiece_bpe, 512 tokens")) << r.out;
  EXPECT_TRUE(has(r.out, "blk.1.attn_k.weight")) << r.out;
  EXPECT_TRUE(has(r.out, "f16")) << r.out;

  r = run_command(troupe_bin() + " model quantize " + (dir / "t.gguf") + " " + (dir / "q.gguf") + " --dtype q4_0");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(troupe_bin() + " model inspect " + (dir / "q.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "q4_0")) << r.out;
}

TEST(ModelCli, QuantizeSaysWhatItKeepsAsF16) {
  TROUPE_REQUIRE_MODELS();
  troupe::test::temp_dir dir;
  auto r = run_command(troupe_bin() + " model quantize " +
                       (troupe::test::models_dir() / "stories260K" / "stories260K.bin").string() + " " +
                       (dir / "q.gguf") + " --dtype q8_0");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "blk.0.ffn_down.weight: 172 columns is not a multiple of 32; kept as f16")) << r.out;
}

TEST(ModelCli, InspectOfABrokenFileFailsWithTheReason) {
  troupe::test::temp_dir dir;
  run_command("printf 'GGUF\\003\\000' > " + (dir / "bad.gguf"));
  auto r = run_command(troupe_bin() + " model inspect " + (dir / "bad.gguf"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "bad.gguf: truncated file")) << r.out;
}

}  // namespace
