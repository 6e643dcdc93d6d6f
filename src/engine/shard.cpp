#include "src/engine/shard.h"

#include <cstring>
#include <string>

#include "kernels/ref/dtype.h"
#include "troupe/communicator.h"
#include "troupe/error.h"

namespace troupe::tp {

namespace {

[[noreturn]] void cannot_split(const std::string& what, int64_t n, int size) {
  throw error(
      error_kind::failed,
      "tensor parallel: " + what + " = " + std::to_string(n) + " cannot be split " + std::to_string(size) + " ways",
      what);
}

// Rows [r0, r0 + n) of a row-major matrix: contiguous, so a view.
tensor_view row_slice(const tensor_view& t, int64_t r0, int64_t n) {
  tensor_view v = t;
  v.data = static_cast<const char*>(t.data) + r0 * kern::row_bytes(t.dtype, t.cols);
  v.rows = n;
  return v;
}

// Columns [c0, c0 + n) of every row: strided, so copied into an owned buffer.
tensor_view col_slice(const tensor_view& t, int64_t c0, int64_t n, shard& s) {
  const bool quantized = t.dtype == TROUPE_Q8_0 || t.dtype == TROUPE_Q4_0;
  if (quantized && (c0 % kern::QK || n % kern::QK))
    throw error(error_kind::failed,
                "tensor parallel: " + t.name + " is block-quantized (32 columns per block) and its column split [" +
                    std::to_string(c0) + ", " + std::to_string(c0 + n) + ") is not block-aligned",
                t.name);
  const int64_t src_rb = kern::row_bytes(t.dtype, t.cols);
  const int64_t off = kern::row_bytes(t.dtype, c0);
  const int64_t dst_rb = kern::row_bytes(t.dtype, n);
  auto buf = std::make_unique<char[]>(dst_rb * t.rows);
  for (int64_t r = 0; r < t.rows; ++r)
    std::memcpy(buf.get() + r * dst_rb, static_cast<const char*>(t.data) + r * src_rb + off, dst_rb);
  tensor_view v = t;
  v.data = buf.get();
  v.cols = n;
  s.bytes_owned += dst_rb * t.rows;
  s.owned.push_back(std::move(buf));
  return v;
}

// Elements [e0, e0 + n) of an f32 vector (a bias): contiguous, so a view.
tensor_view vec_slice(const tensor_view& t, int64_t e0, int64_t n) {
  if (!t.data) return t;  // absent: the backend reports it
  tensor_view v = t;
  v.data = static_cast<const float*>(t.data) + e0;
  v.cols = n;
  return v;
}

}  // namespace

shard make_shard(const model_config& cfg, const model_weights& w, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size)
    throw error(
        error_kind::failed,
        "tensor parallel: rank " + std::to_string(rank) + " of size " + std::to_string(size) + " is out of range",
        "rank");
  shard s;
  s.rank = rank;
  s.size = size;
  s.config = cfg;
  s.weights = w;
  if (size == 1) return s;

  if (cfg.n_heads % size) cannot_split("n_heads", cfg.n_heads, size);
  if (cfg.hidden_dim % size) cannot_split("hidden_dim", cfg.hidden_dim, size);
  const int64_t heads = cfg.n_heads / size;
  int64_t kv_heads;
  if (cfg.n_kv_heads >= size) {
    if (cfg.n_kv_heads % size) cannot_split("n_kv_heads", cfg.n_kv_heads, size);
    kv_heads = cfg.n_kv_heads / size;
    s.first_kv_head = rank * kv_heads;
  } else {
    if (size % cfg.n_kv_heads) cannot_split("n_kv_heads", cfg.n_kv_heads, size);
    kv_heads = 1;  // replicated on size / n_kv_heads ranks
    s.first_kv_head = rank / (size / cfg.n_kv_heads);
  }
  s.first_head = rank * heads;
  const int64_t hidden = cfg.hidden_dim / size;
  const int64_t hd = cfg.head_dim;
  s.config.n_heads = heads;
  s.config.n_kv_heads = kv_heads;
  s.config.hidden_dim = hidden;

  for (size_t l = 0; l < w.layers.size(); ++l) {
    const layer_weights& src = w.layers[l];
    layer_weights& dst = s.weights.layers[l];
    dst.wq = row_slice(src.wq, s.first_head * hd, heads * hd);
    dst.wk = row_slice(src.wk, s.first_kv_head * hd, kv_heads * hd);
    dst.wv = row_slice(src.wv, s.first_kv_head * hd, kv_heads * hd);
    if (cfg.qkv_bias) {  // the biases follow their projections' rows; q/k norms are per head, shared
      dst.bq = vec_slice(src.bq, s.first_head * hd, heads * hd);
      dst.bk = vec_slice(src.bk, s.first_kv_head * hd, kv_heads * hd);
      dst.bv = vec_slice(src.bv, s.first_kv_head * hd, kv_heads * hd);
    }
    dst.wo = col_slice(src.wo, s.first_head * hd, heads * hd, s);
    dst.w_gate = row_slice(src.w_gate, rank * hidden, hidden);
    dst.w_up = row_slice(src.w_up, rank * hidden, hidden);
    dst.w_down = col_slice(src.w_down, rank * hidden, hidden, s);
  }
  return s;
}

void check_shard_and_comm(const shard* s, const communicator* comm, const std::string& backend) {
  if (!s && !comm) return;
  if (!s || !comm)
    throw error(error_kind::failed,
                backend + ": tensor parallel needs both the shard and the communicator (got only the " +
                    (s ? "shard" : "communicator") + ")",
                "shard");
  if (s->size != comm->size() || s->rank != comm->rank())
    throw error(error_kind::failed,
                backend + ": the shard is rank " + std::to_string(s->rank) + " of " + std::to_string(s->size) +
                    " but the communicator is " + comm->describe(),
                "shard");
}

}  // namespace troupe::tp
