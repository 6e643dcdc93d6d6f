// The shared model recipe and batch gather (src/engine/llama_recipe.h), and the CPU backend as
// their executor: every op of the recipe runs through the variant the registry selected,
// and a registry that cannot run the model's types is a clear error.
#include <gtest/gtest.h>

#include <algorithm>

#include <string>
#include <vector>

#include "kernels/ref/ref.h"
#include "random_model.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/llama_recipe.h"
#include "troupe/error.h"

namespace troupe {
namespace {

seq_work work(std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> table, bool sample) {
  seq_work w;
  w.tokens = std::move(tokens);
  w.start_pos = start;
  w.block_table = std::move(table);
  w.sample = sample;
  return w;
}

// ---- the batch gather ----------------------------------------------------------------------

TEST(StepBatch, PlanOrderKeepsTheSequencesAndFindsEachSlot) {
  // block size 4: a 3-token prefill from position 2 crosses from block 7 into block 5
  const std::vector<seq_work> seqs = {work({10, 11, 12}, 2, {7, 5}, true), work({20}, 9, {1, 2, 3}, false),
                                      work({30}, 0, {4}, true)};
  step_batch b;
  gather_batch(seqs, 4, batch_order::plan, b);
  EXPECT_EQ(b.seq, (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(b.seq_begin, (std::vector<int64_t>{0, 3, 4, 5}));
  EXPECT_EQ(b.ids, (std::vector<int32_t>{10, 11, 12, 20, 30}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{2, 3, 4, 9, 0}));
  EXPECT_EQ(b.slots, (std::vector<int32_t>{7 * 4 + 2, 7 * 4 + 3, 5 * 4 + 0, 3 * 4 + 1, 4 * 4 + 0}));
  EXPECT_EQ(b.sampled, (std::vector<size_t>{0, 2}));
  EXPECT_EQ(b.logit_rows, (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(b.n_decode, 2);
  EXPECT_EQ(b.max_end, 10);
  ASSERT_EQ(b.block_tables.size(), 3u);
  EXPECT_EQ(b.block_tables[1].data(), seqs[1].block_table.data());  // a view, not a copy
}

TEST(StepBatch, DecodeFirstPutsSingleTokensAheadAndReusesTheBatch) {
  const std::vector<seq_work> seqs = {work({10, 11}, 0, {0}, true), work({20}, 5, {1, 2}, true),
                                      work({30, 31, 32}, 1, {3}, false), work({40}, 0, {4}, true)};
  step_batch b;
  gather_batch(seqs, 4, batch_order::plan, b);  // a bigger batch first: nothing of it may stay
  gather_batch(seqs, 4, batch_order::decode_first, b);
  EXPECT_EQ(b.seq, (std::vector<size_t>{1, 3, 0, 2}));
  EXPECT_EQ(b.seq_begin, (std::vector<int64_t>{0, 1, 2, 4, 7}));
  EXPECT_EQ(b.ids, (std::vector<int32_t>{20, 40, 10, 11, 30, 31, 32}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{5, 0, 0, 1, 1, 2, 3}));
  EXPECT_EQ(b.slots, (std::vector<int32_t>{2 * 4 + 1, 4 * 4, 0, 1, 3 * 4 + 1, 3 * 4 + 2, 3 * 4 + 3}));
  EXPECT_EQ(b.n_decode, 2);
  EXPECT_EQ(b.sampled, (std::vector<size_t>{1, 3, 0}));  // batch order
  EXPECT_EQ(b.logit_rows, (std::vector<int32_t>{0, 1, 3}));
}

// ---- the recipe ----------------------------------------------------------------------------

// Records each op as text.
class recording_executor final : public llama_executor {
 public:
  std::vector<std::string> ops;
  void embedding(llama_act, int64_t rows) override { ops.push_back("embedding " + std::to_string(rows)); }
  void rmsnorm(llama_act, llama_act, weight_id w, int64_t) override { ops.push_back("rmsnorm " + name(w)); }
  void add_rmsnorm(llama_act, llama_act, llama_act, weight_id w, int64_t) override {
    ops.push_back("add_rmsnorm " + name(w));
  }
  void matmul(llama_act, llama_act, weight_id w, int64_t rows) override {
    ops.push_back("matmul " + name(w) + " " + std::to_string(rows));
  }
  void rope(llama_act, int64_t, int64_t n_heads) override { ops.push_back("rope " + std::to_string(n_heads)); }
  void add_bias(llama_act, weight_id b, int64_t) override { ops.push_back("add_bias " + name(b)); }
  void head_rmsnorm(llama_act, weight_id w, int64_t, int64_t n_heads) override {
    ops.push_back("head_rmsnorm " + name(w) + " " + std::to_string(n_heads));
  }
  void kv_store(int64_t l, llama_act, llama_act, int64_t) override { ops.push_back("kv_store " + std::to_string(l)); }
  void attention(int64_t l, llama_act, llama_act) override { ops.push_back("attention " + std::to_string(l)); }
  void silu_mul(llama_act, llama_act, int64_t) override { ops.push_back("silu_mul"); }
  void all_reduce(llama_act, int64_t) override { ops.push_back("all_reduce"); }
  void gather_rows(llama_act, llama_act, int64_t n) override { ops.push_back("gather_rows " + std::to_string(n)); }

 private:
  static std::string name(weight_id w) {
    static const char* names[] = {"attn_norm", "wq",          "wk",     "wv", "wo", "ffn_norm", "w_gate", "w_up",
                                  "w_down",    "output_norm", "output", "bq", "bk", "bv",       "q_norm", "k_norm"};
    const bool global = w.which == llama_weight::output_norm || w.which == llama_weight::output;
    return std::string(names[(int)w.which]) + (global ? "" : std::to_string(w.layer));
  }
};

TEST(LlamaRecipe, TheLayerOrderWithFusedResidualAddsAndLogitsForSampledRowsOnly) {
  model_config c = test::small_config();
  c.n_layers = 2;
  recording_executor ex;
  llama_forward(ex, c, 5, 2);
  const std::string nh = std::to_string(c.n_heads), nkv = std::to_string(c.n_kv_heads);
  std::vector<std::string> want = {"embedding 5"};
  for (int l = 0; l < 2; ++l) {
    const std::string s = std::to_string(l);
    want.push_back(l == 0 ? "rmsnorm attn_norm0" : "add_rmsnorm attn_norm" + s);
    for (const std::string& op :
         {"matmul wq" + s + " 5", "matmul wk" + s + " 5", "matmul wv" + s + " 5", "rope " + nh, "rope " + nkv,
          "kv_store " + s, "attention " + s, "matmul wo" + s + " 5", std::string("all_reduce"),
          "add_rmsnorm ffn_norm" + s, "matmul w_gate" + s + " 5", "matmul w_up" + s + " 5", std::string("silu_mul"),
          "matmul w_down" + s + " 5", std::string("all_reduce")})
      want.push_back(op);
  }
  for (const char* op : {"add_rmsnorm output_norm", "gather_rows 2", "matmul output 2"}) want.push_back(op);
  EXPECT_EQ(ex.ops, want);

  recording_executor none;  // a step that samples nothing (a prefill chunk) computes no logits
  llama_forward(none, c, 5, 0);
  EXPECT_EQ(none.ops.back(), "all_reduce");
}

// Qwen2 adds its biases after the q/k/v projections; Qwen3 norms each head of q and k
// before RoPE; Llama does neither.
TEST(LlamaRecipe, QwenBiasesAndHeadNormsComeBetweenTheProjectionsAndRope) {
  model_config c = test::small_config();
  c.n_layers = 1;
  const std::string nh = std::to_string(c.n_heads), nkv = std::to_string(c.n_kv_heads);
  auto ops_between = [&](const model_config& cfg) {
    recording_executor ex;
    llama_forward(ex, cfg, 3, 1);
    const auto wv = std::find(ex.ops.begin(), ex.ops.end(), "matmul wv0 3");
    const auto rope = std::find(ex.ops.begin(), ex.ops.end(), "rope " + nh);
    return std::vector<std::string>(wv + 1, rope);
  };
  EXPECT_TRUE(ops_between(c).empty());
  model_config qwen2 = c;
  qwen2.qkv_bias = true;
  EXPECT_EQ(ops_between(qwen2), (std::vector<std::string>{"add_bias bq0", "add_bias bk0", "add_bias bv0"}));
  model_config qwen3 = c;
  qwen3.qk_norm = true;
  EXPECT_EQ(ops_between(qwen3),
            (std::vector<std::string>{"head_rmsnorm q_norm0 " + nh, "head_rmsnorm k_norm0 " + nkv}));
}

// ---- the CPU backend as executor -------------------------------------------------------------

// Counting variants that forward to the reference: one per op of the recipe.
int g_calls[TROUPE_OP_COUNT];
kernel_registry* g_ref;

template <typename Fn>
Fn ref_of(troupe_op op) {
  return reinterpret_cast<Fn>(g_ref->find(op, "ref")->fn);
}

template <troupe_op Op>
void count_matmul(const troupe_kctx* c, float* y, const float* x, const void* w, int64_t m, int64_t n, int64_t k) {
  ++g_calls[Op];
  ref_of<troupe_matmul_fn>(Op)(c, y, x, w, m, n, k);
}
template <troupe_op Op>
void count_embedding(const troupe_kctx* c, float* out, const void* t, const int32_t* ids, int64_t n, int64_t dim) {
  ++g_calls[Op];
  ref_of<troupe_embedding_fn>(Op)(c, out, t, ids, n, dim);
}
void count_rmsnorm(const troupe_kctx* c, float* out, const float* x, const float* w, int64_t r, int64_t d, float e) {
  ++g_calls[TROUPE_OP_RMSNORM];
  ref_of<troupe_rmsnorm_fn>(TROUPE_OP_RMSNORM)(c, out, x, w, r, d, e);
}
void count_add_rmsnorm(const troupe_kctx* c, float* out, float* x, const float* res, const float* w, int64_t r,
                       int64_t d, float e) {
  ++g_calls[TROUPE_OP_ADD_RMSNORM];
  ref_of<troupe_add_rmsnorm_fn>(TROUPE_OP_ADD_RMSNORM)(c, out, x, res, w, r, d, e);
}
void count_rope(const troupe_kctx* c, float* x, const int32_t* pos, int64_t n, int64_t h, int64_t hd, const float* f,
                int neox) {
  ++g_calls[TROUPE_OP_ROPE];
  ref_of<troupe_rope_fn>(TROUPE_OP_ROPE)(c, x, pos, n, h, hd, f, neox);
}
template <troupe_op Op>
void count_kv_store(const troupe_kctx* c, void* kp, void* vp, const float* k, const float* v, const int32_t* slots,
                    int64_t n, int64_t g, int64_t hd, int64_t bs) {
  ++g_calls[Op];
  ref_of<troupe_kv_store_fn>(Op)(c, kp, vp, k, v, slots, n, g, hd, bs);
}
void count_attention(const troupe_kctx* c, float* out, const float* q, const float* kp, const float* vp,
                     const int32_t* table, const int32_t* pos, int64_t n, int64_t h, int64_t g, int64_t hd, int64_t bs,
                     float scale, int64_t window) {
  ++g_calls[TROUPE_OP_ATTENTION];
  ref_of<troupe_attention_fn>(TROUPE_OP_ATTENTION)(c, out, q, kp, vp, table, pos, n, h, g, hd, bs, scale, window);
}
void count_attention_f16kv(const troupe_kctx* c, float* out, const float* q, const uint16_t* kp, const uint16_t* vp,
                           const int32_t* table, const int32_t* pos, int64_t n, int64_t h, int64_t g, int64_t hd,
                           int64_t bs, float scale, int64_t window) {
  ++g_calls[TROUPE_OP_ATTENTION_F16KV];
  ref_of<troupe_attention_f16kv_fn>(TROUPE_OP_ATTENTION_F16KV)(c, out, q, kp, vp, table, pos, n, h, g, hd, bs, scale,
                                                               window);
}
void count_silu_mul(const troupe_kctx* c, float* out, const float* g, const float* u, int64_t n) {
  ++g_calls[TROUPE_OP_SILU_MUL];
  ref_of<troupe_silu_mul_fn>(TROUPE_OP_SILU_MUL)(c, out, g, u, n);
}
void count_argmax(const troupe_kctx* c, int32_t* ids, float* lp, const float* logits, int64_t r, int64_t n, float t) {
  ++g_calls[TROUPE_OP_ARGMAX];
  ref_of<troupe_argmax_fn>(TROUPE_OP_ARGMAX)(c, ids, lp, logits, r, n, t);
}

template <typename F>
troupe_kernel_variant counting(troupe_op op, F* fn) {
  return {op, TROUPE_BACKEND_CPU, "test.count", reinterpret_cast<void (*)(void)>(fn)};
}

TEST(CpuBackendRecipe, EveryOpRunsTheSelectedVariant) {
  for (bool kv_f16 : {false, true}) {
    kernel_registry reg;
    for (const auto& v : kern::ref::variants()) reg.add(v);
    g_ref = &reg;
    for (const auto& v :
         {counting(TROUPE_OP_MATMUL_F32, count_matmul<TROUPE_OP_MATMUL_F32>),
          counting(TROUPE_OP_EMBEDDING_F32, count_embedding<TROUPE_OP_EMBEDDING_F32>),
          counting(TROUPE_OP_RMSNORM, count_rmsnorm), counting(TROUPE_OP_ADD_RMSNORM, count_add_rmsnorm),
          counting(TROUPE_OP_ROPE, count_rope), counting(TROUPE_OP_KV_STORE, count_kv_store<TROUPE_OP_KV_STORE>),
          counting(TROUPE_OP_KV_STORE_F16, count_kv_store<TROUPE_OP_KV_STORE_F16>),
          counting(TROUPE_OP_ATTENTION, count_attention), counting(TROUPE_OP_ATTENTION_F16KV, count_attention_f16kv),
          counting(TROUPE_OP_SILU_MUL, count_silu_mul), counting(TROUPE_OP_ARGMAX, count_argmax)})
      reg.add(v);  // added last: the default for the CPU
    std::fill(std::begin(g_calls), std::end(g_calls), 0);

    test::random_model m(test::small_config());
    cpu_backend_options o;
    o.block_size = 4;
    o.kv_bytes = 64 << 10;
    o.kv_f16 = kv_f16;
    cpu_backend b(m, reg, o);
    step_plan p;
    p.seqs.push_back(work({1, 2, 3}, 0, {0}, true));
    b.step(p);
    for (troupe_op op :
         {TROUPE_OP_MATMUL_F32, TROUPE_OP_EMBEDDING_F32, TROUPE_OP_RMSNORM, TROUPE_OP_ADD_RMSNORM, TROUPE_OP_ROPE,
          kv_f16 ? TROUPE_OP_KV_STORE_F16 : TROUPE_OP_KV_STORE,
          kv_f16 ? TROUPE_OP_ATTENTION_F16KV : TROUPE_OP_ATTENTION, TROUPE_OP_SILU_MUL, TROUPE_OP_ARGMAX})
      EXPECT_GT(g_calls[op], 0) << op_name(op) << (kv_f16 ? " (f16 KV)" : " (f32 KV)") << " did not run its variant";
    EXPECT_NE(b.describe().find("kv_store" + std::string(kv_f16 ? "_f16" : "") + "=test.count"), std::string::npos)
        << b.describe();
    g_ref = nullptr;
  }
}

// A registry with no CPU variant for the model's weight type (or KV type): the backend
// says which op, backend and dtype at construction, not at the first step.
TEST(CpuBackendRecipe, AMissingVariantForAWeightOrKvTypeNamesOpBackendAndDtype) {
  test::random_model m(test::small_config());
  for (troupe_op missing : {TROUPE_OP_MATMUL_F32, TROUPE_OP_KV_STORE_F16}) {
    kernel_registry reg;
    for (const auto& v : kern::ref::variants())
      if (v.op != missing) reg.add(v);
    EXPECT_FALSE(reg.supports(missing, TROUPE_BACKEND_CPU, missing == TROUPE_OP_MATMUL_F32 ? TROUPE_F32 : TROUPE_F16));
    cpu_backend_options o;
    o.kv_bytes = 64 << 10;
    o.kv_f16 = true;
    try {
      cpu_backend b(m, reg, o);
      FAIL() << "built without a variant of " << op_name(missing);
    } catch (const error& e) {
      const std::string what = e.what();
      EXPECT_EQ(e.kind(), error_kind::unimplemented);
      EXPECT_NE(what.find(missing == TROUPE_OP_MATMUL_F32 ? "op matmul" : "op kv_store"), std::string::npos) << what;
      EXPECT_NE(what.find("cpu"), std::string::npos) << what;
      EXPECT_NE(what.find(missing == TROUPE_OP_MATMUL_F32 ? "dtype f32" : "dtype f16"), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace troupe
