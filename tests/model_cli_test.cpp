// troupe model synth | inspect | quantize, through the binary.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "src/model/tokenizer.h"
#include "src/model/tokenizer_files.h"
#include "temp_dir.h"
#include "test_support.h"
#include "tokenizer_reference.h"
#include "troupe/model.h"

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

// A tiny random model with a real vocabulary: the GGUF carries the tokenizer whole (ids exact
// on the references, stop tokens, chat template) and generates through the CLI.
class ModelCliSynthTokenizer : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelCliSynthTokenizer, GgufKeepsTheTokenizerAndGenerates) {
  TROUPE_REQUIRE_TOKENIZERS();
  const std::string name = GetParam();
  troupe::test::temp_dir dir;
  const std::string gguf = dir / (name + ".gguf");
  // q8_0 at dim 64: the two 150k-row embedding tables are ~10 MB each.
  auto r = run_command(troupe_bin() + " model synth --preset tiny --dtype q8_0 --seed 5 --tokenizer " +
                       (troupe::test::tokenizers_dir() / name).string() + " --out " + gguf);
  ASSERT_EQ(r.exit_code, 0) << r.out;

  const auto m = troupe::open_model(gguf);
  const troupe::tokenizer_data& d = m->tokenizer();
  const troupe::tokenizer tok(d);
  EXPECT_EQ(m->config().vocab_size, tok.vocab_size());
  EXPECT_EQ(troupe::test::reference_mismatches(tok, troupe::test::tokenizer_reference(name)), "");
  if (name == "llama3") {
    EXPECT_EQ(d.pre, "llama-bpe");
    EXPECT_EQ(d.bos_id, 128000);
    EXPECT_EQ(d.eos_id, 128001);
    EXPECT_EQ(d.eot_id, 128009);
    EXPECT_EQ(d.bos_token, "<|begin_of_text|>");
  } else {
    EXPECT_EQ(d.pre, "qwen2");
    EXPECT_EQ(d.bos_id, -1);
    EXPECT_EQ(d.eos_id, 151645);
    EXPECT_EQ(d.eot_id, 151645);
    EXPECT_EQ(d.eos_token, "<|im_end|>");
    EXPECT_TRUE(tok.is_eos(151643));  // <|endoftext|>
  }
  EXPECT_TRUE(tok.is_eos(d.eot_id));
  EXPECT_EQ(d.chat_template,
            troupe::load_hf_tokenizer_json((troupe::test::tokenizers_dir() / name).string()).chat_template);
  EXPECT_FALSE(d.chat_template.empty());

  r = run_command(troupe_bin() + " --log-level warn generate --model " + gguf +
                  " --prompt 'The capital of France is' --max-tokens 4 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_GE(j.at("ids").size(), 1u) << r.out;
  EXPECT_LE(j.at("ids").size(), 4u) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Real, ModelCliSynthTokenizer, ::testing::Values("llama3", "qwen3"));

}  // namespace

// model perplexity and model compare on the shared stories260K over a text Debian ships:
// the perplexity equals llama.cpp's llama-perplexity on the same file and text (c392e50:
// `llama-perplexity -m stories260K.gguf -f /usr/share/common-licenses/GPL-3 -c 128` gives
// "PPL = 105.3193 +/- 3.53021" over 173 chunks; its KV cache is f16, ours f32), a model
// against itself diverges by nothing, and its q4_0 rewrite by something.
TEST(ModelCli, PerplexityMatchesLlamaCppAndCompareMeasuresTheQuantization) {
  TROUPE_REQUIRE_MODELS();
  const std::string text = "/usr/share/common-licenses/GPL-3";
  if (!std::filesystem::exists(text)) GTEST_SKIP() << text << " not found";
  const std::string m = (troupe::test::models_dir() / "stories260K" / "stories260K.gguf").string();
  auto r = run_command("(" + troupe_bin() + " --log-level warn model perplexity --json --ctx 128 --model " + m +
                       " --text " + text + " 2>/dev/null)");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("chunks"), 173);
  EXPECT_NEAR(j.at("ppl").get<double>(), 105.3193, 0.02);
  troupe::test::temp_dir dir;
  const std::string q4 = dir / "q4.gguf";
  ASSERT_EQ(run_command(troupe_bin() + " --log-level error model quantize " + m + " " + q4 + " --dtype q4_0").exit_code,
            0);
  auto cmp = [&](const std::string& other) {
    auto c = run_command("(" + troupe_bin() + " --log-level warn model compare --json --ctx 128 --chunks 20 --base " +
                         m + " --model " + other + " --text " + text + " 2>/dev/null)");
    EXPECT_EQ(c.exit_code, 0) << c.out;
    return nlohmann::json::parse(c.out);
  };
  const auto same = cmp(m);
  EXPECT_EQ(same.at("kld_mean"), 0);
  EXPECT_EQ(same.at("top1"), 1);
  const auto quant = cmp(q4);
  EXPECT_GT(quant.at("kld_mean").get<double>(), 1e-3);
  EXPECT_LT(quant.at("top1").get<double>(), 1.0);
  EXPECT_GT(quant.at("ppl").get<double>(), quant.at("ppl_base").get<double>());
}
