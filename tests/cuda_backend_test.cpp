// The CUDA backend against the CPU backend (itself checked against plain forward passes and
// golden files): the same plans through both, logits and tokens compared step by step.
// Tolerances on logits: dense f32 weights + f32 KV: atol 1e-3, rtol 1e-3 (summation order);
// dense f16 weights + f16 KV: atol 0.1, rtol 0.02 (stories260K logits are ~10 in magnitude).
// Greedy ids must be identical in both modes.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "cuda_test_support.h"
#include "kernels/ref/ref.h"
#include "random_model.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/cuda/cuda_backend.h"
#include "test_support.h"
#include "troupe/error.h"

namespace troupe {
namespace {

using test::all_close;

struct tolerance {
  float atol, rtol;
};
constexpr tolerance k_f32{1e-3f, 1e-3f};
constexpr tolerance k_f16{0.1f, 0.02f};

cuda_backend_options cuda_opts(bool f16, int32_t block_size, bool graphs = true) {
  cuda_backend_options o;
  o.block_size = block_size;
  o.kv_blocks = 512;
  o.kv_f16 = f16;
  o.dense_type = f16 ? TROUPE_F16 : TROUPE_F32;
  o.cuda_graphs = graphs;
  o.max_batch_tokens = 128;
  o.max_seqs = 8;
  return o;
}

// One model through both backends.
struct both {
  both(const model_file& m, const cuda_backend_options& o) {
    for (const auto& v : kern::ref::variants()) registry.add(v);
    kern::cuda::register_all(registry);
    cpu_backend_options c;
    c.block_size = o.block_size;
    c.kv_bytes = 8 << 20;
    c.max_batch_tokens = o.max_batch_tokens;
    c.swap_bytes = o.swap_bytes > 0 ? 8 << 20 : 0;
    cpu = std::make_unique<cpu_backend>(m, registry, c);
    gpu = std::make_unique<cuda_backend>(m, registry, o);
  }
  // Runs the plan on both; checks every sampled sequence's logits and token.
  step_result step(const step_plan& plan, tolerance tol, const std::string& what, bool same_tokens = true) {
    const step_result a = cpu->step(plan);
    const step_result b = gpu->step(plan);
    EXPECT_EQ(a.outputs.size(), b.outputs.size()) << what;
    for (size_t i = 0, j = 0; i < plan.seqs.size() && i < b.outputs.size(); ++i) {
      EXPECT_EQ(a.outputs[i].seq_id, b.outputs[i].seq_id) << what;
      if (!plan.seqs[i].sample) {
        EXPECT_EQ(b.outputs[i].token, -1) << what;
        continue;
      }
      const auto want = cpu->last_logits(j);
      EXPECT_TRUE(all_close(gpu->last_logits(j), std::vector<float>(want.begin(), want.end()), tol.atol, tol.rtol))
          << what << ": seq " << plan.seqs[i].seq_id;
      if (same_tokens) {
        EXPECT_EQ(a.outputs[i].token, b.outputs[i].token) << what << ": seq " << plan.seqs[i].seq_id;
      }
      if (a.outputs[i].token == b.outputs[i].token) {
        EXPECT_NEAR(a.outputs[i].logprob, b.outputs[i].logprob, 10 * tol.atol) << what;
      }
      ++j;
    }
    return b;
  }
  kernel_registry registry;
  std::unique_ptr<cpu_backend> cpu;
  std::unique_ptr<cuda_backend> gpu;
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

std::vector<int32_t> prompt(int n, int32_t seed, int32_t vocab) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (seed * 7 + i * 13) % vocab;
  return t;
}

// ---- runs without a GPU -------------------------------------------------------------------

TEST(CudaBackend, NoUsableDeviceIsAClearError) {
  std::string why;
  if (cuda_backend_available(&why)) GTEST_SKIP() << "a CUDA device is present: nothing to check here";
  test::random_model m(test::small_config());
  kernel_registry r;
  try {
    make_cuda_backend(m, r);
    FAIL() << "expected troupe::error";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::unimplemented);
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

// `troupe generate --backend cuda`: the greedy text of the CPU backend with a device, a
// clear error (exit 1, the reason) without one.
TEST(CudaBackend, GenerateCliRunsOrSaysWhy) {
  TROUPE_REQUIRE_MODELS();
  const std::string cmd = test::troupe_bin() + " generate --model " +
                          (test::models_dir() / "stories260K/stories260K.gguf").string() +
                          " --prompt 'Once upon a time' --max-tokens 16";
  std::string why;
  const auto gpu = test::run_command(cmd + " --backend cuda");
  if (!cuda_backend_available(&why)) {
    EXPECT_EQ(gpu.exit_code, 1) << gpu.out;
    EXPECT_NE(gpu.out.find("cuda backend: " + why), std::string::npos) << gpu.out;
    return;
  }
  // the generated ids in --json output (stderr, with its timestamps, left out)
  auto ids = [&](const std::string& backend) {
    const auto r = test::run_command("(" + cmd + " --json --backend " + backend + " 2>/dev/null)");
    EXPECT_EQ(r.exit_code, 0) << backend << ": " << r.out;
    const size_t at = r.out.find("\"ids\":");
    return at == std::string::npos ? r.out : r.out.substr(at, r.out.find(']', at) - at);
  };
  EXPECT_EQ(ids("cuda"), ids("cpu"));
}

// ---- stories260K, token by token, against the CPU backend and the golden ids ----------

std::vector<int32_t> golden_ids(const char* key) {
  std::ifstream in(test::models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
  std::string line;
  std::vector<int32_t> ids;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string k;
    ls >> k;
    if (k == key)
      for (int32_t id; ls >> id;) ids.push_back(id);
  }
  return ids;
}

void check_stories260k(bool f16) {
  const auto model = open_model((test::models_dir() / "stories260K/stories260K.gguf").string());
  both b(*model, cuda_opts(f16, 16));
  const auto prompt_ids = golden_ids("prompt_ids:");
  const auto want = golden_ids("generated_ids:");
  ASSERT_EQ(prompt_ids.size(), 5u);
  ASSERT_EQ(want.size(), 64u);
  const std::vector<int32_t> table = {4, 0, 9, 2, 7};  // 80 positions, scattered blocks
  std::vector<int32_t> generated;
  int32_t token = prompt_ids[0];
  for (int32_t pos = 0; pos < 68; ++pos) {
    step_plan plan;
    plan.step_id = (uint64_t)pos;
    plan.seqs.push_back(work(1, {token}, pos, table));
    const step_result r = b.step(plan, f16 ? k_f16 : k_f32, "position " + std::to_string(pos));
    token = pos + 1 < (int32_t)prompt_ids.size() ? prompt_ids[pos + 1] : r.outputs[0].token;
    if (pos + 1 >= (int32_t)prompt_ids.size()) generated.push_back(token);
  }
  EXPECT_EQ(generated, want) << (f16 ? "f16" : "f32") << " weights";
  EXPECT_GT(b.gpu->graph_replays(), 50) << "decode steps of one shape replay a captured graph";
}

TEST(CudaBackend, Stories260kF32MatchesCpuAndGoldenIds) {
  TROUPE_REQUIRE_MODELS();
  TROUPE_REQUIRE_CUDA();
  check_stories260k(false);
}

TEST(CudaBackend, Stories260kF16MatchesCpuAndGoldenIds) {
  TROUPE_REQUIRE_MODELS();
  TROUPE_REQUIRE_CUDA();
  check_stories260k(true);
}

// The whole prompt at once (prefill path), then decode, both ways.
TEST(CudaBackend, Stories260kPrefillThenDecode) {
  TROUPE_REQUIRE_MODELS();
  TROUPE_REQUIRE_CUDA();
  const auto model = open_model((test::models_dir() / "stories260K/stories260K.gguf").string());
  both b(*model, cuda_opts(false, 16));
  const auto p = golden_ids("prompt_ids:");
  const std::vector<int32_t> table = {3, 1, 4, 5, 9};
  step_plan plan;
  plan.seqs.push_back(work(1, p, 0, table));
  int32_t token = b.step(plan, k_f32, "prefill").outputs[0].token;
  for (int32_t pos = (int32_t)p.size(); pos < 40; ++pos) {
    step_plan d;
    d.seqs.push_back(work(1, {token}, pos, table));
    token = b.step(d, k_f32, "decode " + std::to_string(pos)).outputs[0].token;
  }
}

// ---- random models: batching, chunked prefill, GQA, neox, sampling ---------------------------

model_config wide_config(bool neox) {
  model_config c = test::small_config();
  c.dim = 128;
  c.n_heads = 4;
  c.n_kv_heads = 1;  // multi-query
  c.head_dim = 32;
  c.hidden_dim = 96;
  c.vocab_size = 300;
  c.max_seq_len = 600;  // decode reaches 2 attention partitions
  c.rope_neox = neox;
  return c;
}

// Re-encodes every matrix of the model (not the norms) as `dtype`; the buffers live in `keep`.
void reencode(test::random_model& m, troupe_dtype dtype, std::vector<std::vector<uint8_t>>& keep) {
  auto redo = [&](tensor_view& t) {
    const std::vector<float> f(static_cast<const float*>(t.data), static_cast<const float*>(t.data) + t.rows * t.cols);
    keep.push_back(test::encode(f, dtype, t.rows, t.cols));
    t.data = keep.back().data();
    t.dtype = dtype;
  };
  model_weights& w = m.mutable_weights();
  keep.reserve(2 + 7 * w.layers.size());  // views point into these: no reallocation
  redo(w.tok_embd);
  redo(w.output);
  for (layer_weights& L : w.layers)
    for (tensor_view* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) redo(*t);
}

// weights: how the model file stores its matrices (f32, or re-encoded q8_0 / q4_0);
// dense: what the CUDA backend converts dense weights to; f16_kv: the KV pool type.
// Tolerances: f32 everywhere k_f32 and equal tokens; otherwise logits only (a near tie
// may flip a token): f16 k_f16, bf16 0.3 / 5%, quantized (the prefill GEMM reads f16
// activations) 0.05 / 2%.
void check_mixed_batches(const model_config& c, int32_t block_size, troupe_dtype weights, troupe_dtype dense,
                         bool f16_kv) {
  test::random_model m(c);
  std::vector<std::vector<uint8_t>> keep;
  if (weights != TROUPE_F32) reencode(m, weights, keep);
  cuda_backend_options o = cuda_opts(f16_kv, block_size);
  o.dense_type = dense;
  both b(m, o);
  const bool exact = weights == TROUPE_F32 && dense == TROUPE_F32 && !f16_kv;
  tolerance tol = exact ? k_f32 : k_f16;
  if (dense == TROUPE_BF16) tol = {0.3f, 0.05f};
  if (weights == TROUPE_Q8_0 || weights == TROUPE_Q4_0) tol = {0.05f, 0.02f};
  const int32_t V = (int32_t)c.vocab_size;
  auto blocks = [&](int first, int n) {
    std::vector<int32_t> t;
    for (int i = 0; i < n; ++i) t.push_back(first + 3 * i);  // interleaved ids
    return t;
  };
  const int bpp = (int)((c.max_seq_len + block_size - 1) / block_size);
  const auto ta = blocks(0, bpp), tb = blocks(1, bpp), tc = blocks(2, bpp);
  const auto pa = prompt(37, 1, V), pc = prompt(5, 3, V);
  // step 1: A prefills 20, B feeds 1 token, C prefills 5 without sampling
  step_plan s1;
  s1.seqs.push_back(work(10, {pa.begin(), pa.begin() + 20}, 0, ta));
  s1.seqs.push_back(work(11, {7}, 0, tb));
  s1.seqs.push_back(work(12, pc, 0, tc, false));
  b.step(s1, tol, "step 1", exact);
  // step 2: B decodes (listed first), A finishes its prompt, C decodes with temperature
  step_plan s2;
  s2.seqs.push_back(work(11, {9}, 1, tb));
  s2.seqs.push_back(work(10, {pa.begin() + 20, pa.end()}, 20, ta));
  seq_work wc = work(12, {4}, 5, tc);
  wc.sampling.temperature = 0.8f;
  wc.sampling.top_k = 20;
  wc.sampling.seed = 42;
  s2.seqs.push_back(wc);
  b.step(s2, tol, "step 2", exact);
  // decode all three to position ~560 (2 partitions), greedy
  int32_t pos_a = 37, pos_b = 2, pos_c = 6;
  for (int i = 0; i < 20; ++i) {
    step_plan d;
    d.seqs.push_back(work(10, {(int32_t)((i * 5) % V)}, pos_a++, ta));
    d.seqs.push_back(work(11, {(int32_t)((i * 3) % V)}, pos_b++, tb));
    d.seqs.push_back(work(12, {(int32_t)((i * 11) % V)}, pos_c++, tc));
    b.step(d, tol, "decode " + std::to_string(i), exact);
  }
  // a long prefill that jumps A to position 540, then decodes across the partition edge
  const auto pl = prompt(100, 9, V);
  for (int chunk = 0; chunk < 5; ++chunk) {
    step_plan p;
    p.seqs.push_back(work(10, pl, pos_a, ta, chunk == 4));
    pos_a += 100;
    b.step(p, tol, "long prefill " + std::to_string(chunk), exact);
  }
  for (int i = 0; i < 6; ++i) {
    step_plan d;
    d.seqs.push_back(work(10, {(int32_t)(i % V)}, pos_a++, ta));
    b.step(d, tol, "decode past 512 " + std::to_string(i), exact);
  }
}

TEST(CudaBackend, MixedBatchesMatchCpuF32) {
  TROUPE_REQUIRE_CUDA();
  check_mixed_batches(wide_config(false), 16, TROUPE_F32, TROUPE_F32, false);
  check_mixed_batches(wide_config(true), 5, TROUPE_F32, TROUPE_F32, false);
}

TEST(CudaBackend, MixedBatchesMatchCpuF16AndBf16) {
  TROUPE_REQUIRE_CUDA();
  check_mixed_batches(wide_config(false), 16, TROUPE_F32, TROUPE_F16, true);
  check_mixed_batches(wide_config(true), 16, TROUPE_F32, TROUPE_BF16, true);
}

TEST(CudaBackend, MixedBatchesMatchCpuQuantized) {
  TROUPE_REQUIRE_CUDA();
  check_mixed_batches(wide_config(false), 16, TROUPE_Q8_0, TROUPE_F16, false);
  check_mixed_batches(wide_config(true), 7, TROUPE_Q4_0, TROUPE_F16, true);
}

// Every op of the recipe goes through the registry: a non-built-in CUDA variant of matmul,
// attention and kv_store (here counting wrappers around cuda.v1) is the one that runs in a
// step, gives the built-in's tokens, and turns graphs off (it may sync or allocate).
int g_cuda_calls[TROUPE_OP_COUNT];
const kernel_registry* g_cuda_builtin;
template <typename Fn>
Fn builtin_of(troupe_op op) {
  return reinterpret_cast<Fn>(g_cuda_builtin->find(op, "cuda.v1")->fn);
}
void counting_matmul(const troupe_kctx* c, float* y, const float* x, const void* w, int64_t m, int64_t n, int64_t k) {
  ++g_cuda_calls[TROUPE_OP_MATMUL_F32];
  builtin_of<troupe_matmul_fn>(TROUPE_OP_MATMUL_F32)(c, y, x, w, m, n, k);
}
void counting_attention(const troupe_kctx* c, float* out, const float* q, const float* kp, const float* vp,
                        const int32_t* table, const int32_t* pos, int64_t n, int64_t h, int64_t g, int64_t hd,
                        int64_t bs, float scale, int64_t window) {
  ++g_cuda_calls[TROUPE_OP_ATTENTION];
  builtin_of<troupe_attention_fn>(TROUPE_OP_ATTENTION)(c, out, q, kp, vp, table, pos, n, h, g, hd, bs, scale, window);
}
void counting_kv_store(const troupe_kctx* c, void* kp, void* vp, const float* k, const float* v, const int32_t* slots,
                       int64_t n, int64_t g, int64_t hd, int64_t bs) {
  ++g_cuda_calls[TROUPE_OP_KV_STORE];
  builtin_of<troupe_kv_store_fn>(TROUPE_OP_KV_STORE)(c, kp, vp, k, v, slots, n, g, hd, bs);
}

TEST(CudaBackend, ASelectedVariantOfEveryKindOfOpRunsInTheStep) {
  TROUPE_REQUIRE_CUDA();
  test::random_model m(wide_config(false));
  kernel_registry builtin, counted;
  kern::cuda::register_all(builtin);
  kern::cuda::register_all(counted);
  g_cuda_builtin = &builtin;
  auto fn = [](auto* f) { return reinterpret_cast<void (*)(void)>(f); };
  counted.add({TROUPE_OP_MATMUL_F32, TROUPE_BACKEND_CUDA, "test.count", fn(counting_matmul)});
  counted.add({TROUPE_OP_ATTENTION, TROUPE_BACKEND_CUDA, "test.count", fn(counting_attention)});
  counted.add({TROUPE_OP_KV_STORE, TROUPE_BACKEND_CUDA, "test.count", fn(counting_kv_store)});
  std::fill(std::begin(g_cuda_calls), std::end(g_cuda_calls), 0);
  auto want = cuda_backend(m, builtin, cuda_opts(false, 16));
  auto got = cuda_backend(m, counted, cuda_opts(false, 16));
  EXPECT_NE(got.describe().find("matmul_f32=test.count"), std::string::npos) << got.describe();
  EXPECT_NE(got.describe().find("graphs off"), std::string::npos) << got.describe();
  step_plan p;
  p.seqs.push_back(work(1, prompt(9, 1, m.config().vocab_size), 0, {0}));
  p.seqs.push_back(work(2, {3}, 0, {1}));
  const step_result a = want.step(p), b = got.step(p);
  for (troupe_op op : {TROUPE_OP_MATMUL_F32, TROUPE_OP_ATTENTION, TROUPE_OP_KV_STORE})
    EXPECT_GT(g_cuda_calls[op], 0) << op_name(op) << " did not run the selected variant";
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  for (size_t i = 0; i < a.outputs.size(); ++i) EXPECT_EQ(a.outputs[i].token, b.outputs[i].token) << i;
  EXPECT_TRUE(all_close(got.last_logits(0), want.last_logits(0), 1e-4f, 1e-4f));
  g_cuda_builtin = nullptr;
}

TEST(CudaBackend, GraphsOffGivesTheSameTokens) {
  TROUPE_REQUIRE_CUDA();
  test::random_model m(wide_config(false));
  kernel_registry r;
  auto with = cuda_backend(m, r, cuda_opts(false, 16, true));
  auto without = cuda_backend(m, r, cuda_opts(false, 16, false));
  const std::vector<int32_t> table = {0, 1, 2, 3};
  int32_t token = 1;
  for (int32_t pos = 0; pos < 40; ++pos) {
    step_plan d;
    d.seqs.push_back(work(1, {token}, pos, table));
    const int32_t a = with.step(d).outputs[0].token, b = without.step(d).outputs[0].token;
    ASSERT_EQ(a, b) << "position " << pos;
    EXPECT_TRUE(all_close(with.last_logits(0), without.last_logits(0), 1e-5f, 1e-5f)) << "position " << pos;
    token = a;
  }
  EXPECT_GT(with.graph_replays(), 30);
  EXPECT_EQ(without.graph_replays(), 0);
}

TEST(CudaBackend, PenaltiesAndTopLogprobsFollowTheCpuSampler) {
  TROUPE_REQUIRE_CUDA();
  test::random_model m(wide_config(false));
  both b(m, cuda_opts(false, 16));
  seq_work w = work(1, prompt(12, 2, 300), 0, {5, 6});
  w.sampling.repetition_penalty = 1.3f;
  w.sampling.presence_penalty = 0.5f;
  w.sampling.top_logprobs = 5;
  w.history = w.tokens;
  w.n_prompt = 6;
  step_plan p;
  p.seqs.push_back(w);
  const step_result a = b.cpu->step(p);
  const step_result g = b.gpu->step(p);
  ASSERT_EQ(g.outputs[0].top.size(), 5u);
  EXPECT_EQ(a.outputs[0].token, g.outputs[0].token);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(a.outputs[0].top[i].id, g.outputs[0].top[i].id);
    EXPECT_NEAR(a.outputs[0].top[i].logprob, g.outputs[0].top[i].logprob, 1e-3);
  }
}

TEST(CudaBackend, CopiedBlockServesAnotherSequence) {
  TROUPE_REQUIRE_CUDA();
  test::random_model m(test::small_config());
  both b(m, cuda_opts(true, 4));
  const auto toks = prompt(6, 6, 64);
  step_plan a;
  a.seqs.push_back(work(1, {toks.begin(), toks.begin() + 4}, 0, {5}));
  b.step(a, k_f16, "prefix");
  b.cpu->copy_block(5, 9);
  b.gpu->copy_block(5, 9);
  step_plan c;  // the copy holds positions 0..3
  c.seqs.push_back(work(2, {toks.begin() + 4, toks.end()}, 4, {9, 2}));
  b.step(c, k_f16, "after copy_block");
  EXPECT_THROW(b.gpu->copy_block(0, (int32_t)b.gpu->kv_blocks()), error);
}

// Preemption by swap: blocks out to the pinned host pool, overwritten on the device by
// another sequence, back into other blocks; the next step's logits equal the CPU's.
TEST(CudaBackend, SwappedOutBlocksComeBackIntact) {
  TROUPE_REQUIRE_CUDA();
  test::random_model m(test::small_config());
  cuda_backend_options o = cuda_opts(true, 4);
  o.swap_bytes = 1 << 20;
  both b(m, o);
  ASSERT_GE(b.gpu->host_blocks(), 3);
  const auto toks = prompt(10, 3, 64);
  step_plan a;
  a.seqs.push_back(work(1, {toks.begin(), toks.begin() + 9}, 0, {4, 6, 1}, false));
  b.step(a, k_f16, "prefill");
  step_plan out;
  out.swap_out = {{4, 2}, {6, 0}, {1, 1}};
  out.seqs.push_back(work(2, prompt(12, 9, 64), 0, {6, 1, 4}, false));
  b.step(out, k_f16, "overwrite");
  step_plan in;
  in.swap_in = {{7, 2}, {3, 0}, {8, 1}};
  in.seqs.push_back(work(1, {toks[9]}, 9, {7, 3, 8}));
  b.step(in, k_f16, "after swap out and in");
  step_plan bad;
  bad.swap_in = {{0, (int32_t)b.gpu->host_blocks()}};
  EXPECT_THROW(b.gpu->step(bad), error);
}

TEST(CudaBackend, OutOfMemoryAndBadPlansAreClearErrors) {
  TROUPE_REQUIRE_CUDA();
  test::random_model m(test::small_config());
  kernel_registry r;
  cuda_backend_options o = cuda_opts(false, 16);
  o.kv_blocks = int64_t(1) << 40;  // petabytes of KV
  try {
    cuda_backend b(m, r, o);
    FAIL() << "expected an out-of-memory error";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::overloaded);
    EXPECT_NE(std::string(e.what()).find("asked"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("free"), std::string::npos) << e.what();
  }
  cuda_backend b(m, r, cuda_opts(false, 16));
  step_plan p;
  p.seqs.push_back(work(3, {1, 2, 3}, 0, {}));  // no blocks for its positions
  EXPECT_THROW(b.step(p), error);
  p.seqs[0] = work(3, {999}, 0, {0});  // token outside the vocabulary
  EXPECT_THROW(b.step(p), error);
  p.seqs[0] = work(3, {1}, 0, {0});  // still usable after rejected plans
  EXPECT_EQ(b.step(p).outputs.size(), 1u);
}

}  // namespace
}  // namespace troupe
