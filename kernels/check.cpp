// Checks kernel variants against the reference: the cases per op, the allowed error per
// element (derived in check.h), and the worst error per variant.
#include "kernels/check.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

#include "kernels/ref/dtype.h"
#include "troupe/error.h"
#include "troupe/kernel_registry.h"

namespace troupe::kern {

namespace {

constexpr double k_u = 1.0 / (1 << 24);  // f32 unit roundoff

using rng_t = std::mt19937_64;

std::vector<float> uniform(rng_t& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Accumulates one case's comparison into the variant's result.
void compare(check_result& r, const std::string& label, const std::vector<float>& got, const std::vector<float>& ref,
             const std::vector<double>& allowed) {
  ++r.cases;
  for (size_t i = 0; i < ref.size(); ++i) {
    // Equal values (infinities included) match; otherwise a NaN anywhere fails.
    const double err = got[i] == ref[i] ? 0.0 : std::fabs((double)got[i] - (double)ref[i]);
    const bool ok = err == 0.0 || err <= allowed[i];
    if (!(err <= r.max_abs_err)) r.max_abs_err = std::isnan(err) ? INFINITY : err;
    const double ratio = err == 0.0 ? 0.0 : allowed[i] > 0 ? err / allowed[i] : INFINITY;
    if (!(ratio <= r.worst_ratio)) r.worst_ratio = std::isnan(ratio) ? INFINITY : ratio;
    if (!ok && r.pass) {
      r.pass = false;
      std::ostringstream s;
      s << label << ": element " << i << " got " << got[i] << ", ref " << ref[i] << ", allowed error " << allowed[i];
      r.first_failure = s.str();
    }
  }
}

std::vector<double> rel_bound(const std::vector<float>& ref, double atol, double rtol) {
  std::vector<double> a(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) a[i] = atol + rtol * std::fabs(ref[i]);
  return a;
}

template <typename Fn>
Fn as(const troupe_kernel_variant& v) {
  return reinterpret_cast<Fn>(v.fn);
}

// One case's buffers as the checked variant sees them (on its device); released after.
class staged {
 public:
  explicit staged(variant_device& d) : d_(d) {}
  ~staged() { d_.release(); }
  staged(const staged&) = delete;
  staged& operator=(const staged&) = delete;
  const troupe_kctx* ctx() const { return d_.ctx(); }
  template <typename T>
  const T* in(const std::vector<T>& v) {
    return static_cast<const T*>(d_.upload(v.data(), v.size() * sizeof(T)));
  }
  template <typename T>
  T* out(std::vector<T>& v) {
    return static_cast<T*>(d_.upload(v.data(), v.size() * sizeof(T)));
  }
  template <typename T>
  void back(std::vector<T>& host, const T* dev) {
    d_.download(host.data(), dev, host.size() * sizeof(T));
  }

 private:
  variant_device& d_;
};

// The bounds of check.h: a CUDA variant's are looser where its path rounds differently.
struct bounds {
  bool device = false;
  // Relative rounding of the GEMM inputs on the device, per weight dtype.
  double gemm_rounding(int dt) const { return !device ? 0.0 : dt == TROUPE_BF16 ? 1.0 / 128 : 1.0 / 1024; }
  double pick(double cpu, double dev) const { return device ? dev : cpu; }
};

// ---- host memory: where CPU variants run -------------------------------------------------

class host_device : public variant_device {
 public:
  explicit host_device(const troupe_kctx* ctx) : ctx_(ctx) {}
  const troupe_kctx* ctx() const override { return ctx_; }
  void* upload(const void* host, size_t) override { return const_cast<void*>(host); }
  void download(void* host, const void* dev, size_t bytes) override {
    if (host != dev && bytes) std::memmove(host, dev, bytes);
  }
  void release() override {}
  double seconds_per_call(const std::function<void()>& call) override {
    using clock = std::chrono::steady_clock;
    call();
    int reps = 0;
    const auto t0 = clock::now();
    double elapsed = 0;
    do {
      call();
      ++reps;
      elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    } while (elapsed < 0.3 || reps < 2);
    return elapsed / reps;
  }
  std::string describe() const override { return "cpu"; }

 private:
  const troupe_kctx* ctx_;
};

// ---- matmul ----------------------------------------------------------------------------

}  // namespace

int op_dtype(troupe_op op) {
  switch (op) {
    case TROUPE_OP_MATMUL_F32:
    case TROUPE_OP_EMBEDDING_F32:
      return TROUPE_F32;
    case TROUPE_OP_MATMUL_F16:
    case TROUPE_OP_EMBEDDING_F16:
      return TROUPE_F16;
    case TROUPE_OP_MATMUL_BF16:
    case TROUPE_OP_EMBEDDING_BF16:
      return TROUPE_BF16;
    case TROUPE_OP_MATMUL_Q8_0:
    case TROUPE_OP_EMBEDDING_Q8_0:
      return TROUPE_Q8_0;
    default:
      return TROUPE_Q4_0;
  }
}

namespace {

bool is_quant(int dt) { return find_dtype(dt)->block_elems > 1; }

// Rows of f32 values stored as dtype `dt` (k a multiple of 32 for the quantized types).
std::vector<char> encode_rows(int dt, const std::vector<float>& v, int64_t rows, int64_t k) {
  const int64_t rb = row_bytes(dt, k);
  std::vector<char> out(rows * rb);
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = v.data() + r * k;
    char* dst = out.data() + r * rb;
    switch (dt) {
      case TROUPE_F32:
        std::copy_n(src, k, reinterpret_cast<float*>(dst));
        break;
      case TROUPE_F16:
        for (int64_t i = 0; i < k; ++i) reinterpret_cast<uint16_t*>(dst)[i] = f32_to_f16(src[i]);
        break;
      case TROUPE_BF16:
        for (int64_t i = 0; i < k; ++i) reinterpret_cast<uint16_t*>(dst)[i] = f32_to_bf16(src[i]);
        break;
      case TROUPE_Q8_0:
        quantize_row_q8_0(src, reinterpret_cast<block_q8_0*>(dst), k);
        break;
      case TROUPE_Q4_0:
        quantize_row_q4_0(src, reinterpret_cast<block_q4_0*>(dst), k);
        break;
    }
  }
  return out;
}

struct mm_shape {
  int64_t m, n, k;
};

void check_matmul(troupe_op op, const troupe_kernel_variant& ref, const troupe_kernel_variant& var,
                  const troupe_kctx* ctx, variant_device& dev, const bounds& b, rng_t& rng, check_result& r) {
  const int dt = op_dtype(op);
  // Awkward shapes: m = 1, 3, 7, 12, 33; n and k off the SIMD widths where the type allows.
  // (70, 19, 11xx): more x rows than one task holds, and a k long enough to be cut into
  // several chunks by a kernel that blocks for the cache. m = 1 rows that end inside, just
  // after and past the matrix-vector loops' unrolled steps (4 vectors), with an odd number
  // of quantized blocks (their pairs), and (1, 70, 1056) split over the pool.
  static const mm_shape float_shapes[] = {{1, 1, 1},    {1, 37, 129},   {3, 16, 64},    {7, 33, 47},   {33, 21, 300},
                                          {4, 64, 512}, {1, 300, 2048}, {70, 19, 1100}, {12, 40, 250}, {1, 5, 63},
                                          {1, 9, 64},   {1, 11, 80},    {1, 13, 4099},  {1, 70, 1056}};
  static const mm_shape quant_shapes[] = {{1, 1, 32},    {1, 37, 128},   {3, 16, 64},    {7, 33, 96},   {33, 21, 320},
                                          {4, 64, 512},  {1, 300, 2048}, {70, 19, 1120}, {12, 40, 256}, {1, 5, 96},
                                          {1, 13, 2144}, {1, 70, 1056},  {1, 9, 64},     {1, 3, 160}};
  for (const auto& s : is_quant(dt) ? quant_shapes : float_shapes) {
    const auto x = uniform(rng, s.m * s.k);
    const auto wf = uniform(rng, s.n * s.k);
    const auto w = encode_rows(dt, wf, s.n, s.k);
    std::vector<float> deq(s.n * s.k);  // the weights as the kernels see them
    for (int64_t j = 0; j < s.n; ++j) dequantize_row(dt, w.data() + j * row_bytes(dt, s.k), deq.data() + j * s.k, s.k);
    std::vector<float> want(s.m * s.n), got(s.m * s.n, NAN);
    as<troupe_matmul_fn>(ref)(ctx, want.data(), x.data(), w.data(), s.m, s.n, s.k);
    {
      staged d(dev);
      float* dy = d.out(got);
      as<troupe_matmul_fn>(var)(d.ctx(), dy, d.in(x), d.in(w), s.m, s.n, s.k);
      d.back(got, dy);
    }
    std::vector<double> allowed(want.size());
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t j = 0; j < s.n; ++j) {
        const float* xi = x.data() + i * s.k;
        const float* wj = deq.data() + j * s.k;
        double abs_sum = 0, quant_err = 0;
        for (int64_t p = 0; p < s.k; ++p) abs_sum += std::fabs((double)xi[p] * wj[p]);
        if (is_quant(dt))
          for (int64_t b = 0; b < s.k / QK; ++b) {
            double amax = 0, wsum = 0;
            for (int q = 0; q < QK; ++q) {
              amax = std::max(amax, (double)std::fabs(xi[b * QK + q]));
              wsum += std::fabs(wj[b * QK + q]);
            }
            quant_err += amax * (0.5 + 127.0 / 2048) / 127 * wsum;
          }
        allowed[i * s.n + j] = 1e-6 + 1e-5 * std::fabs(want[i * s.n + j]) + s.k * k_u * abs_sum + quant_err +
                               b.gemm_rounding(dt) * abs_sum;
      }
    std::ostringstream label;
    label << "m=" << s.m << " n=" << s.n << " k=" << s.k;
    compare(r, label.str(), got, want, allowed);
  }
}

// ---- norms, elementwise ----------------------------------------------------------------

void check_rmsnorm(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                   variant_device& dev, const bounds& b, rng_t& rng, check_result& r) {
  // (33, 4096) is big enough to be split over the pool.
  for (int64_t rows : {1, 3, 7, 33})
    for (int64_t dim : {1, 7, 64, 129, 4096}) {
      const auto x = uniform(rng, rows * dim, -3, 3);
      const auto w = uniform(rng, dim, 0.5, 1.5);
      std::vector<float> want(x.size()), got(x.size(), NAN);
      as<troupe_rmsnorm_fn>(ref)(ctx, want.data(), x.data(), w.data(), rows, dim, 1e-5f);
      auto inplace = x;
      {
        staged d(dev);
        float* dout = d.out(got);
        as<troupe_rmsnorm_fn>(var)(d.ctx(), dout, d.in(x), d.in(w), rows, dim, 1e-5f);
        d.back(got, dout);
        // In place (out aliases x), as the ABI allows.
        float* dx = d.out(inplace);
        as<troupe_rmsnorm_fn>(var)(d.ctx(), dx, dx, d.in(w), rows, dim, 1e-5f);
        d.back(inplace, dx);
      }
      const auto allowed = rel_bound(want, b.pick(1e-6, 1e-5), b.pick(1e-6, 1e-4) + dim * k_u);
      compare(r, "rows=" + std::to_string(rows) + " dim=" + std::to_string(dim), got, want, allowed);
      compare(r, "in place rows=" + std::to_string(rows) + " dim=" + std::to_string(dim), inplace, want, allowed);
    }
}

void check_silu_mul(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                    variant_device& dev, rng_t& rng, check_result& r) {
  for (int64_t n : {1, 7, 16, 33, 1000, 70001}) {
    auto gate = uniform(rng, n, -20, 20);
    const auto up = uniform(rng, n, -2, 2);
    const float extremes[] = {0.0f, -0.0f, 100.0f, -100.0f, 88.0f, -88.0f, 1e-30f};
    for (size_t i = 0; i < std::size(extremes) && i < gate.size(); ++i) gate[i * gate.size() / 7] = extremes[i];
    std::vector<float> want(n), got(n, NAN);
    as<troupe_silu_mul_fn>(ref)(ctx, want.data(), gate.data(), up.data(), n);
    {
      staged d(dev);
      float* dout = d.out(got);
      as<troupe_silu_mul_fn>(var)(d.ctx(), dout, d.in(gate), d.in(up), n);
      d.back(got, dout);
    }
    compare(r, "n=" + std::to_string(n), got, want, rel_bound(want, 1e-6, 1e-5));
  }
}

void check_add(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
               variant_device& dev, rng_t& rng, check_result& r) {
  for (int64_t n : {1, 7, 16, 33, 1000, 70001}) {
    const auto a = uniform(rng, n), b = uniform(rng, n);
    std::vector<float> want(n), got(n, NAN);
    as<troupe_add_fn>(ref)(ctx, want.data(), a.data(), b.data(), n);
    {
      staged d(dev);
      float* dout = d.out(got);
      as<troupe_add_fn>(var)(d.ctx(), dout, d.in(a), d.in(b), n);
      d.back(got, dout);
    }
    compare(r, "n=" + std::to_string(n), got, want, rel_bound(want, 0, 0));
  }
}

void check_add_bias(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                    variant_device& dev, rng_t& rng, check_result& r) {
  for (int64_t rows : {1, 3, 40})
    for (int64_t n : {1, 7, 64, 129, 896}) {
      const auto x = uniform(rng, rows * n), bias = uniform(rng, n);
      auto want = x, got = x;
      as<troupe_add_bias_fn>(ref)(ctx, want.data(), bias.data(), rows, n);
      {
        staged d(dev);
        float* dx = d.out(got);  // uploaded with its values: added to in place
        as<troupe_add_bias_fn>(var)(d.ctx(), dx, d.in(bias), rows, n);
        d.back(got, dx);
      }
      compare(r, "rows=" + std::to_string(rows) + " n=" + std::to_string(n), got, want, rel_bound(want, 0, 0));
    }
}

// The fused residual add: x must come back as x + residual, out as rmsnorm of that, and
// the added rows exactly as the plain add gives them.
void check_add_rmsnorm(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                       variant_device& dev, const bounds& b, rng_t& rng, check_result& r) {
  for (int64_t rows : {1, 3, 33})
    for (int64_t dim : {1, 7, 64, 129, 4096}) {
      const auto x0 = uniform(rng, rows * dim, -3, 3), res = uniform(rng, rows * dim, -3, 3);
      const auto w = uniform(rng, dim, 0.5, 1.5);
      auto want_x = x0, got_x = x0;
      std::vector<float> want(x0.size()), got(x0.size(), NAN);
      as<troupe_add_rmsnorm_fn>(ref)(ctx, want.data(), want_x.data(), res.data(), w.data(), rows, dim, 1e-5f);
      {
        staged d(dev);
        float* dout = d.out(got);
        float* dx = d.out(got_x);
        as<troupe_add_rmsnorm_fn>(var)(d.ctx(), dout, dx, d.in(res), d.in(w), rows, dim, 1e-5f);
        d.back(got, dout);
        d.back(got_x, dx);
      }
      const std::string label = "rows=" + std::to_string(rows) + " dim=" + std::to_string(dim);
      compare(r, label + " x", got_x, want_x, rel_bound(want_x, 0, 0));
      compare(r, label, got, want, rel_bound(want, b.pick(1e-6, 1e-5), b.pick(1e-6, 1e-4) + dim * k_u));
    }
}

// ---- rope, embedding -------------------------------------------------------------------

void check_rope(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                variant_device& dev, const bounds& b, rng_t& rng, check_result& r) {
  for (int neox : {0, 1})
    for (int64_t n_tokens : {1, 3, 7, 64})  // 64 tokens of 5 x 128 is split over the pool
      for (int64_t n_heads : {1, 5})
        for (int64_t head_dim : {2, 6, 7, 34, 64, 128}) {  // 7: an odd last element stays as it is
          const auto x = uniform(rng, n_tokens * n_heads * head_dim);
          std::vector<float> inv_freq(head_dim / 2);
          for (int64_t i = 0; i < head_dim / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / head_dim);
          std::vector<int32_t> pos(n_tokens);
          std::uniform_int_distribution<int32_t> pd(0, 5000);
          for (auto& p : pos) p = pd(rng);
          auto want = x, got = x;
          as<troupe_rope_fn>(ref)(ctx, want.data(), pos.data(), n_tokens, n_heads, head_dim, inv_freq.data(), neox);
          {
            staged d(dev);
            float* dx = d.out(got);
            as<troupe_rope_fn>(var)(d.ctx(), dx, d.in(pos), n_tokens, n_heads, head_dim, d.in(inv_freq), neox);
            d.back(got, dx);
          }
          std::ostringstream label;
          label << (neox ? "neox" : "interleaved") << " tokens=" << n_tokens << " heads=" << n_heads
                << " head_dim=" << head_dim;
          compare(r, label.str(), got, want, rel_bound(want, b.pick(1e-6, 1e-5), b.pick(1e-5, 1e-4)));
        }
}

void check_embedding(troupe_op op, const troupe_kernel_variant& ref, const troupe_kernel_variant& var,
                     const troupe_kctx* ctx, variant_device& dev, rng_t& rng, check_result& r) {
  const int dt = op_dtype(op);
  const int64_t vocab = 50;
  for (int64_t dim : is_quant(dt) ? std::vector<int64_t>{32, 96} : std::vector<int64_t>{1, 7, 33, 64})
    for (int64_t n_ids : {1, 3, 9}) {
      const auto table = encode_rows(dt, uniform(rng, vocab * dim, -4, 4), vocab, dim);
      std::vector<int32_t> ids(n_ids);
      std::uniform_int_distribution<int32_t> idd(0, (int32_t)vocab - 1);
      for (auto& id : ids) id = idd(rng);
      ids[0] = (int32_t)vocab - 1;  // the last row: catches an off-by-one row stride
      std::vector<float> want(n_ids * dim), got(n_ids * dim, NAN);
      as<troupe_embedding_fn>(ref)(ctx, want.data(), table.data(), ids.data(), n_ids, dim);
      {
        staged d(dev);
        float* dout = d.out(got);
        as<troupe_embedding_fn>(var)(d.ctx(), dout, d.in(table), d.in(ids), n_ids, dim);
        d.back(got, dout);
      }
      compare(r, "dim=" + std::to_string(dim) + " ids=" + std::to_string(n_ids), got, want, rel_bound(want, 0, 0));
    }
  if (dt == TROUPE_F16 || dt == TROUPE_BF16) {
    // Every 16-bit pattern but NaN, as one row: subnormals, infinities, signed zeros.
    std::vector<uint16_t> row;
    for (uint32_t h = 0; h < 65536; ++h) {
      const bool nan = dt == TROUPE_F16 ? (h & 0x7c00) == 0x7c00 && (h & 0x3ff) : (h & 0x7f80) == 0x7f80 && (h & 0x7f);
      if (!nan) row.push_back((uint16_t)h);
    }
    const int64_t dim = (int64_t)row.size();
    const std::vector<int32_t> id = {0};
    std::vector<float> want(dim), got(dim, NAN);
    as<troupe_embedding_fn>(ref)(ctx, want.data(), row.data(), id.data(), 1, dim);
    {
      staged d(dev);
      float* dout = d.out(got);
      as<troupe_embedding_fn>(var)(d.ctx(), dout, d.in(row), d.in(id), 1, dim);
      d.back(got, dout);
    }
    compare(r, "every non-NaN 16-bit value", got, want, rel_bound(want, 0, 0));
  }
}

// ---- attention -------------------------------------------------------------------------

// f16kv: the pools are f16 (TROUPE_OP_ATTENTION_F16KV); the reference reads the same f16
// values, so the bound is the f32 one.
void check_attention(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                     variant_device& dev, const bounds& b, bool f16kv, rng_t& rng, check_result& r) {
  struct heads {
    int64_t n_heads, n_kv_heads;
  };
  struct tokens {
    int64_t n;
    int32_t start_lo, start_hi;
  };
  // GQA groups 1, 2, 4, and 7 and 3 (which a kernel may split into runs of heads).
  for (const heads hs : {heads{2, 2}, heads{4, 2}, heads{8, 2}, heads{7, 1}, heads{6, 2}})
    for (int64_t head_dim : {8, 20, 64})
      for (int64_t block_size : {1, 16, 7})
        // The query tokens follow a prefix already in the cache (a prefill chunk, or one
        // decode) and cross blocks; the last two cross 64 and 128 keys, where a kernel
        // that visits the keys in chunks must carry its softmax over.
        for (const tokens tk :
             {tokens{1, 0, 40}, tokens{3, 0, 40}, tokens{7, 0, 40}, tokens{5, 60, 70}, tokens{1, 130, 200}})
          // Full causal attention, and sliding windows of one key and of 37 (inside and
          // across a 64-key chunk).
          for (int64_t window : {0, 1, 37}) {
            const int64_t n_tokens = tk.n;
            std::uniform_int_distribution<int32_t> startd(tk.start_lo, tk.start_hi);
            const int32_t start = startd(rng);
            const int64_t n_pos = start + n_tokens;
            const int64_t n_blocks = (n_pos + block_size - 1) / block_size + 2;
            std::vector<int32_t> table(n_blocks);  // a shuffled mapping, not the identity
            for (int64_t b = 0; b < n_blocks; ++b) table[b] = (int32_t)b;
            std::shuffle(table.begin(), table.end(), rng);
            std::vector<int32_t> pos(n_tokens);
            for (int64_t t = 0; t < n_tokens; ++t) pos[t] = start + (int32_t)t;
            const int64_t pool_elems = n_blocks * block_size * hs.n_kv_heads * head_dim;
            const auto k_pool = uniform(rng, pool_elems), v_pool = uniform(rng, pool_elems);
            const auto q = uniform(rng, n_tokens * hs.n_heads * head_dim, -2, 2);
            const float scale = 1.0f / std::sqrt((float)head_dim);
            std::vector<float> want(q.size()), got(q.size(), NAN);
            if (f16kv) {
              std::vector<uint16_t> k16(pool_elems), v16(pool_elems);
              for (int64_t i = 0; i < pool_elems; ++i) k16[i] = f32_to_f16(k_pool[i]), v16[i] = f32_to_f16(v_pool[i]);
              as<troupe_attention_f16kv_fn>(ref)(ctx, want.data(), q.data(), k16.data(), v16.data(), table.data(),
                                                 pos.data(), n_tokens, hs.n_heads, hs.n_kv_heads, head_dim, block_size,
                                                 scale, window);
              staged d(dev);
              float* dout = d.out(got);
              as<troupe_attention_f16kv_fn>(var)(d.ctx(), dout, d.in(q), d.in(k16), d.in(v16), d.in(table), d.in(pos),
                                                 n_tokens, hs.n_heads, hs.n_kv_heads, head_dim, block_size, scale,
                                                 window);
              d.back(got, dout);
            } else {
              as<troupe_attention_fn>(ref)(ctx, want.data(), q.data(), k_pool.data(), v_pool.data(), table.data(),
                                           pos.data(), n_tokens, hs.n_heads, hs.n_kv_heads, head_dim, block_size, scale,
                                           window);
              staged d(dev);
              float* dout = d.out(got);
              as<troupe_attention_fn>(var)(d.ctx(), dout, d.in(q), d.in(k_pool), d.in(v_pool), d.in(table), d.in(pos),
                                           n_tokens, hs.n_heads, hs.n_kv_heads, head_dim, block_size, scale, window);
              d.back(got, dout);
            }
            std::ostringstream label;
            label << "heads=" << hs.n_heads << "/" << hs.n_kv_heads << " head_dim=" << head_dim
                  << " block=" << block_size << " tokens=" << n_tokens << " positions " << start << ".." << n_pos - 1
                  << " window=" << window;
            compare(r, label.str(), got, want, rel_bound(want, b.pick(5e-6, 1e-4), b.pick(1e-5, 1e-3)));
          }
}

// Every exponent range (subnormal, normal, overflowing to infinity), the halfway cases of
// the rounding, signed zeros, infinities and NaN: the f16 bits must equal the reference's.
void check_to_f16(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                  variant_device& dev, rng_t& rng, check_result& r) {
  for (int64_t n : {1, 7, 16, 33, 1000, 70001}) {
    std::vector<float> x(n);
    std::uniform_int_distribution<int> e(-30, 17);
    std::uniform_real_distribution<float> m(-2.0f, 2.0f);
    for (auto& v : x) v = std::ldexp(m(rng), e(rng));
    const float special[] = {0.0f,
                             -0.0f,
                             INFINITY,
                             -INFINITY,
                             NAN,
                             65504.0f,
                             65520.0f,
                             65519.99f,
                             -70000.0f,
                             std::ldexp(1.0f, -24),
                             1e-8f,
                             std::ldexp(3.0f, -26),
                             1.0f + std::ldexp(1.0f, -11),
                             1.0f + std::ldexp(3.0f, -11),
                             std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)};
    for (size_t i = 0; i < std::size(special) && i < x.size(); ++i) x[i * x.size() / std::size(special)] = special[i];
    std::vector<uint16_t> want(n), got(n, 0xffff);
    as<troupe_to_f16_fn>(ref)(ctx, want.data(), x.data(), n);
    {
      staged d(dev);
      uint16_t* dout = d.out(got);
      as<troupe_to_f16_fn>(var)(d.ctx(), dout, d.in(x), n);
      d.back(got, dout);
    }
    // Compared as bit patterns, exactly; any NaN pattern counts as NaN (payloads differ by device).
    auto bits = [](const std::vector<uint16_t>& h) {
      std::vector<float> f(h.size());
      for (size_t i = 0; i < h.size(); ++i) f[i] = (h[i] & 0x7c00) == 0x7c00 && (h[i] & 0x3ff) ? 0x7e00 : h[i];
      return f;
    };
    const std::vector<float> wantf = bits(want), gotf = bits(got);
    compare(r, "n=" + std::to_string(n), gotf, wantf, rel_bound(wantf, 0, 0));
  }
}

// New rows land exactly where attention reads them; every other slot is left as it was
// (a negative slot skips its token). f16 pools must hold the bits to_f16 gives.
void check_kv_store(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                    variant_device& dev, bool f16, rng_t& rng, check_result& r) {
  for (int64_t n_kv_heads : {1, 2, 3})
    for (int64_t head_dim : {8, 20, 64})
      for (int64_t block_size : {1, 7, 16})
        for (int64_t n_tokens : {1, 5, 40, 300}) {  // 300 x 3 x 64: big enough to split
          const int64_t n_blocks = n_tokens / block_size + 3, kv_dim = n_kv_heads * head_dim;
          const int64_t pool_elems = n_blocks * n_kv_heads * block_size * head_dim;
          std::vector<int32_t> slots(n_blocks * block_size);  // distinct slots, shuffled
          for (size_t i = 0; i < slots.size(); ++i) slots[i] = (int32_t)i;
          std::shuffle(slots.begin(), slots.end(), rng);
          slots.resize(n_tokens);
          if (n_tokens > 1) slots[1] = -1;
          const auto k = uniform(rng, n_tokens * kv_dim, -70000, 70000), v = uniform(rng, n_tokens * kv_dim);
          const std::string label = "kv_heads=" + std::to_string(n_kv_heads) + " head_dim=" + std::to_string(head_dim) +
                                    " block=" + std::to_string(block_size) + " tokens=" + std::to_string(n_tokens);
          auto run = [&](auto fill) {
            using E = decltype(fill);
            std::vector<E> want_k(pool_elems, fill), want_v(pool_elems, fill), got_k = want_k, got_v = want_v;
            as<troupe_kv_store_fn>(ref)(ctx, want_k.data(), want_v.data(), k.data(), v.data(), slots.data(), n_tokens,
                                        n_kv_heads, head_dim, block_size);
            {
              staged d(dev);
              E* dk = d.out(got_k);
              E* dv = d.out(got_v);
              as<troupe_kv_store_fn>(var)(d.ctx(), dk, dv, d.in(k), d.in(v), d.in(slots), n_tokens, n_kv_heads,
                                          head_dim, block_size);
              d.back(got_k, dk);
              d.back(got_v, dv);
            }
            auto as_f = [](const std::vector<E>& e) { return std::vector<float>(e.begin(), e.end()); };
            const auto wk = as_f(want_k), wv = as_f(want_v);
            compare(r, label + " K", as_f(got_k), wk, rel_bound(wk, 0, 0));
            compare(r, label + " V", as_f(got_v), wv, rel_bound(wv, 0, 0));
          };
          if (f16)
            run(uint16_t{0x7bff});
          else
            run(-1.5f);
        }
}

void check_argmax(const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
                  variant_device& dev, const bounds& b, rng_t& rng, check_result& r) {
  for (int64_t rows : {1, 3})
    for (int64_t n : {1, 7, 16, 33, 257, 1000, 32000, 128256})
      for (float temperature : {1.0f, 0.7f, 2.5f}) {
        auto logits = uniform(rng, rows * n, -12, 12);
        for (int64_t row = 0; row < rows && n > 2; ++row) {
          float* x = &logits[row * n];
          if (row == 1) {  // the maximum twice: the lower index must win
            x[n - 1] = 30.0f;
            x[n / 2] = 30.0f;
          }
          if (row == 2) {  // masked entries and a large maximum
            for (int64_t i = 0; i < n; i += 3) x[i] = -INFINITY;
            x[n / 3 + 1] = 80.0f;
          }
        }
        std::vector<int32_t> want_ids(rows), got_ids(rows, -1);
        std::vector<float> want_lp(rows), got_lp(rows, NAN);
        as<troupe_argmax_fn>(ref)(ctx, want_ids.data(), want_lp.data(), logits.data(), rows, n, temperature);
        {
          staged d(dev);
          int32_t* dids = d.out(got_ids);
          float* dlp = d.out(got_lp);
          as<troupe_argmax_fn>(var)(d.ctx(), dids, dlp, d.in(logits), rows, n, temperature);
          d.back(got_ids, dids);
          d.back(got_lp, dlp);
        }
        const std::string label =
            "rows=" + std::to_string(rows) + " n=" + std::to_string(n) + " temperature=" + std::to_string(temperature);
        const std::vector<float> want_idf(want_ids.begin(), want_ids.end()), got_idf(got_ids.begin(), got_ids.end());
        compare(r, label + " ids", got_idf, want_idf, rel_bound(want_idf, 0, 0));
        compare(r, label + " logprobs", got_lp, want_lp, rel_bound(want_lp, b.pick(2e-6, 2e-5), b.pick(1e-5, 1e-4)));
      }
}

void check_one(troupe_op op, const troupe_kernel_variant& ref, const troupe_kernel_variant& var, const troupe_kctx* ctx,
               variant_device& dev, rng_t& rng, check_result& r) {
  const bounds b{var.backend == TROUPE_BACKEND_CUDA};
  switch (op) {
    case TROUPE_OP_MATMUL_F32:
    case TROUPE_OP_MATMUL_F16:
    case TROUPE_OP_MATMUL_BF16:
    case TROUPE_OP_MATMUL_Q8_0:
    case TROUPE_OP_MATMUL_Q4_0:
      return check_matmul(op, ref, var, ctx, dev, b, rng, r);
    case TROUPE_OP_RMSNORM:
      return check_rmsnorm(ref, var, ctx, dev, b, rng, r);
    case TROUPE_OP_ROPE:
      return check_rope(ref, var, ctx, dev, b, rng, r);
    case TROUPE_OP_ATTENTION:
    case TROUPE_OP_ATTENTION_F16KV:
      return check_attention(ref, var, ctx, dev, b, op == TROUPE_OP_ATTENTION_F16KV, rng, r);
    case TROUPE_OP_TO_F16:
      return check_to_f16(ref, var, ctx, dev, rng, r);
    case TROUPE_OP_SILU_MUL:
      return check_silu_mul(ref, var, ctx, dev, rng, r);
    case TROUPE_OP_ADD:
      return check_add(ref, var, ctx, dev, rng, r);
    case TROUPE_OP_ARGMAX:
      return check_argmax(ref, var, ctx, dev, b, rng, r);
    case TROUPE_OP_ADD_BIAS:
      return check_add_bias(ref, var, ctx, dev, rng, r);
    case TROUPE_OP_ADD_RMSNORM:
      return check_add_rmsnorm(ref, var, ctx, dev, b, rng, r);
    case TROUPE_OP_KV_STORE:
    case TROUPE_OP_KV_STORE_F16:
      return check_kv_store(ref, var, ctx, dev, op == TROUPE_OP_KV_STORE_F16, rng, r);
    default:
      return check_embedding(op, ref, var, ctx, dev, rng, r);
  }
}

}  // namespace

std::unique_ptr<variant_device> make_host_device(const troupe_kctx* ctx) { return std::make_unique<host_device>(ctx); }

std::vector<check_result> check_variants(const kernel_registry& reg, const troupe_kctx* ctx, const check_options& opt) {
  std::vector<check_result> out;
  host_device host(ctx);
  for (int o = 0; o < TROUPE_OP_COUNT; ++o) {
    const auto op = static_cast<troupe_op>(o);
    if (!opt.op.empty() && opt.op != op_name(op)) continue;
    const troupe_kernel_variant* ref = reg.find(op, "ref");
    if (!ref) continue;
    for (const auto& v : reg.variants(op)) {
      if (opt.variant.empty() ? std::string_view(v.name) == "ref" : opt.variant != v.name) continue;
      check_result r;
      r.op = op;
      r.variant = v.name;
      r.backend = v.backend;
      variant_device* dev = v.backend == TROUPE_BACKEND_CPU ? &host : opt.cuda;
      if (!dev) {
        r.skipped = true;
        r.skip_reason = opt.cuda_skip_reason.empty() ? "no CUDA device" : opt.cuda_skip_reason;
        out.push_back(std::move(r));
        continue;
      }
      rng_t rng(opt.seed * 1000003 + o);  // the same inputs for every variant of an op
      try {
        check_one(op, *ref, v, ctx, *dev, rng, r);
      } catch (const std::exception& e) {  // a device error: the variant fails, the others go on
        r.pass = false;
        r.first_failure = std::string("threw: ") + e.what();
      }
      out.push_back(std::move(r));
    }
  }
  return out;
}

std::vector<char> random_weights(int dtype, int64_t rows, int64_t k, uint64_t seed) {
  rng_t rng(seed);
  return encode_rows(dtype, uniform(rng, rows * k), rows, k);
}

std::string tolerance_summary(troupe_op op, troupe_backend backend) {
  if (backend == TROUPE_BACKEND_CUDA) switch (op) {
      case TROUPE_OP_MATMUL_BF16:
        return "1e-6 + 1e-5|ref| + (k u + 2^-7) sum|x w|";
      case TROUPE_OP_MATMUL_F32:
      case TROUPE_OP_MATMUL_F16:
        return "1e-6 + 1e-5|ref| + (k u + 2^-10) sum|x w|";
      case TROUPE_OP_MATMUL_Q8_0:
      case TROUPE_OP_MATMUL_Q4_0:
        return "1e-6 + 1e-5|ref| + (k u + 2^-10) sum|x w| + sum_b 0.0044 amax_b(x) sum_b|w|";
      case TROUPE_OP_RMSNORM:
      case TROUPE_OP_ADD_RMSNORM:
        return "1e-5 + (1e-4 + dim u)|ref|";
      case TROUPE_OP_ROPE:
        return "1e-5 + 1e-4|ref|";
      case TROUPE_OP_ATTENTION:
      case TROUPE_OP_ATTENTION_F16KV:
        return "1e-4 + 1e-3|ref|";
      case TROUPE_OP_ARGMAX:
        return "ids exact; logprobs 2e-5 + 1e-4|ref|";
      default:
        break;  // as on the CPU
    }
  switch (op) {
    case TROUPE_OP_MATMUL_F32:
    case TROUPE_OP_MATMUL_F16:
    case TROUPE_OP_MATMUL_BF16:
      return "1e-6 + 1e-5|ref| + k u sum|x w|";
    case TROUPE_OP_MATMUL_Q8_0:
    case TROUPE_OP_MATMUL_Q4_0:
      return "1e-6 + 1e-5|ref| + k u sum|x w| + sum_b 0.0044 amax_b(x) sum_b|w|";
    case TROUPE_OP_RMSNORM:
      return "1e-6 + (1e-6 + dim u)|ref|";
    case TROUPE_OP_ADD_RMSNORM:
      return "x exact; 1e-6 + (1e-6 + dim u)|ref|";
    case TROUPE_OP_ROPE:
    case TROUPE_OP_SILU_MUL:
      return "1e-6 + 1e-5|ref|";
    case TROUPE_OP_ATTENTION:
    case TROUPE_OP_ATTENTION_F16KV:
      return "5e-6 + 1e-5|ref|";
    case TROUPE_OP_ARGMAX:
      return "ids exact; logprobs 2e-6 + 1e-5|ref|";
    default:
      return "exact";
  }
}

}  // namespace troupe::kern
