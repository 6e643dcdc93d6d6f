// Megatron sharding: the sum over ranks of each rank's MLP and attention-output partial
// products equals the unsharded product (what the all-reduces compute).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/ref/dtype.h"
#include "kernels/ref/ref.h"
#include "src/engine/shard.h"
#include "identity_comm.h"
#include "troupe/error.h"
#include "troupe/kernel_registry.h"

namespace {

struct tiny_model {
  troupe::model_config cfg;
  troupe::model_weights w;
  std::vector<std::vector<float>> store;

  tiny_model(int64_t n_heads, int64_t n_kv, int64_t hidden) {
    cfg.dim = 32;
    cfg.n_layers = 1;
    cfg.n_heads = n_heads;
    cfg.n_kv_heads = n_kv;
    cfg.head_dim = 8;
    cfg.hidden_dim = hidden;
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0, 1);
    auto mat = [&](const char* name, int64_t rows, int64_t cols) {
      store.emplace_back(rows * cols);
      for (auto& v : store.back()) v = nd(rng);
      return troupe::tensor_view{name, store.back().data(), TROUPE_F32, rows, cols};
    };
    troupe::layer_weights l;
    l.wq = mat("wq", n_heads * 8, cfg.dim);
    l.wk = mat("wk", n_kv * 8, cfg.dim);
    l.wv = mat("wv", n_kv * 8, cfg.dim);
    l.wo = mat("wo", cfg.dim, n_heads * 8);
    l.w_gate = mat("w_gate", hidden, cfg.dim);
    l.w_up = mat("w_up", hidden, cfg.dim);
    l.w_down = mat("w_down", cfg.dim, hidden);
    w.layers.push_back(l);
  }
};

std::vector<float> matvec(const troupe::tensor_view& t, const std::vector<float>& x) {
  troupe::kernel_registry reg;
  for (const auto& v : troupe::kern::ref::variants()) reg.add(v);
  std::vector<float> y(t.rows);
  reg.get<troupe_matmul_fn>(TROUPE_OP_MATMUL_F32)(nullptr, y.data(), x.data(), t.data, 1, t.rows, t.cols);
  return y;
}

std::vector<float> slice(const std::vector<float>& v, int64_t from, int64_t n) {
  return {v.begin() + from, v.begin() + from + n};
}

}  // namespace

TEST(Shard, RowAndColumnSplitsSumToTheFullProduct) {
  for (int tp : {2, 4}) {
    tiny_model m(8, 4, 48);
    std::vector<float> x(m.cfg.dim), attn(8 * 8), act(48);
    std::mt19937 rng(tp);
    std::normal_distribution<float> nd(0, 1);
    for (auto& v : x) v = nd(rng);
    for (auto& v : attn) v = nd(rng);
    for (auto& v : act) v = nd(rng);
    const auto full_o = matvec(m.w.layers[0].wo, attn);
    const auto full_down = matvec(m.w.layers[0].w_down, act);
    const auto full_q = matvec(m.w.layers[0].wq, x);
    std::vector<float> sum_o(m.cfg.dim, 0), sum_down(m.cfg.dim, 0);
    for (int r = 0; r < tp; ++r) {
      auto s = troupe::tp::make_shard(m.cfg, m.w, r, tp);
      EXPECT_EQ(s.config.n_heads, 8 / tp);
      EXPECT_EQ(s.config.hidden_dim, 48 / tp);
      const auto& l = s.weights.layers[0];
      // Column-parallel: this rank's query heads are a slice of the full projection.
      EXPECT_EQ(matvec(l.wq, x), slice(full_q, s.first_head * 8, s.config.n_heads * 8));
      // Row-parallel: partial products that the all-reduce sums.
      auto po = matvec(l.wo, slice(attn, s.first_head * 8, s.config.n_heads * 8));
      auto pd = matvec(l.w_down, slice(act, r * s.config.hidden_dim, s.config.hidden_dim));
      for (int i = 0; i < m.cfg.dim; ++i) {
        sum_o[i] += po[i];
        sum_down[i] += pd[i];
      }
    }
    for (int i = 0; i < m.cfg.dim; ++i) {
      EXPECT_NEAR(sum_o[i], full_o[i], 1e-4f * (1 + std::fabs(full_o[i])));
      EXPECT_NEAR(sum_down[i], full_down[i], 1e-4f * (1 + std::fabs(full_down[i])));
    }
  }
}

TEST(Shard, FewerKvHeadsThanRanksAreReplicated) {
  tiny_model m(8, 2, 48);
  for (int r = 0; r < 4; ++r) {
    auto s = troupe::tp::make_shard(m.cfg, m.w, r, 4);
    EXPECT_EQ(s.config.n_kv_heads, 1);
    EXPECT_EQ(s.first_kv_head, r / 2);  // ranks 0,1 share KV head 0; ranks 2,3 KV head 1
    // This rank's query heads map to its KV head under the global grouping.
    EXPECT_EQ(s.first_head / (m.cfg.n_heads / m.cfg.n_kv_heads), s.first_kv_head);
  }
}

TEST(Shard, IndivisibleSplitsAreClearErrors) {
  tiny_model m(8, 4, 50);
  try {
    troupe::tp::make_shard(m.cfg, m.w, 0, 4);
    FAIL();
  } catch (const troupe::error& e) {
    EXPECT_EQ(e.field(), "hidden_dim");
    EXPECT_NE(std::string(e.what()).find("50"), std::string::npos) << e.what();
  }
  tiny_model m3(6, 3, 48);
  EXPECT_THROW(troupe::tp::make_shard(m3.cfg, m3.w, 0, 4), troupe::error);
  EXPECT_THROW(troupe::tp::make_shard(m3.cfg, m3.w, 4, 4), troupe::error);
}

// What the CPU and the CUDA backends both check before running a shard: the shard and the
// communicator come together, for the same rank and size.
namespace {

TEST(ShardWiring, ShardAndCommunicatorComeTogetherForTheSameRank) {
  tiny_model m(4, 2, 16);
  const troupe::tp::shard s1 = troupe::tp::make_shard(m.cfg, m.w, 1, 2);
  troupe::test::identity_comm c1(1, 2), c0(0, 2), c1of4(1, 4);
  EXPECT_NO_THROW(troupe::tp::check_shard_and_comm(nullptr, nullptr, "cpu backend"));
  EXPECT_NO_THROW(troupe::tp::check_shard_and_comm(&s1, &c1, "cpu backend"));
  auto message = [](const troupe::tp::shard* s, const troupe::communicator* c) {
    try {
      troupe::tp::check_shard_and_comm(s, c, "cuda backend");
    } catch (const troupe::error& e) {
      EXPECT_EQ(e.kind(), troupe::error_kind::failed);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(&s1, nullptr).find("cuda backend: tensor parallel needs both"), std::string::npos);
  EXPECT_NE(message(nullptr, &c1).find("got only the communicator"), std::string::npos);
  EXPECT_NE(message(&s1, &c0).find("shard is rank 1 of 2 but the communicator is test comm, rank 0"), std::string::npos)
      << message(&s1, &c0);
  EXPECT_NE(message(&s1, &c1of4).find("rank 1 of 2"), std::string::npos);
}

}  // namespace
