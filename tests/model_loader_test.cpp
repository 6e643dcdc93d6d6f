// The model loaders against the shared models: shapes, formats, and that the same model
// in two formats holds the same numbers.
#include <gtest/gtest.h>

#include <cstring>

#include "kernels/ref/dtype.h"
#include "test_support.h"
#include "troupe/model.h"

namespace troupe {
namespace {

std::string stories(const char* file) { return (test::models_dir() / "stories260K" / file).string(); }

void expect_stories260k_shape(const model_config& c) {
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FALSE(c.rope_neox);
  EXPECT_FALSE(c.scaling.enabled);
}

TEST(ModelLoader, Stories260kGguf) {
  TROUPE_REQUIRE_MODELS();
  auto m = open_model(stories("stories260K.gguf"));
  EXPECT_EQ(m->format(), "gguf v3");
  expect_stories260k_shape(m->config());
  EXPECT_FALSE(m->config().tied_embeddings);
  EXPECT_EQ(m->weights().layers.size(), 5u);
  EXPECT_EQ(m->weights().layers[2].wk.name, "blk.2.attn_k.weight");
  EXPECT_EQ(m->weights().layers[2].wk.rows, 32);
  EXPECT_EQ(m->weights().layers[2].w_down.cols, 172);
  const tokenizer_data& t = m->tokenizer();
  EXPECT_EQ(t.type, tokenizer_data::kind::sentencepiece_bpe);
  ASSERT_EQ(t.tokens.size(), 512u);
  EXPECT_EQ(t.tokens[13], "<0x0A>");
  EXPECT_EQ(t.bos_id, 1);
  EXPECT_EQ(t.eos_id, 2);
  EXPECT_EQ(t.unk_id, 0);
  EXPECT_EQ(t.token_types[1], 3);
  EXPECT_TRUE(t.extra_eos_ids.empty());
}

TEST(ModelLoader, Stories260kLlama2cFindsItsTokenizer) {
  TROUPE_REQUIRE_MODELS();
  auto m = open_model(stories("stories260K.bin"));
  EXPECT_EQ(m->format(), "llama2.c");
  expect_stories260k_shape(m->config());
  EXPECT_EQ(m->config().max_seq_len, 512);
  EXPECT_TRUE(m->config().tied_embeddings);
  EXPECT_EQ(m->weights().output.data, m->weights().tok_embd.data);
  const tokenizer_data& t = m->tokenizer();
  ASSERT_EQ(t.tokens.size(), 512u);
  EXPECT_EQ(t.tokens[1], "<s>");
  EXPECT_EQ(t.tokens[13], "<0x0A>");
  EXPECT_EQ(t.bos_id, 1);
  EXPECT_EQ(t.eos_id, 2);
}

bool same_values(const tensor_view& a, const tensor_view& b) {
  if (a.rows != b.rows || a.cols != b.cols || a.dtype != TROUPE_F32 || b.dtype != TROUPE_F32) return false;
  return std::memcmp(a.data, b.data, static_cast<size_t>(a.rows * a.cols) * sizeof(float)) == 0;
}

TEST(ModelLoader, Stories260kSameNumbersInBothFormats) {
  TROUPE_REQUIRE_MODELS();
  auto g = open_model(stories("stories260K.gguf"));
  auto b = open_model(stories("stories260K.bin"), stories("tok512.bin"));
  const model_weights &wg = g->weights(), &wb = b->weights();
  EXPECT_TRUE(same_values(wg.tok_embd, wb.tok_embd));
  EXPECT_TRUE(same_values(wg.output, wb.output));  // the GGUF stores the tied head explicitly
  EXPECT_TRUE(same_values(wg.output_norm, wb.output_norm));
  for (size_t i = 0; i < wg.layers.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i));
    const layer_weights &lg = wg.layers[i], &lb = wb.layers[i];
    EXPECT_TRUE(same_values(lg.attn_norm, lb.attn_norm));
    EXPECT_TRUE(same_values(lg.wq, lb.wq));
    EXPECT_TRUE(same_values(lg.wk, lb.wk));
    EXPECT_TRUE(same_values(lg.wv, lb.wv));
    EXPECT_TRUE(same_values(lg.wo, lb.wo));
    EXPECT_TRUE(same_values(lg.ffn_norm, lb.ffn_norm));
    EXPECT_TRUE(same_values(lg.w_gate, lb.w_gate));
    EXPECT_TRUE(same_values(lg.w_up, lb.w_up));
    EXPECT_TRUE(same_values(lg.w_down, lb.w_down));
  }
  EXPECT_EQ(g->tokenizer().tokens, b->tokenizer().tokens);
  EXPECT_EQ(g->tokenizer().scores, b->tokenizer().scores);
}

}  // namespace
}  // namespace troupe
