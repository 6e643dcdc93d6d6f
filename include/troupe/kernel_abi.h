/* The kernel C ABI: the signature of every op, shared by the built-in kernels and by
 * plugins (a shared library exporting troupe_kernel_plugin_v1). Plain C so that a
 * plugin built by any compiler can add variants. Shapes are given in comments as
 * (rows, cols), row-major; every pointer is non-owning.
 *
 * CPU variants receive host pointers; CUDA variants receive device pointers and run on
 * ctx->stream. */
#ifndef TROUPE_KERNEL_ABI_H
#define TROUPE_KERNEL_ABI_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 4: the attention ops take `window` (sliding-window attention; 0 = full causal), and
 * add_bias is added (Qwen2's q/k/v biases).
 * 3: kv_store, kv_store_f16 and add_rmsnorm added, so that every op of the model's forward
 * pass goes through the registry on both backends (op ids after to_f16 are new).
 * 2: the KV pools of the attention ops are (n_blocks, n_kv_heads, block_size, head_dim)
 * (version 1 had (n_blocks, block_size, n_kv_heads, head_dim)); argmax, attention_f16kv and
 * to_f16 added. A plugin built against another version is refused at load. */
#define TROUPE_KERNEL_ABI_VERSION 4

/* Weight and activation types (values match GGML's type ids where they exist). */
typedef enum troupe_dtype {
  TROUPE_F32 = 0,
  TROUPE_F16 = 1,
  TROUPE_Q4_0 = 2,
  TROUPE_Q8_0 = 8,
  TROUPE_BF16 = 30
} troupe_dtype;

/* Work splitting: a CPU kernel calls parallel_for(pool, n, fn, arg), which runs
 * fn(arg, begin, end) over disjoint ranges covering [0, n) and returns when all are done.
 * When parallel_for is NULL the kernel runs fn(arg, 0, n) itself. */
typedef void (*troupe_range_fn)(void* arg, int64_t begin, int64_t end);
typedef struct troupe_kctx {
  void* pool;
  void (*parallel_for)(void* pool, int64_t n, troupe_range_fn fn, void* arg);
  int n_threads;
  void* stream; /* cudaStream_t for CUDA variants, NULL on the CPU */
} troupe_kctx;

/* y(m, n) = x(m, k) · W(n, k)^T, W stored in `wtype` rows of k elements. */
typedef void (*troupe_matmul_fn)(const troupe_kctx* ctx, float* y, const float* x, const void* w, int64_t m, int64_t n,
                                 int64_t k);

/* out(rows, dim) = x / rms(x) * w;  rms over dim with eps. x and out may alias. */
typedef void (*troupe_rmsnorm_fn)(const troupe_kctx* ctx, float* out, const float* x, const float* w, int64_t rows,
                                  int64_t dim, float eps);

/* In place on x(n_tokens, n_heads, head_dim): rotate pairs by pos * inv_freq[i].
 * neox == 0: pairs are (2i, 2i+1) (GGUF / llama2.c layout);
 * neox != 0: pairs are (i, i + head_dim/2) (Hugging Face layout). inv_freq has head_dim/2. */
typedef void (*troupe_rope_fn)(const troupe_kctx* ctx, float* x, const int32_t* positions, int64_t n_tokens,
                               int64_t n_heads, int64_t head_dim, const float* inv_freq, int neox);

/* Paged causal attention for one sequence's query tokens.
 * q, out: (n_tokens, n_heads, head_dim); query t sits at position positions[t] and attends
 * keys at positions 0..positions[t], or with window > 0 only the last `window` of them:
 * max(0, positions[t] - window + 1)..positions[t] (Mistral's sliding-window attention).
 * k_pool, v_pool: one layer's pool, (n_blocks, n_kv_heads, block_size, head_dim) f32;
 * position p lives in block b = block_table[p / block_size] at offset o = p % block_size, and
 * its key for KV head g is row (b * n_kv_heads + g) * block_size + o: a head's keys of one
 * block are contiguous (block_size * head_dim elements), as in vLLM's cache.
 * Head h reads KV head h / (n_heads / n_kv_heads) (grouped-query attention). */
typedef void (*troupe_attention_fn)(const troupe_kctx* ctx, float* out, const float* q, const float* k_pool,
                                    const float* v_pool, const int32_t* block_table, const int32_t* positions,
                                    int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                    int64_t block_size, float scale, int64_t window);

/* As troupe_attention_fn over pools stored in f16 (half the bytes per key and value). */
typedef void (*troupe_attention_f16kv_fn)(const troupe_kctx* ctx, float* out, const float* q, const uint16_t* k_pool,
                                          const uint16_t* v_pool, const int32_t* block_table, const int32_t* positions,
                                          int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                          int64_t block_size, float scale, int64_t window);

/* out(n) = x(n) as IEEE f16 bits, rounded to nearest even (overflow to infinity, NaN stays
 * NaN): how K and V rows enter an f16 pool. */
typedef void (*troupe_to_f16_fn)(const troupe_kctx* ctx, uint16_t* out, const float* x, int64_t n);

/* x(rows, dim) += residual(rows, dim), then out(rows, dim) = rmsnorm(x) * w as
 * troupe_rmsnorm_fn: the residual add that precedes every norm of a layer, fused so that x
 * is read once. out must not alias x or residual. */
typedef void (*troupe_add_rmsnorm_fn)(const troupe_kctx* ctx, float* out, float* x, const float* residual,
                                      const float* w, int64_t rows, int64_t dim, float eps);

/* Writes the keys and values of new tokens into one layer's paged pool.
 * k, v: (n_tokens, n_kv_heads * head_dim) f32. slots (n_tokens): token t goes to slot
 * s = slots[t] = block * block_size + offset (a negative slot skips the token); its KV head
 * g lands in row (block * n_kv_heads + g) * block_size + offset of the pool, laid out as for
 * troupe_attention_fn. The pools hold f32 (kv_store) or IEEE f16 bits rounded as
 * troupe_to_f16_fn (kv_store_f16). */
typedef void (*troupe_kv_store_fn)(const troupe_kctx* ctx, void* k_pool, void* v_pool, const float* k, const float* v,
                                   const int32_t* slots, int64_t n_tokens, int64_t n_kv_heads, int64_t head_dim,
                                   int64_t block_size);

/* out(n) = silu(gate(n)) * up(n). out may alias gate. */
typedef void (*troupe_silu_mul_fn)(const troupe_kctx* ctx, float* out, const float* gate, const float* up, int64_t n);

/* out(n) = a(n) + b(n). out may alias a. */
typedef void (*troupe_add_fn)(const troupe_kctx* ctx, float* out, const float* a, const float* b, int64_t n);

/* x(rows, n) += bias(n) on every row, in place. */
typedef void (*troupe_add_bias_fn)(const troupe_kctx* ctx, float* x, const float* bias, int64_t rows, int64_t n);

/* out(n_ids, dim) = rows ids[] of table (vocab, dim) stored as `dtype`, converted to f32. */
typedef void (*troupe_embedding_fn)(const troupe_kctx* ctx, float* out, const void* table, const int32_t* ids,
                                    int64_t n_ids, int64_t dim);

/* For each row r of logits(rows, n): ids[r] = the index of the row's largest value (the
 * lowest index on ties) and logprobs[r] = its log-probability under the row's softmax at
 * `temperature` (> 0), -log(sum_i exp((logits[r][i] - max) / temperature)): the greedy
 * choice, and the log-partition that every reported log-probability (temperature 1) and
 * every nucleus (the sampling temperature) needs. Rows with no finite value give
 * unspecified results. */
typedef void (*troupe_argmax_fn)(const troupe_kctx* ctx, int32_t* ids, float* logprobs, const float* logits,
                                 int64_t rows, int64_t n, float temperature);

/* The ops, named as in the registry and on the command line (--kernel OP=VARIANT). */
typedef enum troupe_op {
  TROUPE_OP_MATMUL_F32 = 0,
  TROUPE_OP_MATMUL_F16,
  TROUPE_OP_MATMUL_BF16,
  TROUPE_OP_MATMUL_Q8_0,
  TROUPE_OP_MATMUL_Q4_0,
  TROUPE_OP_RMSNORM,
  TROUPE_OP_ROPE,
  TROUPE_OP_ATTENTION,
  TROUPE_OP_SILU_MUL,
  TROUPE_OP_ADD,
  TROUPE_OP_EMBEDDING_F32,
  TROUPE_OP_EMBEDDING_F16,
  TROUPE_OP_EMBEDDING_BF16,
  TROUPE_OP_EMBEDDING_Q8_0,
  TROUPE_OP_EMBEDDING_Q4_0,
  TROUPE_OP_ARGMAX,
  TROUPE_OP_ATTENTION_F16KV,
  TROUPE_OP_TO_F16,
  TROUPE_OP_KV_STORE,
  TROUPE_OP_KV_STORE_F16,
  TROUPE_OP_ADD_RMSNORM,
  TROUPE_OP_ADD_BIAS,
  TROUPE_OP_COUNT
} troupe_op;

typedef enum troupe_backend { TROUPE_BACKEND_CPU = 0, TROUPE_BACKEND_CUDA = 1 } troupe_backend;

/* One variant of one op. fn points to the op's function type above. */
typedef struct troupe_kernel_variant {
  troupe_op op;
  troupe_backend backend;
  const char* name; /* e.g. "cpu.avx2", unique per op */
  void (*fn)(void);
} troupe_kernel_variant;

/* What a plugin's troupe_kernel_plugin_v1() returns. The "_v1" names the entry point's own
 * signature (no arguments, returns this struct), which has not changed; the version of the
 * ops and their function types is abi_version, checked at load against
 * TROUPE_KERNEL_ABI_VERSION. */
typedef struct troupe_kernel_plugin {
  uint32_t abi_version; /* must equal TROUPE_KERNEL_ABI_VERSION */
  const char* plugin_name;
  size_t n_variants;
  const troupe_kernel_variant* variants;
} troupe_kernel_plugin;

typedef const troupe_kernel_plugin* (*troupe_kernel_plugin_v1_fn)(void);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_KERNEL_ABI_H */
