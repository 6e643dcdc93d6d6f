// The CUDA variants of the kernel ABI ("cuda.v1"): f32 activations, device pointers, work
// on ctx->stream. Thin adapters over the stateless invoke_* launchers; the registry calls
// them through the C function types of kernel_abi.h.
#include <cuda_runtime.h>

#include <vector>

#include "kernels/cuda/attention_decode.cuh"
#include "kernels/cuda/attention_prefill.cuh"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/kv_cache.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/sampling.cuh"
#include "kernels/cuda/rope.cuh"

namespace troupe::kern::cuda {

namespace {

cudaStream_t stream_of(const troupe_kctx* ctx) { return ctx ? static_cast<cudaStream_t>(ctx->stream) : nullptr; }

// One cuBLAS handle per thread and device, made on first use. Deliberately never destroyed:
// the ABI has no teardown hook, and destroying handles from thread-exit destructors races
// with the CUDA runtime's own shutdown. The driver frees them with the process.
cublasHandle_t thread_handle() {
  thread_local cublasHandle_t handle = nullptr;
  thread_local int handle_device = -1;
  int dev = 0;
  TROUPE_CUDA_CHECK(cudaGetDevice(&dev));
  if (!handle || handle_device != dev) {
    TROUPE_CUBLAS_CHECK(cublasCreate(&handle));
    handle_device = dev;
  }
  return handle;
}

// Stream-ordered scratch, freed on the stream when the variant returns.
class stream_scratch {
 public:
  stream_scratch(size_t bytes, cudaStream_t s) : stream_(s) {
    if (bytes && cudaMallocAsync(&ptr_, bytes, s) != cudaSuccess) throw_out_of_memory("kernel scratch", bytes);
  }
  ~stream_scratch() {
    if (ptr_) (void)cudaFreeAsync(ptr_, stream_);
  }
  stream_scratch(const stream_scratch&) = delete;
  stream_scratch& operator=(const stream_scratch&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

template <troupe_dtype DT>
void matmul_v1(const troupe_kctx* ctx, float* y, const float* x, const void* w, int64_t m, int64_t n, int64_t k) {
  const cudaStream_t s = stream_of(ctx);
  const size_t bytes = matmul_workspace_bytes(DT, m, n, k);
  stream_scratch ws(bytes, s);
  matmul(thread_handle(), y, x, w, DT, m, n, k, TROUPE_F16, ws.get(), bytes, s);
}

void rmsnorm_v1(const troupe_kctx* ctx, float* out, const float* x, const float* w, int64_t rows, int64_t dim,
                float eps) {
  invoke_rmsnorm(out, x, w, rows, dim, eps, stream_of(ctx));
}

void add_rmsnorm_v1(const troupe_kctx* ctx, float* out, float* x, const float* residual, const float* w, int64_t rows,
                    int64_t dim, float eps) {
  invoke_add_rmsnorm(out, x, residual, w, rows, dim, eps, stream_of(ctx));
}

template <bool F16>
void kv_store_v1(const troupe_kctx* ctx, void* k_pool, void* v_pool, const float* k, const float* v,
                 const int32_t* slots, int64_t n_tokens, int64_t n_kv_heads, int64_t head_dim, int64_t block_size) {
  const int64_t kv_dim = n_kv_heads * head_dim;
  invoke_kv_store(k_pool, v_pool, F16, k, v, kv_dim, slots, n_tokens, kv_dim, head_dim, block_size, stream_of(ctx));
}

void rope_v1(const troupe_kctx* ctx, float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
             int64_t head_dim, const float* inv_freq, int neox) {
  invoke_rope(x, n_heads * head_dim, positions, n_tokens, n_heads, head_dim, inv_freq, neox != 0, stream_of(ctx));
}

// KV: float (f32 pools) or uint16_t (f16 pools).
template <typename KV>
void attention_v1(const troupe_kctx* ctx, float* out, const float* q, const KV* k_pool, const KV* v_pool,
                  const int32_t* block_table, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                  int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale, int64_t window) {
  constexpr bool f16 = sizeof(KV) == 2;
  const cudaStream_t s = stream_of(ctx);
  if (n_tokens <= 0) return;
  if (n_tokens == 1) {
    // The partition count depends on the position, which lives on the device.
    int32_t pos = 0;
    TROUPE_CUDA_CHECK(cudaMemcpyAsync(&pos, positions, sizeof pos, cudaMemcpyDeviceToHost, s));
    TROUPE_CUDA_CHECK(cudaStreamSynchronize(s));
    const int parts = decode_partitions((int64_t)pos + 1);
    stream_scratch ws(attention_decode_workspace_bytes(1, n_heads, head_dim, parts), s);
    invoke_attention_decode(out, q, k_pool, v_pool, f16, block_table, 0, positions, 1, n_heads, n_kv_heads, head_dim,
                            block_size, scale, window, parts, ws.get(), s);
    return;
  }
  std::vector<prefill_tile> tiles;
  append_prefill_tiles(tiles, 0, 0, (int32_t)n_tokens);
  const size_t bytes = tiles.size() * sizeof(prefill_tile);
  stream_scratch dtiles(bytes, s);
  TROUPE_CUDA_CHECK(cudaMemcpyAsync(dtiles.get(), tiles.data(), bytes, cudaMemcpyHostToDevice, s));
  invoke_attention_prefill(out, q, k_pool, v_pool, f16, block_table, 0, positions,
                           static_cast<const prefill_tile*>(dtiles.get()), (int64_t)tiles.size(), n_heads, n_kv_heads,
                           head_dim, block_size, scale, window, s);
  // No sync needed for `tiles`: a copy from pageable memory returns once the source is staged.
}

void to_f16_v1(const troupe_kctx* ctx, uint16_t* out, const float* x, int64_t n) {
  invoke_f32_to_half(out, TROUPE_F16, x, n, stream_of(ctx));
}

void silu_mul_v1(const troupe_kctx* ctx, float* out, const float* gate, const float* up, int64_t n) {
  invoke_silu_mul(out, gate, up, n, stream_of(ctx));
}

void add_v1(const troupe_kctx* ctx, float* out, const float* a, const float* b, int64_t n) {
  invoke_add(out, a, b, n, stream_of(ctx));
}

void add_bias_v1(const troupe_kctx* ctx, float* x, const float* bias, int64_t rows, int64_t n) {
  invoke_add_bias(x, bias, rows, n, stream_of(ctx));
}

template <troupe_dtype DT>
void embedding_v1(const troupe_kctx* ctx, float* out, const void* table, const int32_t* ids, int64_t n_ids,
                  int64_t dim) {
  invoke_embedding(out, table, DT, ids, n_ids, dim, stream_of(ctx));
}

void argmax_v1(const troupe_kctx* ctx, int32_t* ids, float* logprobs, const float* logits, int64_t rows, int64_t n,
               float temperature) {
  invoke_argmax(ids, logprobs, logits, rows, n, stream_of(ctx), temperature);
}

template <typename F>
troupe_kernel_variant v(troupe_op op, F* fn) {
  return {op, TROUPE_BACKEND_CUDA, "cuda.v1", reinterpret_cast<void (*)(void)>(fn)};
}

}  // namespace

std::vector<troupe_kernel_variant> variants() {
  return {
      v(TROUPE_OP_MATMUL_F32, static_cast<troupe_matmul_fn>(matmul_v1<TROUPE_F32>)),
      v(TROUPE_OP_MATMUL_F16, static_cast<troupe_matmul_fn>(matmul_v1<TROUPE_F16>)),
      v(TROUPE_OP_MATMUL_BF16, static_cast<troupe_matmul_fn>(matmul_v1<TROUPE_BF16>)),
      v(TROUPE_OP_MATMUL_Q8_0, static_cast<troupe_matmul_fn>(matmul_v1<TROUPE_Q8_0>)),
      v(TROUPE_OP_MATMUL_Q4_0, static_cast<troupe_matmul_fn>(matmul_v1<TROUPE_Q4_0>)),
      v(TROUPE_OP_RMSNORM, static_cast<troupe_rmsnorm_fn>(rmsnorm_v1)),
      v(TROUPE_OP_ROPE, static_cast<troupe_rope_fn>(rope_v1)),
      v(TROUPE_OP_ATTENTION, static_cast<troupe_attention_fn>(attention_v1<float>)),
      v(TROUPE_OP_SILU_MUL, static_cast<troupe_silu_mul_fn>(silu_mul_v1)),
      v(TROUPE_OP_ADD, static_cast<troupe_add_fn>(add_v1)),
      v(TROUPE_OP_EMBEDDING_F32, static_cast<troupe_embedding_fn>(embedding_v1<TROUPE_F32>)),
      v(TROUPE_OP_EMBEDDING_F16, static_cast<troupe_embedding_fn>(embedding_v1<TROUPE_F16>)),
      v(TROUPE_OP_EMBEDDING_BF16, static_cast<troupe_embedding_fn>(embedding_v1<TROUPE_BF16>)),
      v(TROUPE_OP_EMBEDDING_Q8_0, static_cast<troupe_embedding_fn>(embedding_v1<TROUPE_Q8_0>)),
      v(TROUPE_OP_EMBEDDING_Q4_0, static_cast<troupe_embedding_fn>(embedding_v1<TROUPE_Q4_0>)),
      v(TROUPE_OP_ARGMAX, static_cast<troupe_argmax_fn>(argmax_v1)),
      v(TROUPE_OP_ATTENTION_F16KV, static_cast<troupe_attention_f16kv_fn>(attention_v1<uint16_t>)),
      v(TROUPE_OP_TO_F16, static_cast<troupe_to_f16_fn>(to_f16_v1)),
      v(TROUPE_OP_KV_STORE, static_cast<troupe_kv_store_fn>(kv_store_v1<false>)),
      v(TROUPE_OP_KV_STORE_F16, static_cast<troupe_kv_store_fn>(kv_store_v1<true>)),
      v(TROUPE_OP_ADD_RMSNORM, static_cast<troupe_add_rmsnorm_fn>(add_rmsnorm_v1)),
      v(TROUPE_OP_ADD_BIAS, static_cast<troupe_add_bias_fn>(add_bias_v1)),
  };
}

void register_all(kernel_registry& registry) {
  for (const auto& var : variants()) registry.add(var);
}

}  // namespace troupe::kern::cuda
