// The plain CPU reference of every op: the oracle that every other variant is checked
// against, and the fallback. Written for clarity, not speed: one thread, no SIMD, f64
// accumulation where a sum is long.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ref/dtype.h"
#include "kernels/ref/ref.h"

namespace troupe::kern::ref {

namespace {

template <int DT>
void matmul_typed(const troupe_kctx*, float* y, const float* x, const void* w, int64_t m, int64_t n, int64_t k) {
  const int64_t rb = row_bytes(DT, k);
  std::vector<float> wrow(k);
  for (int64_t j = 0; j < n; ++j) {
    dequantize_row(DT, static_cast<const char*>(w) + j * rb, wrow.data(), k);
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0.0;
      for (int64_t p = 0; p < k; ++p) acc += (double)x[i * k + p] * wrow[p];
      y[i * n + j] = (float)acc;
    }
  }
}

template <int DT>
void embedding_typed(const troupe_kctx*, float* out, const void* table, const int32_t* ids, int64_t n_ids,
                     int64_t dim) {
  const int64_t rb = row_bytes(DT, dim);
  for (int64_t t = 0; t < n_ids; ++t)
    dequantize_row(DT, static_cast<const char*>(table) + ids[t] * rb, out + t * dim, dim);
}

void rmsnorm(const troupe_kctx*, float* out, const float* x, const float* w, int64_t rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += (double)x[r * dim + i] * x[r * dim + i];
    const float scale = 1.0f / std::sqrt((float)(ss / dim) + eps);
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = x[r * dim + i] * scale * w[i];
  }
}

void add_rmsnorm(const troupe_kctx* ctx, float* out, float* x, const float* residual, const float* w, int64_t rows,
                 int64_t dim, float eps) {
  for (int64_t i = 0; i < rows * dim; ++i) x[i] += residual[i];
  rmsnorm(ctx, out, x, w, rows, dim, eps);
}

void rope(const troupe_kctx*, float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
          const float* inv_freq, int neox) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float theta = (float)positions[t] * inv_freq[i];
        const float c = std::cos(theta), s = std::sin(theta);
        const int64_t a = neox ? i : 2 * i;
        const int64_t b = neox ? i + half : 2 * i + 1;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

float as_float(float x) { return x; }
float as_float(uint16_t h) { return f16_to_f32(h); }

// Over pools of float or f16 elements (KV), read through as_float.
template <typename KV>
void attention_typed(const troupe_kctx*, float* out, const float* q, const KV* k_pool, const KV* v_pool,
                     const int32_t* block_table, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                     int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale, int64_t window) {
  const int64_t group = n_heads / n_kv_heads;
  // the key of position p for KV head kvh: row (block * n_kv_heads + kvh) * block_size + offset
  auto slot = [&](const KV* pool, int64_t p, int64_t kvh) {
    return pool + (((int64_t)block_table[p / block_size] * n_kv_heads + kvh) * block_size + p % block_size) * head_dim;
  };
  std::vector<float> scores;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int64_t n_keys = positions[t] + 1;
    const int64_t first = window > 0 ? std::max<int64_t>(0, n_keys - window) : 0;
    scores.assign(n_keys, 0.0f);
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t kvh = h / group;
      const float* qh = q + (t * n_heads + h) * head_dim;
      float mx = -INFINITY;
      for (int64_t p = first; p < n_keys; ++p) {
        const KV* kp = slot(k_pool, p, kvh);
        double dot = 0.0;
        for (int64_t i = 0; i < head_dim; ++i) dot += (double)qh[i] * as_float(kp[i]);
        scores[p] = (float)dot * scale;
        mx = std::max(mx, scores[p]);
      }
      double sum = 0.0;
      for (int64_t p = first; p < n_keys; ++p) {
        scores[p] = std::exp(scores[p] - mx);
        sum += scores[p];
      }
      float* oh = out + (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < head_dim; ++i) {
        double acc = 0.0;
        for (int64_t p = first; p < n_keys; ++p) acc += (double)scores[p] * as_float(slot(v_pool, p, kvh)[i]);
        oh[i] = (float)(acc / sum);
      }
    }
  }
}

void attention(const troupe_kctx* ctx, float* out, const float* q, const float* k_pool, const float* v_pool,
               const int32_t* block_table, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale, int64_t window) {
  attention_typed(ctx, out, q, k_pool, v_pool, block_table, positions, n_tokens, n_heads, n_kv_heads, head_dim,
                  block_size, scale, window);
}

void attention_f16kv(const troupe_kctx* ctx, float* out, const float* q, const uint16_t* k_pool, const uint16_t* v_pool,
                     const int32_t* block_table, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                     int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale, int64_t window) {
  attention_typed(ctx, out, q, k_pool, v_pool, block_table, positions, n_tokens, n_heads, n_kv_heads, head_dim,
                  block_size, scale, window);
}

void to_f16(const troupe_kctx*, uint16_t* out, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(x[i]);
}

float from_f32(float x, float*) { return x; }
uint16_t from_f32(float x, uint16_t*) { return f32_to_f16(x); }

// KV: float (kv_store) or uint16_t (kv_store_f16).
template <typename KV>
void kv_store_typed(const troupe_kctx*, void* k_pool, void* v_pool, const float* k, const float* v,
                    const int32_t* slots, int64_t n_tokens, int64_t n_kv_heads, int64_t head_dim, int64_t block_size) {
  const int64_t kv_dim = n_kv_heads * head_dim;
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (slots[t] < 0) continue;
    const int64_t block = slots[t] / block_size, offset = slots[t] % block_size;
    for (int64_t g = 0; g < n_kv_heads; ++g) {
      const int64_t row = (block * n_kv_heads + g) * block_size + offset;
      KV* kd = static_cast<KV*>(k_pool) + row * head_dim;
      KV* vd = static_cast<KV*>(v_pool) + row * head_dim;
      for (int64_t i = 0; i < head_dim; ++i) {
        kd[i] = from_f32(k[t * kv_dim + g * head_dim + i], kd);
        vd[i] = from_f32(v[t * kv_dim + g * head_dim + i], vd);
      }
    }
  }
}

void silu_mul(const troupe_kctx*, float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void add(const troupe_kctx*, float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void add_bias(const troupe_kctx*, float* x, const float* bias, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) x[r * n + i] += bias[i];
}

template <typename F>
troupe_kernel_variant v(troupe_op op, F* fn) {
  return {op, TROUPE_BACKEND_CPU, "ref", reinterpret_cast<void (*)(void)>(fn)};
}

}  // namespace

void argmax(const troupe_kctx*, int32_t* ids, float* logprobs, const float* logits, int64_t rows, int64_t n,
            float temperature) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * n;
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
      if (x[i] > x[best]) best = i;
    double z = 0.0;
    for (int64_t i = 0; i < n; ++i) z += std::exp(((double)x[i] - (double)x[best]) / temperature);
    ids[r] = (int32_t)best;
    logprobs[r] = (float)-std::log(z);
  }
}

std::vector<troupe_kernel_variant> variants() {
  return {
      v(TROUPE_OP_MATMUL_F32, static_cast<troupe_matmul_fn>(matmul_typed<TROUPE_F32>)),
      v(TROUPE_OP_MATMUL_F16, static_cast<troupe_matmul_fn>(matmul_typed<TROUPE_F16>)),
      v(TROUPE_OP_MATMUL_BF16, static_cast<troupe_matmul_fn>(matmul_typed<TROUPE_BF16>)),
      v(TROUPE_OP_MATMUL_Q8_0, static_cast<troupe_matmul_fn>(matmul_typed<TROUPE_Q8_0>)),
      v(TROUPE_OP_MATMUL_Q4_0, static_cast<troupe_matmul_fn>(matmul_typed<TROUPE_Q4_0>)),
      v(TROUPE_OP_RMSNORM, static_cast<troupe_rmsnorm_fn>(rmsnorm)),
      v(TROUPE_OP_ROPE, static_cast<troupe_rope_fn>(rope)),
      v(TROUPE_OP_ATTENTION, static_cast<troupe_attention_fn>(attention)),
      v(TROUPE_OP_SILU_MUL, static_cast<troupe_silu_mul_fn>(silu_mul)),
      v(TROUPE_OP_ADD, static_cast<troupe_add_fn>(add)),
      v(TROUPE_OP_EMBEDDING_F32, static_cast<troupe_embedding_fn>(embedding_typed<TROUPE_F32>)),
      v(TROUPE_OP_EMBEDDING_F16, static_cast<troupe_embedding_fn>(embedding_typed<TROUPE_F16>)),
      v(TROUPE_OP_EMBEDDING_BF16, static_cast<troupe_embedding_fn>(embedding_typed<TROUPE_BF16>)),
      v(TROUPE_OP_EMBEDDING_Q8_0, static_cast<troupe_embedding_fn>(embedding_typed<TROUPE_Q8_0>)),
      v(TROUPE_OP_EMBEDDING_Q4_0, static_cast<troupe_embedding_fn>(embedding_typed<TROUPE_Q4_0>)),
      v(TROUPE_OP_ARGMAX, static_cast<troupe_argmax_fn>(argmax)),
      v(TROUPE_OP_ATTENTION_F16KV, static_cast<troupe_attention_f16kv_fn>(attention_f16kv)),
      v(TROUPE_OP_TO_F16, static_cast<troupe_to_f16_fn>(to_f16)),
      v(TROUPE_OP_KV_STORE, static_cast<troupe_kv_store_fn>(kv_store_typed<float>)),
      v(TROUPE_OP_KV_STORE_F16, static_cast<troupe_kv_store_fn>(kv_store_typed<uint16_t>)),
      v(TROUPE_OP_ADD_RMSNORM, static_cast<troupe_add_rmsnorm_fn>(add_rmsnorm)),
      v(TROUPE_OP_ADD_BIAS, static_cast<troupe_add_bias_fn>(add_bias)),
  };
}

}  // namespace troupe::kern::ref
