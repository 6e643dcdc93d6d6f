// The CUDA backend's state, shared by its two source files: cuda_backend.cpp (weights, KV
// pool, scratch) and cuda_step.cpp (one step: metadata, forward, graphs, sampling).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>
#include <tuple>
#include <vector>

#include "kernels/cuda/attention_prefill.cuh"
#include "kernels/cuda/sampling.cuh"
#include "src/engine/cuda/cuda_backend.h"
#include "src/engine/cuda/device_buffer.h"
#include "src/engine/llama_recipe.h"

namespace troupe {

// A weight matrix on the device: (rows, cols) in dtype (dense_type, q8_0 or q4_0), and the
// registry's CUDA matmul variant for that dtype when it is not the built-in one (null: the
// built-in GEMM on the backend's own cuBLAS handle and workspace).
struct dev_weight {
  const void* data = nullptr;
  troupe_dtype dtype = TROUPE_F32;
  int64_t rows = 0, cols = 0;
  troupe_matmul_fn variant = nullptr;
};

struct dev_layer {
  const float* attn_norm = nullptr;  // (dim)
  dev_weight wq, wk, wv, wo;
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // with qkv_bias: (q_dim), (kv_dim) x2
  const float *q_norm = nullptr, *k_norm = nullptr;         // with qk_norm: (head_dim) each
  const float* ffn_norm = nullptr;                          // (dim)
  dev_weight w_gate, w_up, w_down;
};

// Byte offsets of one step's metadata, packed in this order in one pinned buffer and copied
// to the device with one memcpy. Each section is 16-byte aligned.
struct meta_layout {
  size_t ids = 0;            // (T) int32 token ids
  size_t positions = 0;      // (T) int32
  size_t slots = 0;          // (T) int32 KV slot of each new token
  size_t block_tables = 0;   // (n_seqs, step_shape::bt_stride) int32
  size_t dec_positions = 0;  // (n_dec) int32 query position of each decode sequence
  size_t tiles = 0;          // (n_tiles) prefill_tile
  size_t logit_rows = 0;     // (n_sample) int32 batch row of each sampled sequence's last token
  size_t sample_params = 0;  // (n_sample) sample_row_params
  size_t total = 0;
};

// What one step computes; equal shapes replay the same CUDA graph.
struct step_shape {
  int64_t T = 0;        // new tokens
  int64_t n_seqs = 0;   // sequences (decode ones first)
  int64_t n_dec = 0;    // sequences feeding exactly one token
  int64_t n_tiles = 0;  // prefill query tiles
  int64_t n_sample = 0;
  int n_parts = 1;        // decode attention partitions
  int64_t bt_stride = 0;  // block table row length this step (not the model's longest)
  meta_layout meta;
};

// The recipe (src/engine/llama_recipe.h) runs on the device buffers: impl is its executor.
struct cuda_backend::impl final : llama_executor {
  impl(const model_file& m, const kernel_registry& r, const cuda_backend_options& o);
  ~impl();

  // ---- set-up (cuda_backend.cpp)
  void load();     // weights, scratch, KV pool
  void release();  // graphs, cuBLAS handle, stream
  dev_weight upload_matrix(const tensor_view& t);
  const float* upload_norm(const tensor_view& t, int64_t n = 0);  // an f32 vector of n (0: dim) elements
  void allocate_scratch();
  void allocate_kv();
  meta_layout layout(int64_t T, int64_t n_seqs, int64_t n_dec, int64_t n_tiles, int64_t n_sample,
                     int64_t table_stride) const;

  // ---- one step (cuda_step.cpp)
  step_result step(const step_plan& plan);
  void validate(const step_plan& plan) const;
  void enqueue_swaps(const step_plan& plan);
  void enqueue_forward(const step_shape& sh);
  void enqueue_sampling(const step_shape& sh);
  void run_graph(const step_shape& sh);
  void* kv_layer(int64_t layer, bool value) const;
  void pick_variants();  // cuda_backend.cpp

  // ---- llama_executor (cuda_step.cpp): each op through its selected CUDA variant, on the
  // backend's stream, over the metadata of the step being enqueued (shape, meta_dev)
  float* buf(llama_act a) const;
  const float* norm_weight(weight_id w) const;
  const dev_weight& matrix(weight_id w) const;
  void embedding(llama_act out, int64_t rows) override;
  void rmsnorm(llama_act out, llama_act x, weight_id w, int64_t rows) override;
  void add_rmsnorm(llama_act out, llama_act x, llama_act residual, weight_id w, int64_t rows) override;
  void matmul(llama_act y, llama_act x, weight_id w, int64_t rows) override;
  void rope(llama_act x, int64_t rows, int64_t n_heads) override;
  void add_bias(llama_act x, weight_id b, int64_t rows) override;
  void head_rmsnorm(llama_act x, weight_id w, int64_t rows, int64_t n_heads) override;
  void kv_store(int64_t layer, llama_act k, llama_act v, int64_t rows) override;
  void attention(int64_t layer, llama_act out, llama_act q) override;
  void silu_mul(llama_act gate, llama_act up, int64_t n) override;
  void all_reduce(llama_act x, int64_t rows) override;  // (rows, dim) summed over the TP group
  void gather_rows(llama_act out, llama_act x, int64_t n_sample) override;

  const model_file& model;
  const model_config& cfg;
  const kernel_registry& registry;
  cuda_backend_options opt;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  troupe_dtype half_type = TROUPE_F16;  // GEMM input type on the quantized prefill path
  int64_t q_dim = 0, kv_dim = 0, max_seq_len = 0;
  int64_t bt_stride = 0;  // blocks of the longest sequence
  int max_parts = 1;

  std::vector<device_buffer> weight_memory;
  size_t weight_bytes = 0;
  dev_weight tok_embd, output;
  const float* output_norm = nullptr;
  std::vector<dev_layer> layers;
  const float* inv_freq = nullptr;  // (head_dim / 2)

  // KV pool: layer l's K at kv_base + 2l * layer_kv_bytes, V right after it; each
  // (n_blocks, n_kv_heads, block_size, head_dim) in f16 or f32.
  device_buffer kv;
  size_t layer_kv_bytes = 0;
  size_t kv_block_bytes = 0;  // one block of one layer's K (or V)
  int64_t n_blocks = 0;
  // Host pool for preemption by swap, pinned so that the copies run asynchronously on the
  // stream: slot s holds layer l's K at ((s * n_layers + l) * 2) * kv_block_bytes, V after it.
  pinned_buffer host_pool;
  int64_t n_host_blocks = 0;

  // scratch, sized for max_batch_tokens (T) and max_seqs (S)
  device_buffer scratch;
  float *x = nullptr, *xn = nullptr;         // (T, dim) residual stream, normed
  float *q = nullptr, *att = nullptr;        // (T, q_dim)
  float *k = nullptr, *v = nullptr;          // (T, kv_dim)
  float *gate = nullptr, *up = nullptr;      // (T, hidden_dim)
  float* tmp = nullptr;                      // (T, dim) output of wo and w_down
  float *last = nullptr, *logits = nullptr;  // (S, dim), (S, vocab)
  int32_t* out_ids = nullptr;                // (S)
  float* out_logprobs = nullptr;             // (S)
  void* gemm_ws = nullptr;
  size_t gemm_ws_bytes = 0;
  void* attn_ws = nullptr;
  void* cublas_ws = nullptr;
  device_buffer meta_dev;
  pinned_buffer meta_host;
  pinned_buffer out_host;  // (S) int32 ids, then (S) float logprobs

  // The CUDA variant of every op of the recipe: the one the registry selected, or the
  // built-in "cuda.v1" (kern::cuda::variants()) when the registry holds none for CUDA.
  // Matmul variants sit in each dev_weight; attention_variant is null for the built-in,
  // which runs batched over all sequences (decode partitions, prefill tiles) instead of
  // per sequence through the ABI.
  troupe_embedding_fn embedding_fn = nullptr;  // by tok_embd's device dtype
  troupe_embedding_fn gather_fn = nullptr;     // embedding_f32: the sampled rows
  troupe_rmsnorm_fn rmsnorm_fn = nullptr;
  troupe_add_rmsnorm_fn add_rmsnorm_fn = nullptr;
  troupe_rope_fn rope_fn = nullptr;
  troupe_kv_store_fn kv_store_fn = nullptr;  // kv_store or kv_store_f16, as the pool
  troupe_silu_mul_fn silu_mul_fn = nullptr;
  troupe_add_bias_fn add_bias_fn = nullptr;   // with qkv_bias
  troupe_argmax_fn argmax_fn = nullptr;       // greedy rows, on the device
  void (*attention_variant)(void) = nullptr;  // troupe_attention_fn or _f16kv_fn, as the pool
  // Only the built-in variants are known to be capturable (no sync, no allocation).
  bool all_builtin = true;
  troupe_argmax_fn host_argmax = nullptr;  // for sample_next on the host
  std::string kernels_desc;
  const step_shape* shape = nullptr;  // of the step being enqueued
  step_batch batch;                   // host arrays of the step being planned

  // decode graphs by (n_seqs, n_sample, n_parts, table stride)
  std::map<std::tuple<int64_t, int64_t, int, int64_t>, cudaGraphExec_t> graphs;
  int64_t graph_replays = 0;
  int64_t last_n_sample = 0;
  std::vector<int64_t> last_rows;  // logits row of the k-th sampled sequence in plan order
};

}  // namespace troupe
