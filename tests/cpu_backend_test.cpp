// The CPU backend's batched, paged forward pass against a plain single-sequence forward
// pass on random weights: token by token, prefilled at once, in chunks, with several
// sequences in one plan, and with block sizes that do not divide the prompt.
#include <gtest/gtest.h>

#include <numeric>

#include "kernels/ref/ref.h"
#include "random_model.h"
#include "src/engine/cpu_backend.h"
#include "troupe/error.h"

namespace troupe {
namespace {

using test::naive_forward;
using test::random_model;
using test::small_config;

struct fixture {
  explicit fixture(model_config c, int32_t block_size = 4, int64_t max_batch = 64, int64_t swap_bytes = 0,
                   bool kv_f16 = false)
      : model(std::move(c)) {
    for (const auto& v : kern::ref::variants()) registry.add(v);
    cpu_backend_options o;
    o.block_size = block_size;
    o.kv_bytes = 64 << 10;
    o.swap_bytes = swap_bytes;
    o.kv_f16 = kv_f16;
    o.max_batch_tokens = max_batch;
    backend = std::make_unique<cpu_backend>(model, registry, o);
  }
  // Blocks for a sequence of n positions, taken from the front of the pool.
  std::vector<int32_t> blocks(int64_t n) {
    std::vector<int32_t> t;
    for (int64_t p = 0; p < n; p += backend->block_size()) t.push_back(next_block++);
    return t;
  }
  random_model model;
  kernel_registry registry;
  std::unique_ptr<cpu_backend> backend;
  int32_t next_block = 0;
};

seq_work work(uint64_t id, std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> table, bool sample = true) {
  seq_work w;
  w.seq_id = id;
  w.tokens = std::move(tokens);
  w.start_pos = start;
  w.block_table = std::move(table);
  w.sample = sample;
  return w;
}

void expect_close(std::span<const float> got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-4 + 1e-4 * std::fabs(want[i])) << what << " logit " << i;
}

std::vector<int32_t> prompt(int n, int32_t seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (seed * 7 + i * 13) % 64;
  return t;
}

void check_token_by_token(model_config c) {
  fixture f(std::move(c));
  const auto toks = prompt(11, 1);
  const auto want = naive_forward(f.model, toks);
  const auto table = f.blocks((int64_t)toks.size());
  for (size_t p = 0; p < toks.size(); ++p) {
    step_plan plan;
    plan.seqs.push_back(work(1, {toks[p]}, (int32_t)p, table));
    const step_result r = f.backend->step(plan);
    ASSERT_EQ(r.outputs.size(), 1u);
    expect_close(f.backend->last_logits(0), want[p], "position " + std::to_string(p));
  }
}

TEST(CpuBackend, DecodeTokenByTokenMatchesPlainForward) { check_token_by_token(small_config()); }

TEST(CpuBackend, NeoxRopeAndMultiQueryMatchPlainForward) {
  model_config c = small_config();
  c.rope_neox = true;
  c.n_kv_heads = 1;
  check_token_by_token(c);
}

TEST(CpuBackend, Llama3RopeScalingMatchesPlainForward) {
  model_config c = small_config();
  c.head_dim = 16;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.rope_theta = 500000.0f;
  c.scaling.enabled = true;
  c.scaling.factor = 8.0f;
  c.scaling.original_max_position = 64;  // small, so that all three bands of frequencies occur
  check_token_by_token(c);
}

TEST(CpuBackend, PrefillInChunksMatchesPlainForward) {
  for (int32_t block_size : {1, 3, 4, 16}) {
    for (int chunk : {1, 2, 5, 13}) {
      fixture f(small_config(), block_size);
      const auto toks = prompt(13, 2);
      const auto want = naive_forward(f.model, toks);
      const auto table = f.blocks((int64_t)toks.size());
      for (int start = 0; start < (int)toks.size(); start += chunk) {
        const int end = std::min<int>(start + chunk, (int)toks.size());
        step_plan plan;
        plan.seqs.push_back(work(7, {toks.begin() + start, toks.begin() + end}, start, table));
        f.backend->step(plan);
        expect_close(f.backend->last_logits(0), want[end - 1],
                     "block " + std::to_string(block_size) + " chunk " + std::to_string(chunk));
      }
    }
  }
}

TEST(CpuBackend, SeveralSequencesInOnePlanMatchSingleRuns) {
  fixture f(small_config(), 3);
  const std::vector<std::vector<int32_t>> prompts = {prompt(9, 3), prompt(4, 4), prompt(14, 5)};
  std::vector<std::vector<std::vector<float>>> want;
  std::vector<std::vector<int32_t>> tables;
  for (const auto& p : prompts) {
    want.push_back(naive_forward(f.model, p));
    tables.push_back(f.blocks((int64_t)p.size()));
  }
  // step 1: all three prefill their first 3 tokens, the second does not sample
  step_plan a;
  for (size_t i = 0; i < prompts.size(); ++i)
    a.seqs.push_back(work(i, {prompts[i].begin(), prompts[i].begin() + 3}, 0, tables[i], i != 1));
  const step_result ra = f.backend->step(a);
  ASSERT_EQ(ra.outputs.size(), 3u);
  EXPECT_EQ(ra.outputs[1].token, -1);
  EXPECT_EQ(ra.outputs[1].seq_id, 1u);
  expect_close(f.backend->last_logits(0), want[0][2], "seq 0 step 1");
  expect_close(f.backend->last_logits(1), want[2][2], "seq 2 step 1");
  // step 2: the rest of each prompt at once, different lengths (one decode-sized)
  step_plan b;
  b.seqs.push_back(work(2, {prompts[2].begin() + 3, prompts[2].end()}, 3, tables[2]));
  b.seqs.push_back(work(1, {prompts[1].begin() + 3, prompts[1].end()}, 3, tables[1]));
  b.seqs.push_back(work(0, {prompts[0].begin() + 3, prompts[0].end()}, 3, tables[0]));
  const step_result rb = f.backend->step(b);
  EXPECT_EQ(rb.outputs[0].seq_id, 2u);
  expect_close(f.backend->last_logits(0), want[2].back(), "seq 2 step 2");
  expect_close(f.backend->last_logits(1), want[1].back(), "seq 1 step 2");
  expect_close(f.backend->last_logits(2), want[0].back(), "seq 0 step 2");
}

TEST(CpuBackend, CopiedPrefixBlockServesAnotherSequence) {
  fixture f(small_config(), 4);
  const auto toks = prompt(6, 6);
  const auto want = naive_forward(f.model, toks);
  step_plan a;
  a.seqs.push_back(work(1, {toks.begin(), toks.begin() + 4}, 0, {5}));
  f.backend->step(a);
  f.backend->copy_block(5, 9);
  step_plan b;  // the copy holds positions 0..3; the rest goes to a fresh block
  b.seqs.push_back(work(2, {toks.begin() + 4, toks.end()}, 4, {9, 2}));
  f.backend->step(b);
  expect_close(f.backend->last_logits(0), want.back(), "after copy_block");
  EXPECT_THROW(f.backend->copy_block(0, (int32_t)f.backend->kv_blocks()), error);
}

// Preemption by swap on the worker: blocks out to the host pool, overwritten on the device
// by another sequence, back into other blocks; the next step sees the same KV.
TEST(CpuBackend, SwappedOutBlocksComeBackIntact) {
  fixture f(small_config(), 4, 64, 16 << 10);
  ASSERT_GE(f.backend->host_blocks(), 3);
  const auto toks = prompt(10, 3);
  const auto want = naive_forward(f.model, toks);
  step_plan a;
  a.seqs.push_back(work(1, {toks.begin(), toks.begin() + 9}, 0, {4, 6, 1}, false));
  f.backend->step(a);
  step_plan out;  // the swap alone, then another sequence overwrites blocks 4, 6 and 1
  out.swap_out = {{4, 2}, {6, 0}, {1, 1}};
  out.seqs.push_back(work(2, prompt(12, 9), 0, {6, 1, 4}, false));
  f.backend->step(out);
  step_plan in;  // back into other blocks, and the next token computed at once
  in.swap_in = {{7, 2}, {3, 0}, {8, 1}};
  in.seqs.push_back(work(1, {toks[9]}, 9, {7, 3, 8}));
  f.backend->step(in);
  expect_close(f.backend->last_logits(0), want.back(), "after swap out and in");

  step_plan bad;
  bad.swap_out = {{0, (int32_t)f.backend->host_blocks()}};
  try {
    f.backend->step(bad);
    ADD_FAILURE() << "accepted a host slot outside the pool";
  } catch (const error& e) {
    EXPECT_EQ(e.field(), "swap_out");
  }
  bad.swap_out.clear();
  bad.swap_in = {{(int32_t)f.backend->kv_blocks(), 0}};
  EXPECT_THROW(f.backend->step(bad), error);
  fixture none(small_config(), 4);
  EXPECT_EQ(none.backend->host_blocks(), 0);
  try {
    none.backend->step(in);
    ADD_FAILURE() << "a backend without a host pool accepted a swap";
  } catch (const error& e) {
    EXPECT_EQ(e.field(), "swap_in");
  }
}

// The f16 KV pool: twice the tokens in the same bytes, logits near the exact forward pass
// (each key and value rounded to 11 significant bits), and the same answers after its
// blocks were copied and swapped out and back (byte copies of half-size elements).
TEST(CpuBackend, F16KvPoolHoldsTwiceTheTokensNearTheExactLogits) {
  fixture f32(small_config()), f16(small_config(), 4, 64, 16 << 10, true);
  EXPECT_EQ(f16.backend->kv_blocks(), 2 * f32.backend->kv_blocks());
  EXPECT_NE(f16.backend->describe().find("KV f16"), std::string::npos) << f16.backend->describe();
  const auto toks = prompt(10, 4);
  const auto want = naive_forward(f16.model, toks);
  const auto table = f16.blocks((int64_t)toks.size());
  double worst = 0.0, worst_f32 = 0.0;
  std::vector<std::vector<float>> got;
  for (size_t p = 0; p < toks.size(); ++p) {
    step_plan plan;
    plan.seqs.push_back(work(1, {toks[p]}, (int32_t)p, table));
    f16.backend->step(plan);
    f32.backend->step(plan);
    const auto l16 = f16.backend->last_logits(0), l32 = f32.backend->last_logits(0);
    got.emplace_back(l16.begin(), l16.end());
    for (size_t i = 0; i < want[p].size(); ++i) {
      worst = std::max(worst, (double)std::fabs(l16[i] - want[p][i]) / (1.0 + std::fabs(want[p][i])));
      worst_f32 = std::max(worst_f32, (double)std::fabs(l32[i] - want[p][i]) / (1.0 + std::fabs(want[p][i])));
    }
  }
  EXPECT_LT(worst, 2e-2) << "f16 KV logits far from the exact forward pass";
  EXPECT_GT(worst, worst_f32) << "the f16 pool rounded nothing: is it f32?";

  // Blocks 0..2 hold positions 0..9: copy block 0, swap 1 and 2 out and into other blocks,
  // then the last token again must give the same logits as before.
  f16.backend->copy_block(table[0], 10);
  step_plan out;
  out.swap_out = {{table[1], 0}, {table[2], 1}};
  f16.backend->step(out);
  step_plan in;
  in.swap_in = {{12, 0}, {11, 1}};
  in.seqs.push_back(work(1, {toks.back()}, 9, {10, 12, 11}));
  f16.backend->step(in);
  expect_close(f16.backend->last_logits(0), got.back(), "f16 pool after copy and swap");
}

TEST(CpuBackend, InvalidPlansAreRejectedNamingTheSequence) {
  fixture f(small_config(), 4, 8);
  auto rejects = [&](seq_work w, const std::string& field) {
    step_plan plan;
    plan.seqs.push_back(std::move(w));
    try {
      f.backend->step(plan);
      ADD_FAILURE() << "accepted a plan with a bad " << field;
    } catch (const error& e) {
      EXPECT_EQ(e.kind(), error_kind::failed);
      EXPECT_EQ(e.field(), field);
      EXPECT_NE(std::string(e.what()).find("seq 42"), std::string::npos) << e.what();
    }
  };
  rejects(work(42, {1, 2, 3}, 2, {0}), "block_table");  // positions 2..4 need 2 blocks
  rejects(work(42, {1}, 0, {(int32_t)f.backend->kv_blocks()}), "block_table");
  rejects(work(42, {1}, 0, {-1}), "block_table");
  rejects(work(42, {64}, 0, {0}), "tokens");
  rejects(work(42, {}, 0, {0}), "tokens");
  rejects(work(42, {1}, -1, {0}), "start_pos");
  seq_work bad_temp = work(42, {1}, 0, {0});
  bad_temp.sampling.temperature = -1.0f;
  rejects(bad_temp, "sampling");
  step_plan big;
  big.seqs.push_back(work(42, std::vector<int32_t>(9, 1), 0, {0, 1, 2}));
  EXPECT_THROW(f.backend->step(big), error);  // more than max_batch_tokens
}

TEST(CpuBackend, MisShapedWeightIsRejectedByName) {
  random_model m(small_config());
  m.mutable_weights().layers[1].wk.rows = 8;
  kernel_registry reg;
  for (const auto& v : kern::ref::variants()) reg.add(v);
  cpu_backend_options o;
  o.kv_bytes = 1 << 20;
  try {
    cpu_backend b(m, reg, o);
    ADD_FAILURE() << "accepted a mis-shaped weight";
  } catch (const error& e) {
    EXPECT_EQ(e.field(), "tensor blk.1.wk");
  }
}

}  // namespace
}  // namespace troupe
