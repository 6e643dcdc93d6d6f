// The CUDA backend, set-up: device checks, weights uploaded once (dense ones converted to
// the GEMM type, quantized ones kept as they are), the KV pool, the scratch buffers.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention_decode.cuh"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/cuda.h"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/kv_cache.cuh"
#include "kernels/ref/dtype.h"
#include "src/engine/cuda/cuda_backend_impl.h"
#include "src/engine/rope_frequencies.h"
#include "src/engine/shard.h"
#include "troupe/communicator.h"
#include "troupe/error.h"

namespace troupe {

namespace {

[[noreturn]] void fail(const std::string& msg, const std::string& field = {}) {
  throw error(error_kind::failed, msg, field);
}

size_t align16(size_t b) { return (b + 15) / 16 * 16; }
size_t align256(size_t b) { return (b + 255) / 256 * 256; }
std::string mib(size_t b) { return std::to_string(b >> 20) + " MiB"; }

bool quantized(troupe_dtype t) { return t == TROUPE_Q8_0 || t == TROUPE_Q4_0; }

constexpr size_t k_staging_bytes = 64 << 20;  // host -> device conversion chunk
constexpr size_t k_cublas_ws_bytes = 32 << 20;

}  // namespace

bool cuda_backend_available(std::string* why, int device) { return kern::cuda::cuda_available(why, device); }

namespace {

// Tensor parallelism needs its shard and an NCCL communicator (the all-reduces take device
// pointers): checked before the device, so that a wrong wiring says so on any machine.
void check_tp_wiring(const cuda_backend_options& o) {
  tp::check_shard_and_comm(o.shard, o.comm, "cuda backend");
  if (o.comm && o.comm->size() > 1 && o.comm->describe().rfind("nccl", 0) != 0)
    throw error(error_kind::failed,
                "cuda backend: tensor parallel all-reduces device memory and needs an NCCL communicator, got " +
                    o.comm->describe(),
                "comm");
}

}  // namespace

cuda_backend::impl::impl(const model_file& m, const kernel_registry& r, const cuda_backend_options& o)
    : model(m), cfg(tp::config_of(m, o.shard)), registry(r), opt(o) {
  check_tp_wiring(opt);
  std::string why;
  if (!kern::cuda::cuda_available(&why, opt.device))
    throw error(error_kind::unimplemented, "cuda backend: " + why, "device");
  TROUPE_CUDA_CHECK(cudaSetDevice(opt.device));
  TROUPE_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));

  const model_config& c = cfg;
  if (c.dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.hidden_dim <= 0 ||
      c.vocab_size <= 0)
    fail(m.path() + ": config has a non-positive dimension");
  if (c.n_heads % c.n_kv_heads) fail(m.path() + ": n_heads is not a multiple of n_kv_heads", "n_kv_heads");
  if (c.head_dim % 2 || c.head_dim > kern::cuda::k_prefill_max_head_dim)
    fail(m.path() + ": head_dim " + std::to_string(c.head_dim) + " must be even and at most 256 for the CUDA kernels",
         "head_dim");
  if ((int64_t)tp::weights_of(m, opt.shard).layers.size() != c.n_layers)
    fail(m.path() + ": layer count differs from the config");
  if (opt.block_size <= 0 || opt.max_batch_tokens <= 0 || opt.max_seqs <= 0)
    fail("cuda backend: block_size, max_batch_tokens and max_seqs must be > 0");
  if (opt.dense_type != TROUPE_F16 && opt.dense_type != TROUPE_BF16 && opt.dense_type != TROUPE_F32)
    fail("cuda backend: dense_type must be f16, bf16 or f32", "dense_type");
  half_type = opt.dense_type == TROUPE_BF16 ? TROUPE_BF16 : TROUPE_F16;
  q_dim = c.n_heads * c.head_dim;
  kv_dim = c.n_kv_heads * c.head_dim;
  max_seq_len = c.max_seq_len > 0 ? c.max_seq_len : 4096;
  bt_stride = (max_seq_len + opt.block_size - 1) / opt.block_size;
  max_parts = kern::cuda::decode_partitions(max_seq_len);

  TROUPE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  try {  // a destructor does not run after a throwing constructor: release the handles here
    TROUPE_CUBLAS_CHECK(cublasCreate(&cublas));
    TROUPE_CUBLAS_CHECK(cublasSetStream(cublas, stream));
    load();
  } catch (...) {
    release();
    throw;
  }
  spdlog::info("cuda backend: {} (sm_{}{}), weights {}, KV pool {} blocks x {} tokens ({}, {} layers)", prop.name,
               prop.major, prop.minor, mib(weight_bytes), n_blocks, opt.block_size, mib(kv.size()), c.n_layers);
}

void cuda_backend::impl::load() {
  const model_config& c = cfg;
  const model_file& m = model;

  // ---- weights
  const model_weights& w = tp::weights_of(m, opt.shard);  // this rank's shard under TP
  auto check = [&](const tensor_view& t, int64_t rows, int64_t cols) {
    if (!t.data || t.rows != rows || t.cols != cols)
      fail(m.path() + ": tensor " + t.name + " is (" + std::to_string(t.rows) + ", " + std::to_string(t.cols) +
               "), expected (" + std::to_string(rows) + ", " + std::to_string(cols) + ")",
           "tensor " + t.name);
    return upload_matrix(t);
  };
  tok_embd = check(w.tok_embd, c.vocab_size, c.dim);
  for (const layer_weights& L : w.layers) {
    dev_layer d;
    d.attn_norm = upload_norm(L.attn_norm);
    d.wq = check(L.wq, q_dim, c.dim);
    d.wk = check(L.wk, kv_dim, c.dim);
    d.wv = check(L.wv, kv_dim, c.dim);
    d.wo = check(L.wo, c.dim, q_dim);
    if (c.qkv_bias) {
      d.bq = upload_norm(L.bq, q_dim);
      d.bk = upload_norm(L.bk, kv_dim);
      d.bv = upload_norm(L.bv, kv_dim);
    }
    if (c.qk_norm) {
      d.q_norm = upload_norm(L.q_norm, c.head_dim);
      d.k_norm = upload_norm(L.k_norm, c.head_dim);
    }
    d.ffn_norm = upload_norm(L.ffn_norm);
    d.w_gate = check(L.w_gate, c.hidden_dim, c.dim);
    d.w_up = check(L.w_up, c.hidden_dim, c.dim);
    d.w_down = check(L.w_down, c.dim, c.hidden_dim);
    layers.push_back(d);
  }
  output_norm = upload_norm(w.output_norm);
  output = w.output.data == w.tok_embd.data && w.output.dtype == w.tok_embd.dtype
               ? tok_embd  // tied
               : check(w.output, c.vocab_size, c.dim);
  const std::vector<float> freqs = rope_frequencies(c);
  device_buffer& fb = weight_memory.emplace_back(freqs.size() * sizeof(float), "RoPE frequencies");
  TROUPE_CUDA_CHECK(cudaMemcpy(fb.get(), freqs.data(), fb.size(), cudaMemcpyHostToDevice));
  inv_freq = fb.as<float>();
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream));

  pick_variants();
  // Rows sampled on the host (penalties, top alternatives) use the CPU argmax variant, as
  // the CPU backend does; a registry without one leaves the sampler's scalar loop.
  try {
    host_argmax = registry.get<troupe_argmax_fn>(TROUPE_OP_ARGMAX, TROUPE_BACKEND_CPU);
  } catch (const error&) {
    host_argmax = nullptr;
  }

  allocate_scratch();
  allocate_kv();
}

// Every op of the recipe through the registry: its CUDA variant for the op's form for each
// device weight type and for the KV type, else the built-in one; neither is a clear error
// naming the op, the backend and the dtype (kernel_registry::require).
void cuda_backend::impl::pick_variants() {
  kernel_registry builtin;
  for (const troupe_kernel_variant& v : kern::cuda::variants()) builtin.add(v);
  auto pick = [&](troupe_op op, troupe_dtype t) {
    const kernel_registry& from = registry.supports(op, TROUPE_BACKEND_CUDA, t) ? registry : builtin;
    const troupe_kernel_variant& v = from.require(op, TROUPE_BACKEND_CUDA, t);
    const bool is_builtin = v.fn == builtin.require(op, TROUPE_BACKEND_CUDA, t).fn;
    all_builtin = all_builtin && is_builtin;
    const std::string item = std::string(op_name(v.op)) + "=" + v.name;
    if (kernels_desc.find(item) == std::string::npos) kernels_desc += (kernels_desc.empty() ? "" : " ") + item;
    return std::pair(v.fn, is_builtin);
  };
  auto pick_matmul = [&](dev_weight& w) {
    const auto [fn, is_builtin] = pick(TROUPE_OP_MATMUL_F32, w.dtype);
    w.variant = is_builtin ? nullptr : reinterpret_cast<troupe_matmul_fn>(fn);
  };
  for (dev_layer& L : layers)
    for (dev_weight* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) pick_matmul(*w);
  pick_matmul(output);
  const troupe_dtype kv_type = opt.kv_f16 ? TROUPE_F16 : TROUPE_F32;
  embedding_fn = reinterpret_cast<troupe_embedding_fn>(pick(TROUPE_OP_EMBEDDING_F32, tok_embd.dtype).first);
  gather_fn = reinterpret_cast<troupe_embedding_fn>(pick(TROUPE_OP_EMBEDDING_F32, TROUPE_F32).first);
  rmsnorm_fn = reinterpret_cast<troupe_rmsnorm_fn>(pick(TROUPE_OP_RMSNORM, TROUPE_F32).first);
  add_rmsnorm_fn = reinterpret_cast<troupe_add_rmsnorm_fn>(pick(TROUPE_OP_ADD_RMSNORM, TROUPE_F32).first);
  rope_fn = reinterpret_cast<troupe_rope_fn>(pick(TROUPE_OP_ROPE, TROUPE_F32).first);
  kv_store_fn = reinterpret_cast<troupe_kv_store_fn>(pick(TROUPE_OP_KV_STORE, kv_type).first);
  silu_mul_fn = reinterpret_cast<troupe_silu_mul_fn>(pick(TROUPE_OP_SILU_MUL, TROUPE_F32).first);
  if (cfg.qkv_bias) add_bias_fn = reinterpret_cast<troupe_add_bias_fn>(pick(TROUPE_OP_ADD_BIAS, TROUPE_F32).first);
  argmax_fn = reinterpret_cast<troupe_argmax_fn>(pick(TROUPE_OP_ARGMAX, TROUPE_F32).first);
  const auto [attn, attn_builtin] = pick(TROUPE_OP_ATTENTION, kv_type);
  attention_variant = attn_builtin ? nullptr : attn;
}

cuda_backend::impl::~impl() { release(); }

void cuda_backend::impl::release() {
  if (stream) (void)cudaStreamSynchronize(stream);
  for (auto& [key, exec] : graphs) (void)cudaGraphExecDestroy(exec);
  graphs.clear();
  if (cublas) (void)cublasDestroy(cublas);
  if (stream) (void)cudaStreamDestroy(stream);
  cublas = nullptr;
  stream = nullptr;
}

dev_weight cuda_backend::impl::upload_matrix(const tensor_view& t) {
  dev_weight d;
  d.rows = t.rows;
  d.cols = t.cols;
  const int64_t rb = kern::row_bytes(t.dtype, t.cols);
  if (rb < 0 || (quantized(t.dtype) && t.cols % kern::QK))
    fail(model.path() + ": tensor " + t.name + " has unsupported type " + std::to_string((int)t.dtype) +
             " for its width " + std::to_string(t.cols),
         "tensor " + t.name);
  const size_t src_bytes = (size_t)rb * t.rows;
  if (quantized(t.dtype) || t.dtype == opt.dense_type) {  // as stored
    device_buffer& b = weight_memory.emplace_back(src_bytes, "tensor " + t.name);
    TROUPE_CUDA_CHECK(cudaMemcpy(b.get(), t.data, src_bytes, cudaMemcpyHostToDevice));
    weight_bytes += src_bytes;
    d.data = b.get();
    d.dtype = t.dtype;
    return d;
  }
  const size_t elem = opt.dense_type == TROUPE_F32 ? 4 : 2;
  device_buffer& b = weight_memory.emplace_back((size_t)t.rows * t.cols * elem, "tensor " + t.name);
  weight_bytes += b.size();
  d.data = b.get();
  d.dtype = opt.dense_type;
  const int64_t chunk_rows = std::max<int64_t>(1, (int64_t)(k_staging_bytes / std::max<int64_t>(rb, t.cols * 4)));
  if (opt.dense_type == TROUPE_F32) {  // f16/bf16 -> f32 on the host (a check mode, not a fast path)
    std::vector<float> rows((size_t)std::min(chunk_rows, t.rows) * t.cols);
    for (int64_t r0 = 0; r0 < t.rows; r0 += chunk_rows) {
      const int64_t n = std::min(chunk_rows, t.rows - r0);
      for (int64_t r = 0; r < n; ++r)
        kern::dequantize_row(t.dtype, static_cast<const char*>(t.data) + (r0 + r) * rb, &rows[r * t.cols], t.cols);
      TROUPE_CUDA_CHECK(cudaMemcpy(b.as<float>(r0 * t.cols * 4), rows.data(), n * t.cols * 4, cudaMemcpyHostToDevice));
    }
    return d;
  }
  device_buffer staging(std::min<size_t>(src_bytes, (size_t)chunk_rows * rb), "weight staging");
  for (int64_t r0 = 0; r0 < t.rows; r0 += chunk_rows) {
    const int64_t n = std::min(chunk_rows, t.rows - r0);
    TROUPE_CUDA_CHECK(cudaMemcpyAsync(staging.get(), static_cast<const char*>(t.data) + r0 * rb, (size_t)n * rb,
                                      cudaMemcpyHostToDevice, stream));
    kern::cuda::invoke_dequantize(b.as<char>((size_t)r0 * t.cols * elem), opt.dense_type, staging.get(), t.dtype, n,
                                  t.cols, stream);
  }
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream));  // before `staging` is freed
  return d;
}

const float* cuda_backend::impl::upload_norm(const tensor_view& t, int64_t n) {
  if (n == 0) n = cfg.dim;
  if (!t.data || t.rows * t.cols != n || kern::row_bytes(t.dtype, t.cols) < 0)
    fail(model.path() + ": vector " + t.name + " must hold " + std::to_string(n) + " elements", "tensor " + t.name);
  std::vector<float> f(n);
  kern::dequantize_row(t.dtype, t.data, f.data(), n);
  device_buffer& b = weight_memory.emplace_back(f.size() * sizeof(float), "tensor " + t.name);
  TROUPE_CUDA_CHECK(cudaMemcpy(b.get(), f.data(), b.size(), cudaMemcpyHostToDevice));
  weight_bytes += b.size();
  return b.as<float>();
}

meta_layout cuda_backend::impl::layout(int64_t T, int64_t n_seqs, int64_t n_dec, int64_t n_tiles, int64_t n_sample,
                                       int64_t table_stride) const {
  meta_layout l;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t here = at;
    at += align16(bytes);
    return here;
  };
  l.ids = take(T * 4);
  l.positions = take(T * 4);
  l.slots = take(T * 4);
  l.block_tables = take(n_seqs * table_stride * 4);
  l.dec_positions = take(n_dec * 4);
  l.tiles = take(n_tiles * sizeof(kern::cuda::prefill_tile));
  l.logit_rows = take(n_sample * 4);
  l.sample_params = take(n_sample * sizeof(kern::cuda::sample_row_params));
  l.total = at;
  return l;
}

void cuda_backend::impl::allocate_scratch() {
  const model_config& c = cfg;
  const int64_t T = opt.max_batch_tokens, S = opt.max_seqs;
  // GEMM workspace: the largest any weight needs at full batch
  auto ws = [&](const dev_weight& w, int64_t m) {
    gemm_ws_bytes = std::max(gemm_ws_bytes, kern::cuda::matmul_workspace_bytes(w.dtype, m, w.rows, w.cols));
  };
  for (const dev_layer& L : layers)
    for (const dev_weight* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) ws(*w, T);
  ws(output, S);
  const size_t attn_bytes = kern::cuda::attention_decode_workspace_bytes(S, c.n_heads, c.head_dim, max_parts);

  const size_t floats[] = {(size_t)T * c.dim,  (size_t)T * c.dim,  (size_t)T * q_dim,        (size_t)T * q_dim,
                           (size_t)T * kv_dim, (size_t)T * kv_dim, (size_t)T * c.hidden_dim, (size_t)T * c.hidden_dim,
                           (size_t)T * c.dim,  (size_t)S * c.dim,  (size_t)S * c.vocab_size, (size_t)S,
                           (size_t)S};
  size_t total = 0;
  for (size_t f : floats) total += align256(f * 4);
  total += align256(gemm_ws_bytes) + align256(attn_bytes) + k_cublas_ws_bytes;
  scratch = device_buffer(
      total, "activation scratch (max_batch_tokens " + std::to_string(T) + ", max_seqs " + std::to_string(S) + ")");
  size_t at = 0;
  auto take = [&](size_t bytes) {
    void* p = scratch.as<char>(at);
    at += align256(bytes);
    return p;
  };
  float** slots[] = {&x, &xn, &q, &att, &k, &v, &gate, &up, &tmp, &last, &logits};
  for (size_t i = 0; i < std::size(slots); ++i) *slots[i] = static_cast<float*>(take(floats[i] * 4));
  out_ids = static_cast<int32_t*>(take(S * 4));
  out_logprobs = static_cast<float*>(take(S * 4));
  gemm_ws = take(gemm_ws_bytes);
  attn_ws = take(attn_bytes);
  cublas_ws = take(k_cublas_ws_bytes);
  // A workspace of our own: cuBLAS must not allocate while a CUDA graph is being captured.
  TROUPE_CUBLAS_CHECK(cublasSetWorkspace(cublas, cublas_ws, k_cublas_ws_bytes));

  const meta_layout most = layout(T, S, S, T / kern::cuda::k_prefill_tile_q + S, S, bt_stride);
  meta_dev = device_buffer(most.total, "step metadata");
  meta_host = pinned_buffer(most.total, "step metadata");
  out_host = pinned_buffer((size_t)S * 8, "sampled tokens");
}

void cuda_backend::impl::allocate_kv() {
  const size_t elem = opt.kv_f16 ? 2 : 4;
  const size_t block_bytes = (size_t)opt.block_size * kv_dim * elem;  // one layer, K or V
  const size_t per_block = block_bytes * 2 * cfg.n_layers;
  n_blocks = opt.kv_blocks;
  if (n_blocks <= 0 && opt.kv_bytes > 0) n_blocks = std::max<int64_t>(1, opt.kv_bytes / (int64_t)per_block);
  if (n_blocks <= 0) {
    size_t free_b = 0, total_b = 0;
    TROUPE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    n_blocks = (int64_t)((double)free_b * opt.kv_memory_fraction / (double)per_block);
    const int64_t needed = bt_stride;  // one sequence of max_seq_len
    if (n_blocks < needed)
      throw error(error_kind::overloaded,
                  "cuda backend: " + mib(free_b) + " free of " + mib(total_b) + " after the weights (" +
                      mib(weight_bytes) + ") and scratch; " + std::to_string(opt.kv_memory_fraction) + " of it holds " +
                      std::to_string(n_blocks) + " KV blocks of " + std::to_string(per_block) + " bytes, one " +
                      std::to_string(max_seq_len) + "-token sequence needs " + std::to_string(needed),
                  "kv_blocks");
    n_blocks = std::min<int64_t>(n_blocks, INT32_MAX / opt.block_size);
  }
  layer_kv_bytes = (size_t)n_blocks * block_bytes;
  kv_block_bytes = block_bytes;
  if (opt.swap_bytes < 0) fail("cuda backend: swap_bytes must be >= 0", "swap_bytes");
  n_host_blocks = std::min<int64_t>(opt.swap_bytes / (int64_t)per_block, INT32_MAX);
  if (n_host_blocks > 0)
    host_pool = pinned_buffer((size_t)n_host_blocks * per_block,
                              "host swap pool (" + std::to_string(n_host_blocks) + " blocks)");
  kv = device_buffer(layer_kv_bytes * 2 * cfg.n_layers,
                     "KV pool (" + std::to_string(n_blocks) + " blocks of " + std::to_string(opt.block_size) + ")");
  // Zeroed so that a slot read before it is written holds finite numbers.
  TROUPE_CUDA_CHECK(cudaMemsetAsync(kv.get(), 0, kv.size(), stream));
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void* cuda_backend::impl::kv_layer(int64_t layer, bool value) const {
  return kv.as<char>((size_t)(2 * layer + (value ? 1 : 0)) * layer_kv_bytes);
}

// ---- the public class ------------------------------------------------------------------

cuda_backend::cuda_backend(const model_file& model, const kernel_registry& registry, const cuda_backend_options& opt)
    : p_(std::make_unique<impl>(model, registry, opt)) {}

cuda_backend::~cuda_backend() = default;

step_result cuda_backend::step(const step_plan& plan) { return p_->step(plan); }
int64_t cuda_backend::kv_blocks() const { return p_->n_blocks; }
int32_t cuda_backend::block_size() const { return p_->opt.block_size; }
int64_t cuda_backend::host_blocks() const { return p_->n_host_blocks; }
int64_t cuda_backend::max_step_tokens() const { return p_->opt.max_batch_tokens; }
int64_t cuda_backend::graph_replays() const { return p_->graph_replays; }

std::string cuda_backend::describe() const {
  const impl& s = *p_;
  return std::string("cuda (") + s.prop.name + ", sm_" + std::to_string(s.prop.major) + std::to_string(s.prop.minor) +
         "; weights " + std::string(kern::dtype_name(s.opt.dense_type)) + "/quantized " + mib(s.weight_bytes) +
         "; KV " + (s.opt.kv_f16 ? "f16 " : "f32 ") + std::to_string(s.n_blocks) + " blocks x " +
         std::to_string(s.opt.block_size) + "; graphs " +
         (s.opt.cuda_graphs && !s.opt.comm && s.all_builtin ? "on" : "off") +
         (s.kernels_desc.empty() ? "" : "; " + s.kernels_desc) +
         (s.opt.comm ? "; tensor-parallel " + s.opt.comm->describe() : std::string()) + ")";
}

void cuda_backend::copy_block(int32_t src, int32_t dst) {
  impl& s = *p_;
  if (src < 0 || src >= s.n_blocks || dst < 0 || dst >= s.n_blocks)
    fail("copy_block: block ids " + std::to_string(src) + " -> " + std::to_string(dst) + " outside [0, " +
             std::to_string(s.n_blocks) + ")",
         "block_table");
  if (src == dst) return;
  TROUPE_CUDA_CHECK(cudaSetDevice(s.opt.device));
  for (int64_t l = 0; l < s.cfg.n_layers; ++l)
    kern::cuda::invoke_kv_copy_block(s.kv_layer(l, false), s.kv_layer(l, true), s.opt.kv_f16, src, dst,
                                     s.opt.block_size, s.kv_dim, s.stream);
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(s.stream));
}

std::vector<float> cuda_backend::last_logits(size_t sampled_index) const {
  const impl& s = *p_;
  if ((int64_t)sampled_index >= s.last_n_sample)
    fail("last_logits: index " + std::to_string(sampled_index) + " but the last step sampled " +
         std::to_string(s.last_n_sample) + " sequences");
  std::vector<float> out(s.cfg.vocab_size);
  TROUPE_CUDA_CHECK(cudaMemcpy(out.data(), s.logits + s.last_rows[sampled_index] * s.cfg.vocab_size, out.size() * 4,
                               cudaMemcpyDeviceToHost));
  return out;
}

std::unique_ptr<worker_backend> make_cuda_backend(const model_file& model, const kernel_registry& registry,
                                                  const cuda_backend_options& opt) {
  return std::make_unique<cuda_backend>(model, registry, opt);
}

}  // namespace troupe
