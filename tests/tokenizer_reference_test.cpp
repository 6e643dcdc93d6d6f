// Real tokenizers: Llama 3's and Qwen3's tokenizer.json (../shared/tokenizers) against the
// reference ids of transformers.js, every text and rendered chat id-exact and decoded back;
// and the stop tokens, texts and chat template a chat server takes from them.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "src/model/tokenizer.h"
#include "src/model/tokenizer_files.h"
#include "test_support.h"
#include "tokenizer_reference.h"

namespace troupe {
namespace {

bool contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Loaded once per test program: building a 150k-token vocabulary takes about a second.
const tokenizer& real_tokenizer(const std::string& name) {
  static std::map<std::string, tokenizer> loaded;
  auto it = loaded.find(name);
  if (it == loaded.end())
    it = loaded.emplace(name, tokenizer(load_hf_tokenizer_json((test::tokenizers_dir() / name).string()))).first;
  return it->second;
}

class TokenizerReference : public ::testing::TestWithParam<const char*> {};

TEST_P(TokenizerReference, EncodesEveryTextAndChatExactly) {
  TROUPE_REQUIRE_TOKENIZERS();
  const tokenizer& tok = real_tokenizer(GetParam());
  const auto cases = test::tokenizer_reference(GetParam());
  ASSERT_GE(cases.size(), 15u);
  EXPECT_EQ(test::reference_mismatches(tok, cases), "");
}

TEST_P(TokenizerReference, StreamsTheTextOfEveryReference) {
  TROUPE_REQUIRE_TOKENIZERS();
  const tokenizer& tok = real_tokenizer(GetParam());
  for (const test::tokenizer_case& c : test::tokenizer_reference(GetParam())) {
    incremental_detokenizer detok(tok, /*at_sequence_start=*/true);
    std::string streamed;
    for (int32_t id : c.ids) streamed += detok.feed(id);
    streamed += detok.flush();
    EXPECT_EQ(streamed, tok.decode(c.ids)) << c.what;
  }
}

TEST_P(TokenizerReference, SpecialTokensStayTextWhenNotParsed) {
  TROUPE_REQUIRE_TOKENIZERS();
  const tokenizer& tok = real_tokenizer(GetParam());
  const auto& d = tok.data();
  ASSERT_GE(d.eot_id, 0);
  const std::string eot = d.tokens[d.eot_id];
  EXPECT_EQ(tok.encode("hi" + eot, false), (std::vector<int32_t>{tok.encode("hi", false)[0], d.eot_id}));
  const auto as_text = tok.encode("hi" + eot, false, /*parse_special=*/false);
  EXPECT_FALSE(contains(as_text, d.eot_id));
  EXPECT_EQ(tok.decode(as_text), "hi" + eot);
  EXPECT_EQ(tok.decode({d.eot_id}), "");
  EXPECT_EQ(tok.decode({d.eot_id}, /*skip_control=*/false), eot);
}

INSTANTIATE_TEST_SUITE_P(Real, TokenizerReference, ::testing::Values("llama3", "qwen3"));

// Llama 3: EOS <|end_of_text|>, but each chat turn ends at <|eot_id|>; both stop generation.
TEST(TokenizerReference, Llama3StopTokensAndTemplate) {
  TROUPE_REQUIRE_TOKENIZERS();
  const tokenizer& tok = real_tokenizer("llama3");
  const tokenizer_data& d = tok.data();
  EXPECT_EQ(d.pre, "llama-bpe");
  EXPECT_EQ(d.bos_id, 128000);
  EXPECT_EQ(d.bos_token, "<|begin_of_text|>");
  EXPECT_EQ(d.eos_id, 128001);
  EXPECT_EQ(d.eos_token, "<|end_of_text|>");
  EXPECT_EQ(d.eot_id, 128009);
  EXPECT_TRUE(contains(d.extra_eos_ids, 128009));
  EXPECT_TRUE(tok.is_eos(128001) && tok.is_eos(128009));
  EXPECT_FALSE(tok.is_eos(128006));  // <|start_header_id|>
  EXPECT_NE(d.chat_template.find("<|eot_id|>"), std::string::npos);
  EXPECT_TRUE(d.add_bos);
  EXPECT_EQ(tok.encode("Hi", true).front(), 128000);
}

// Qwen3: no BOS; EOS <|im_end|> is also the end of a turn; <|endoftext|> stops too.
TEST(TokenizerReference, Qwen3StopTokensAndTemplate) {
  TROUPE_REQUIRE_TOKENIZERS();
  const tokenizer& tok = real_tokenizer("qwen3");
  const tokenizer_data& d = tok.data();
  EXPECT_EQ(d.pre, "qwen2");
  EXPECT_EQ(d.bos_id, -1);
  EXPECT_EQ(d.bos_token, "");
  EXPECT_EQ(d.eos_id, 151645);
  EXPECT_EQ(d.eos_token, "<|im_end|>");
  EXPECT_EQ(d.eot_id, 151645);
  EXPECT_TRUE(contains(d.extra_eos_ids, 151643));
  EXPECT_FALSE(contains(d.extra_eos_ids, 151645));
  EXPECT_NE(d.chat_template.find("<|im_start|>"), std::string::npos);
  EXPECT_FALSE(d.add_bos);
  // Digits one by one (Llama 3 groups them by three).
  EXPECT_EQ(tok.encode("12345", false).size(), 5u);
  EXPECT_EQ(real_tokenizer("llama3").encode("12345", false).size(), 2u);
}

}  // namespace
}  // namespace troupe
