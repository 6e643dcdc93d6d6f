// Every CUDA kernel against the CPU reference (kernels/ref), on random and awkward shapes.
// Tolerances, |got - ref| <= atol + rtol * |ref|, inputs of magnitude ~1:
//   f32 paths (rmsnorm, rope, silu_mul, add, f32 attention, f32 GEMM, quantized matvec):
//     atol 1e-4..1e-3, rtol 1e-4..1e-3 (summation order only);
//   fp16 GEMM paths (activations rounded to f16): atol 2e-2, rtol 1e-2;
//   bf16 GEMM paths: atol 8e-2, rtol 2e-2;
//   f16 KV attention: atol 2e-3, rtol 1e-2 against a reference fed the same f16-rounded KV;
//   embedding: exact.
// The first two tests need no GPU; the others skip without one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>

#include "cuda_test_support.h"
#include "kernels/check.h"
#include "kernels/cuda/attention_decode.cuh"
#include "kernels/cuda/attention_prefill.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/sampling.cuh"
#include "kernels/ref/dtype.h"
#include "kernels/ref/ref.h"
#include "src/engine/sampler.h"
#include "troupe/error.h"

namespace troupe {
namespace {

using test::all_close;
using test::dev_vec;
using test::encode;

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

struct registries {
  registries() {
    for (const auto& v : kern::ref::variants()) cpu.add(v);
    kern::cuda::register_all(gpu);
  }
  template <typename Fn>
  Fn ref(troupe_op op) const {
    return cpu.get<Fn>(op, TROUPE_BACKEND_CPU);
  }
  template <typename Fn>
  Fn cuda(troupe_op op) const {
    return gpu.get<Fn>(op, TROUPE_BACKEND_CUDA);
  }
  kernel_registry cpu, gpu;
  troupe_kctx host_ctx{};
  troupe_kctx dev_ctx{};  // default stream
};

// ---- no GPU needed ------------------------------------------------------------------

TEST(CudaRegistry, EveryOpHasACudaV1VariantBesideTheReference) {
  kernel_registry r;
  for (const auto& v : kern::ref::variants()) r.add(v);
  kern::cuda::register_all(r);
  for (int op = 0; op < TROUPE_OP_COUNT; ++op) {
    const auto o = static_cast<troupe_op>(op);
    const troupe_kernel_variant* v = r.find(o, "cuda.v1");
    ASSERT_NE(v, nullptr) << op_name(o);
    EXPECT_EQ(v->backend, TROUPE_BACKEND_CUDA);
    EXPECT_STREQ(r.selected(o, TROUPE_BACKEND_CUDA).name, "cuda.v1");
    EXPECT_STREQ(r.selected(o, TROUPE_BACKEND_CPU).name, "ref") << "CUDA variants must not displace the CPU default";
  }
}

TEST(CudaAvailable, SaysWhyInsteadOfCrashing) {
  std::string why = "unset";
  const bool ok = kern::cuda::cuda_available(&why);
  if (ok) {
    EXPECT_TRUE(why.empty());
  } else {
    EXPECT_FALSE(why.empty());
    EXPECT_NE(why, "unset");
  }
  std::string why_far;
  EXPECT_FALSE(kern::cuda::cuda_available(&why_far, 1 << 20)) << "device 1048576 cannot exist";
  EXPECT_FALSE(why_far.empty());
}

TEST(CudaPlugin, ExampleLoadsAndRegistersItsCudaVariant) {
  kernel_registry r;
  for (const auto& v : kern::ref::variants()) r.add(v);
  kern::cuda::register_all(r);
  r.load_plugin(TROUPE_EXAMPLE_CUDA_PLUGIN);
  const troupe_kernel_variant* v = r.find(TROUPE_OP_SILU_MUL, "example_cuda.silu_mul");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->backend, TROUPE_BACKEND_CUDA);
  r.select(TROUPE_OP_SILU_MUL, "example_cuda.silu_mul");
  EXPECT_STREQ(r.selected(TROUPE_OP_SILU_MUL, TROUPE_BACKEND_CUDA).name, "example_cuda.silu_mul");

  TROUPE_REQUIRE_CUDA();  // running it needs a device
  const int64_t n = 5000;
  const auto g = random_floats(n, 61, -20.0f, 20.0f), u = random_floats(n, 62);
  std::vector<float> ref(n);
  r.get<troupe_silu_mul_fn>(TROUPE_OP_SILU_MUL, TROUPE_BACKEND_CPU)(nullptr, ref.data(), g.data(), u.data(), n);
  dev_vec<float> dg(g), du(u), out(n);
  const troupe_kctx ctx{};
  r.get<troupe_silu_mul_fn>(TROUPE_OP_SILU_MUL, TROUPE_BACKEND_CUDA)(&ctx, out.get(), dg.get(), du.get(), n);
  EXPECT_TRUE(all_close(out.download(), ref, 1e-6f, 1e-5f));
}

// ---- matmul ---------------------------------------------------------------------------

struct mm_case {
  int64_t m, n, k;
};

void check_matmul(troupe_dtype dtype, troupe_op op, float atol, float rtol, const std::vector<mm_case>& cases) {
  registries R;
  uint32_t seed = 1;
  for (const mm_case& c : cases) {
    const auto x = random_floats(c.m * c.k, seed++);
    const auto wf = random_floats(c.n * c.k, seed++);
    const auto w = encode(wf, dtype, c.n, c.k);
    std::vector<float> ref(c.m * c.n);
    R.ref<troupe_matmul_fn>(op)(&R.host_ctx, ref.data(), x.data(), w.data(), c.m, c.n, c.k);
    dev_vec<float> dx(x), dy(c.m * c.n);
    dev_vec<uint8_t> dw(w);
    R.cuda<troupe_matmul_fn>(op)(&R.dev_ctx, dy.get(), dx.get(), dw.get(), c.m, c.n, c.k);
    // the quantized matvec (m <= 8) reads f32 activations: f32 accuracy
    const bool exact_path = dtype == TROUPE_F32 || ((dtype == TROUPE_Q8_0 || dtype == TROUPE_Q4_0) && c.m <= 8);
    EXPECT_TRUE(all_close(dy.download(), ref, exact_path ? 1e-3f : atol, exact_path ? 1e-3f : rtol))
        << op_name(op) << " m=" << c.m << " n=" << c.n << " k=" << c.k;
  }
}

const std::vector<mm_case> k_dense_cases = {{1, 1, 1},    {1, 7, 13},   {3, 17, 64},
                                            {8, 100, 96}, {9, 70, 130}, {33, 257, 160}};
const std::vector<mm_case> k_quant_cases = {{1, 1, 32},   {1, 33, 64},   {2, 17, 96}, {8, 100, 256},
                                            {9, 70, 128}, {40, 65, 160}, {1, 5, 4096}};

TEST(CudaKernels, MatmulF32) {
  TROUPE_REQUIRE_CUDA();
  check_matmul(TROUPE_F32, TROUPE_OP_MATMUL_F32, 1e-3f, 1e-3f, k_dense_cases);
}
TEST(CudaKernels, MatmulF16) {
  TROUPE_REQUIRE_CUDA();
  check_matmul(TROUPE_F16, TROUPE_OP_MATMUL_F16, 2e-2f, 1e-2f, k_dense_cases);
}
TEST(CudaKernels, MatmulBf16) {
  TROUPE_REQUIRE_CUDA();
  check_matmul(TROUPE_BF16, TROUPE_OP_MATMUL_BF16, 8e-2f, 2e-2f, k_dense_cases);
}
TEST(CudaKernels, MatmulQ8_0) {
  TROUPE_REQUIRE_CUDA();
  check_matmul(TROUPE_Q8_0, TROUPE_OP_MATMUL_Q8_0, 2e-2f, 1e-2f, k_quant_cases);
}
TEST(CudaKernels, MatmulQ4_0) {
  TROUPE_REQUIRE_CUDA();
  check_matmul(TROUPE_Q4_0, TROUPE_OP_MATMUL_Q4_0, 2e-2f, 1e-2f, k_quant_cases);
}

// ---- embedding --------------------------------------------------------------------------

TEST(CudaKernels, EmbeddingEveryTableTypeIsExact) {
  TROUPE_REQUIRE_CUDA();
  registries R;
  const int64_t vocab = 37, dim = 96;  // dim a multiple of 32 for the quantized tables
  const std::vector<int32_t> ids = {0, 36, 5, 5, 17};
  const std::pair<troupe_dtype, troupe_op> types[] = {{TROUPE_F32, TROUPE_OP_EMBEDDING_F32},
                                                      {TROUPE_F16, TROUPE_OP_EMBEDDING_F16},
                                                      {TROUPE_BF16, TROUPE_OP_EMBEDDING_BF16},
                                                      {TROUPE_Q8_0, TROUPE_OP_EMBEDDING_Q8_0},
                                                      {TROUPE_Q4_0, TROUPE_OP_EMBEDDING_Q4_0}};
  for (auto [dtype, op] : types) {
    const auto table = encode(random_floats(vocab * dim, 7), dtype, vocab, dim);
    std::vector<float> ref(ids.size() * dim);
    R.ref<troupe_embedding_fn>(op)(&R.host_ctx, ref.data(), table.data(), ids.data(), (int64_t)ids.size(), dim);
    dev_vec<uint8_t> dt(table);
    dev_vec<int32_t> di(ids);
    dev_vec<float> out(ids.size() * dim);
    R.cuda<troupe_embedding_fn>(op)(&R.dev_ctx, out.get(), dt.get(), di.get(), (int64_t)ids.size(), dim);
    EXPECT_TRUE(all_close(out.download(), ref, 0.0f, 0.0f)) << op_name(op);
  }
}

// ---- rmsnorm, rope, silu_mul, add -------------------------------------------------------

TEST(CudaKernels, RmsnormAndFusedAddRmsnorm) {
  TROUPE_REQUIRE_CUDA();
  registries R;
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {3, 7}, {5, 64}, {2, 4099}, {4, 8192}};
  for (auto [rows, dim] : shapes) {
    const auto x = random_floats(rows * dim, 11, -3.0f, 3.0f);
    const auto res = random_floats(rows * dim, 12);
    const auto w = random_floats(dim, 13, 0.5f, 1.5f);
    std::vector<float> ref(rows * dim);
    R.ref<troupe_rmsnorm_fn>(TROUPE_OP_RMSNORM)(&R.host_ctx, ref.data(), x.data(), w.data(), rows, dim, 1e-5f);
    dev_vec<float> dx(x), dw(w), out(rows * dim), dres(res);
    R.cuda<troupe_rmsnorm_fn>(TROUPE_OP_RMSNORM)(&R.dev_ctx, out.get(), dx.get(), dw.get(), rows, dim, 1e-5f);
    EXPECT_TRUE(all_close(out.download(), ref, 1e-5f, 1e-4f)) << "rmsnorm " << rows << "x" << dim;

    // fused: x += residual, out = rmsnorm(x)
    std::vector<float> sum(rows * dim), ref2(rows * dim);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = x[i] + res[i];
    R.ref<troupe_rmsnorm_fn>(TROUPE_OP_RMSNORM)(&R.host_ctx, ref2.data(), sum.data(), w.data(), rows, dim, 1e-5f);
    kern::cuda::invoke_add_rmsnorm(out.get(), dx.get(), dres.get(), dw.get(), rows, dim, 1e-5f, nullptr);
    EXPECT_TRUE(all_close(out.download(), ref2, 1e-5f, 1e-4f)) << "add_rmsnorm out " << rows << "x" << dim;
    EXPECT_TRUE(all_close(dx.download(), sum, 0.0f, 0.0f)) << "add_rmsnorm writes x + residual back";
  }
}

TEST(CudaKernels, RopeBothPairLayouts) {
  TROUPE_REQUIRE_CUDA();
  registries R;
  const std::vector<int32_t> positions = {0, 1, 7, 511, 100000};
  for (int64_t head_dim : {2, 8, 64, 128})
    for (int neox : {0, 1}) {
      const int64_t n_tokens = (int64_t)positions.size(), n_heads = 3;
      auto x = random_floats(n_tokens * n_heads * head_dim, 21);
      std::vector<float> inv(head_dim / 2);
      for (int64_t i = 0; i < head_dim / 2; ++i) inv[i] = std::pow(10000.0f, -2.0f * (float)i / (float)head_dim);
      dev_vec<float> dx(x), dinv(inv);
      dev_vec<int32_t> dpos(positions);
      R.ref<troupe_rope_fn>(TROUPE_OP_ROPE)(&R.host_ctx, x.data(), positions.data(), n_tokens, n_heads, head_dim,
                                            inv.data(), neox);
      R.cuda<troupe_rope_fn>(TROUPE_OP_ROPE)(&R.dev_ctx, dx.get(), dpos.get(), n_tokens, n_heads, head_dim, dinv.get(),
                                             neox);
      EXPECT_TRUE(all_close(dx.download(), x, 2e-5f, 1e-4f)) << "head_dim " << head_dim << " neox " << neox;
    }
}

TEST(CudaKernels, SiluMulAndAddInPlace) {
  TROUPE_REQUIRE_CUDA();
  registries R;
  for (int64_t n : {1, 3, 1000, 70001}) {
    const auto g = random_floats(n, 31, -30.0f, 30.0f), u = random_floats(n, 32);
    std::vector<float> ref(n), ref_add(n);
    R.ref<troupe_silu_mul_fn>(TROUPE_OP_SILU_MUL)(&R.host_ctx, ref.data(), g.data(), u.data(), n);
    R.ref<troupe_add_fn>(TROUPE_OP_ADD)(&R.host_ctx, ref_add.data(), g.data(), u.data(), n);
    dev_vec<float> dg(g), du(u), da(g);
    R.cuda<troupe_silu_mul_fn>(TROUPE_OP_SILU_MUL)(&R.dev_ctx, dg.get(), dg.get(), du.get(), n);  // out aliases gate
    R.cuda<troupe_add_fn>(TROUPE_OP_ADD)(&R.dev_ctx, da.get(), da.get(), du.get(), n);
    EXPECT_TRUE(all_close(dg.download(), ref, 1e-6f, 1e-5f)) << "silu_mul n=" << n;
    EXPECT_TRUE(all_close(da.download(), ref_add, 0.0f, 0.0f)) << "add n=" << n;
  }
}

// ---- attention ----------------------------------------------------------------------------

struct attn_case {
  int64_t n_tokens, start, n_heads, n_kv_heads, head_dim, block_size;
};

// A pool of n_blocks random blocks and a shuffled block table covering `len` positions.
struct paged_kv {
  paged_kv(int64_t len, int64_t block_size, int64_t kv_dim, uint32_t seed) {
    const int64_t need = (len + block_size - 1) / block_size;
    n_blocks = need + 3;
    table.resize(need);
    std::vector<int32_t> ids(n_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
    std::copy(ids.begin(), ids.begin() + need, table.begin());
    k = random_floats(n_blocks * block_size * kv_dim, seed + 1);
    v = random_floats(n_blocks * block_size * kv_dim, seed + 2);
  }
  int64_t n_blocks;
  std::vector<int32_t> table;
  std::vector<float> k, v;
};

TEST(CudaKernels, AttentionPrefillAndDecodeThroughTheAbi) {
  TROUPE_REQUIRE_CUDA();
  registries R;
  const attn_case cases[] = {
      {1, 0, 1, 1, 8, 16},      // first token: one key
      {1, 300, 8, 2, 64, 16},   // decode, 2 partitions, grouped-query
      {1, 1000, 4, 4, 128, 7},  // decode, 4 partitions, odd block size
      {1, 77, 2, 1, 256, 16},   // decode, widest head
      {2, 0, 2, 2, 8, 16},      // smallest prefill
      {17, 0, 8, 2, 64, 16},    // a tile and a bit
      {40, 25, 4, 1, 128, 5},   // chunk after cached prefix, multi-query
      {33, 3, 2, 2, 96, 16},    // head_dim not a power of two
      {20, 10, 2, 1, 256, 16},  // widest head: > 48 KiB of shared memory
  };
  uint32_t seed = 100;
  for (const attn_case& c : cases) {
    const int64_t kv_dim = c.n_kv_heads * c.head_dim, len = c.start + c.n_tokens;
    paged_kv kv(len, c.block_size, kv_dim, seed += 10);
    const auto q = random_floats(c.n_tokens * c.n_heads * c.head_dim, seed + 5);
    std::vector<int32_t> pos(c.n_tokens);
    std::iota(pos.begin(), pos.end(), (int32_t)c.start);
    const float scale = 1.0f / std::sqrt((float)c.head_dim);
    std::vector<float> ref(q.size());
    R.ref<troupe_attention_fn>(TROUPE_OP_ATTENTION)(&R.host_ctx, ref.data(), q.data(), kv.k.data(), kv.v.data(),
                                                    kv.table.data(), pos.data(), c.n_tokens, c.n_heads, c.n_kv_heads,
                                                    c.head_dim, c.block_size, scale, 0);
    dev_vec<float> dq(q), dk(kv.k), dv(kv.v), out(q.size());
    dev_vec<int32_t> dt(kv.table), dp(pos);
    R.cuda<troupe_attention_fn>(TROUPE_OP_ATTENTION)(&R.dev_ctx, out.get(), dq.get(), dk.get(), dv.get(), dt.get(),
                                                     dp.get(), c.n_tokens, c.n_heads, c.n_kv_heads, c.head_dim,
                                                     c.block_size, scale, 0);
    EXPECT_TRUE(all_close(out.download(), ref, 1e-4f, 1e-3f))
        << "tokens " << c.n_tokens << " start " << c.start << " heads " << c.n_heads << "/" << c.n_kv_heads
        << " head_dim " << c.head_dim << " block " << c.block_size;
  }
}

std::vector<float> round_f16(std::vector<float> v) {
  for (float& x : v) x = kern::f16_to_f32(kern::f32_to_f16(x));
  return v;
}

std::vector<uint16_t> to_f16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = kern::f32_to_f16(v[i]);
  return h;
}

// Several sequences of different lengths in one launch, f16 KV, a shared pool: decode
// with a fixed partition count larger than needed (as a replayed graph does), and
// varlen prefill tiles.
TEST(CudaKernels, BatchedDecodeAndPrefillWithF16Kv) {
  TROUPE_REQUIRE_CUDA();
  registries R;
  const int64_t n_heads = 8, n_kv = 2, D = 64, bs = 16, kv_dim = n_kv * D;
  const std::vector<int64_t> lens = {1, 15, 16, 17, 700, 257};  // keys per sequence (decode: position + 1)
  const int64_t bt_stride = 50;
  const int64_t n_blocks = 6 * bt_stride;
  auto k = round_f16(random_floats(n_blocks * bs * kv_dim, 5)), v = round_f16(random_floats(n_blocks * bs * kv_dim, 6));
  std::vector<int32_t> ids(n_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(3));
  std::vector<int32_t> tables(lens.size() * bt_stride);
  std::copy(ids.begin(), ids.begin() + (int64_t)tables.size(), tables.begin());
  const float scale = 1.0f / std::sqrt((float)D);
  dev_vec<uint16_t> dk(to_f16(k)), dv(to_f16(v));
  dev_vec<int32_t> dtables(tables);

  // decode: one query per sequence, with full attention and a sliding window of 100 keys
  // (shorter than some sequences, across partitions)
  for (const int64_t window : {0, 100}) {
    const int64_t S = (int64_t)lens.size();
    const auto q = random_floats(S * n_heads * D, 8);
    std::vector<int32_t> pos(S);
    std::vector<float> ref(q.size());
    for (int64_t s = 0; s < S; ++s) {
      pos[s] = (int32_t)lens[s] - 1;
      R.ref<troupe_attention_fn>(TROUPE_OP_ATTENTION)(&R.host_ctx, &ref[s * n_heads * D], &q[s * n_heads * D], k.data(),
                                                      v.data(), &tables[s * bt_stride], &pos[s], 1, n_heads, n_kv, D,
                                                      bs, scale, window);
    }
    for (int parts : {kern::cuda::decode_partitions(700), 8}) {
      dev_vec<float> dq(q), out(q.size());
      dev_vec<int32_t> dpos(pos);
      dev_vec<uint8_t> ws(kern::cuda::attention_decode_workspace_bytes(S, n_heads, D, parts));
      kern::cuda::invoke_attention_decode(out.get(), dq.get(), dk.get(), dv.get(), true, dtables.get(), bt_stride,
                                          dpos.get(), S, n_heads, n_kv, D, bs, scale, window, parts, ws.get(), nullptr);
      EXPECT_TRUE(all_close(out.download(), ref, 2e-3f, 1e-2f))
          << "decode, partitions " << parts << " window " << window;
    }
  }
  // prefill: sequence s feeds its last n_new[s] tokens, full and under a window of 20 keys
  for (const int64_t window : {0, 20}) {
    const std::vector<int64_t> n_new = {1, 15, 3, 17, 40, 2};
    std::vector<kern::cuda::prefill_tile> tiles;
    std::vector<int32_t> pos;
    int64_t T = 0;
    for (size_t s = 0; s < lens.size(); ++s) {
      kern::cuda::append_prefill_tiles(tiles, (int32_t)s, (int32_t)T, (int32_t)n_new[s]);
      for (int64_t i = 0; i < n_new[s]; ++i) pos.push_back((int32_t)(lens[s] - n_new[s] + i));
      T += n_new[s];
    }
    const auto q = random_floats(T * n_heads * D, 9);
    std::vector<float> ref(q.size());
    for (size_t s = 0, t0 = 0; s < lens.size(); t0 += n_new[s], ++s)
      R.ref<troupe_attention_fn>(TROUPE_OP_ATTENTION)(&R.host_ctx, &ref[t0 * n_heads * D], &q[t0 * n_heads * D],
                                                      k.data(), v.data(), &tables[s * bt_stride], &pos[t0], n_new[s],
                                                      n_heads, n_kv, D, bs, scale, window);
    dev_vec<float> dq(q), out(q.size());
    dev_vec<int32_t> dpos(pos);
    std::vector<uint8_t> tile_bytes(tiles.size() * sizeof(kern::cuda::prefill_tile));
    std::memcpy(tile_bytes.data(), tiles.data(), tile_bytes.size());
    dev_vec<uint8_t> dtiles(tile_bytes);
    kern::cuda::invoke_attention_prefill(out.get(), dq.get(), dk.get(), dv.get(), true, dtables.get(), bt_stride,
                                         dpos.get(), reinterpret_cast<const kern::cuda::prefill_tile*>(dtiles.get()),
                                         (int64_t)tiles.size(), n_heads, n_kv, D, bs, scale, window, nullptr);
    EXPECT_TRUE(all_close(out.download(), ref, 2e-3f, 1e-2f)) << "varlen prefill, window " << window;
  }
}

// ---- sampling ---------------------------------------------------------------------------------

TEST(CudaKernels, ArgmaxTakesTheFirstOfTiesAndReportsTheLogprob) {
  TROUPE_REQUIRE_CUDA();
  for (int64_t vocab : {1, 5, 1000, 128256}) {
    const int64_t rows = 3;
    auto logits = random_floats(rows * vocab, 41, -10.0f, 10.0f);
    if (vocab > 10) logits[1 * vocab + 3] = logits[1 * vocab + 9] = 50.0f;  // tie in row 1
    dev_vec<float> dl(logits), lp(rows);
    dev_vec<int32_t> ids(rows);
    kern::cuda::invoke_argmax(ids.get(), lp.get(), dl.get(), rows, vocab, nullptr);
    const auto got = ids.download();
    const auto got_lp = lp.download();
    for (int64_t r = 0; r < rows; ++r) {
      const float* l = &logits[r * vocab];
      const int64_t best = std::max_element(l, l + vocab) - l;  // first of ties
      EXPECT_EQ(got[r], best) << "vocab " << vocab << " row " << r;
      double z = 0.0;
      for (int64_t i = 0; i < vocab; ++i) z += std::exp((double)l[i] - l[best]);
      EXPECT_NEAR(got_lp[r], -std::log(z), 1e-4) << "vocab " << vocab << " row " << r;
    }
  }
}

// The device draw follows src/engine/sampler.cpp: same filters, same walk from the highest logit,
// same uniform per (seed, tokens generated). Equal ids unless a draw lands within float
// rounding of a boundary, which these seeds do not.
TEST(CudaKernels, SamplingDrawsWhatTheCpuSamplerDraws) {
  TROUPE_REQUIRE_CUDA();
  const int64_t vocab = 3000;
  struct setting {
    float temperature;
    int32_t top_k;
    float top_p, min_p;
  };
  const setting settings[] = {{1.0f, 0, 1.0f, 0.0f},   {0.7f, 40, 1.0f, 0.0f}, {1.3f, 0, 0.9f, 0.0f},
                              {0.8f, 50, 0.8f, 0.05f}, {1.0f, 1, 1.0f, 0.0f},  {2.0f, 0, 1.0f, 0.2f}};
  const int64_t rows = 24;
  const auto logits = random_floats(rows * vocab, 51, -8.0f, 8.0f);
  std::vector<kern::cuda::sample_row_params> params(rows);
  std::vector<seq_work> works(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const setting& s = settings[r % std::size(settings)];
    seq_work& w = works[r];
    w.sampling.temperature = s.temperature;
    w.sampling.top_k = s.top_k;
    w.sampling.top_p = s.top_p;
    w.sampling.min_p = s.min_p;
    w.sampling.seed = 1000 + (uint64_t)r;
    w.history = {1, 2, 3};
    w.n_prompt = 2;
    params[r] = {s.temperature, s.top_k, s.top_p, s.min_p, (float)sampling_uniform(w.sampling.seed, 1)};
  }
  std::vector<uint8_t> pbytes(params.size() * sizeof(params[0]));
  std::memcpy(pbytes.data(), params.data(), pbytes.size());
  dev_vec<float> dl(logits), lp(rows);
  dev_vec<int32_t> ids(rows);
  dev_vec<uint8_t> dp(pbytes);
  kern::cuda::invoke_sample(ids.get(), lp.get(), dl.get(), reinterpret_cast<kern::cuda::sample_row_params*>(dp.get()),
                            rows, vocab, nullptr);
  const auto got = ids.download();
  const auto got_lp = lp.download();
  for (int64_t r = 0; r < rows; ++r) {
    const seq_output want = sample_next(std::span<const float>(&logits[r * vocab], vocab), works[r]);
    EXPECT_EQ(got[r], want.token) << "row " << r;
    EXPECT_NEAR(got_lp[r], want.logprob, 1e-3) << "row " << r;
  }
}

// ---- `troupe kernels check|bench` on the device ------------------------------------------

TEST(CudaVariantDevice, NoUsableDeviceIsAClearError) {
  std::string why;
  if (kern::cuda::cuda_available(&why)) GTEST_SKIP() << "a CUDA device is present: nothing to check here";
  try {
    kern::cuda::make_variant_device(0);
    FAIL() << "expected troupe::error";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::unimplemented);
    EXPECT_EQ(std::string(e.what()), why);
  }
}

// Every op's cuda.v1 through the same cases and bounds as the CPU variants (kernels/check.h).
TEST(CudaCheck, EveryCudaV1VariantPassesTheKernelCheck) {
  TROUPE_REQUIRE_CUDA();
  kernel_registry r;
  for (const auto& v : kern::ref::variants()) r.add(v);
  kern::cuda::register_all(r);
  auto dev = kern::cuda::make_variant_device(0);
  kern::check_options opt;
  opt.variant = "cuda.v1";
  opt.cuda = dev.get();
  const auto results = kern::check_variants(r, nullptr, opt);
  ASSERT_EQ(results.size(), (size_t)TROUPE_OP_COUNT);
  for (const auto& res : results) {
    std::printf("  %-15s %-8s cases %3d  worst |err| %.3g  worst err/allowed %.3f  (%s)\n",
                std::string(op_name(res.op)).c_str(), res.variant.c_str(), res.cases, res.max_abs_err, res.worst_ratio,
                kern::tolerance_summary(res.op, TROUPE_BACKEND_CUDA).c_str());
    EXPECT_FALSE(res.skipped);
    EXPECT_GT(res.cases, 0);
    EXPECT_TRUE(res.pass) << op_name(res.op) << ": " << res.first_failure;
  }
}

TEST(CudaCheck, ExamplePluginVariantPassesTheKernelCheck) {
  TROUPE_REQUIRE_CUDA();
  kernel_registry r;
  for (const auto& v : kern::ref::variants()) r.add(v);
  r.load_plugin(TROUPE_EXAMPLE_CUDA_PLUGIN);
  auto dev = kern::cuda::make_variant_device(0);
  kern::check_options opt;
  opt.variant = "example_cuda.silu_mul";
  opt.cuda = dev.get();
  const auto results = kern::check_variants(r, nullptr, opt);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_FALSE(results[0].skipped);
  EXPECT_TRUE(results[0].pass) << results[0].first_failure;
}

TEST(CudaBench, EventTimingAndTheDevicesRoofline) {
  TROUPE_REQUIRE_CUDA();
  registries R;
  auto dev = kern::cuda::make_variant_device(0);
  const int64_t n = 1 << 20;
  std::vector<float> a(n, 1.0f), b(n, 2.0f);
  auto* da = static_cast<float*>(dev->upload(a.data(), n * 4));
  auto* db = static_cast<const float*>(dev->upload(b.data(), n * 4));
  auto add = R.cuda<troupe_add_fn>(TROUPE_OP_ADD);
  const double s = dev->seconds_per_call([&] { add(dev->ctx(), da, da, db, n); });
  EXPECT_GT(s, 0.0);
  EXPECT_LT(s, 0.1) << "a 4 MiB add should take microseconds";
  dev->download(a.data(), da, n * 4);
  EXPECT_GT(a[0], 2.0f);  // added to itself at least the warm-up and two timed calls
  dev->release();
  const kern::roofline roof = kern::cuda::device_roofline(0);
  EXPECT_GT(roof.mem_gb_s, 0.0) << roof.source;
  EXPECT_FALSE(roof.source.empty());
  std::printf("  roofline: %s\n", kern::describe(roof).c_str());
}

}  // namespace
}  // namespace troupe
