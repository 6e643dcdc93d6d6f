// The CPU worker backend. One step() runs every sequence of the plan through the model at
// once: the new tokens of all sequences form one (n_tokens, dim) activation matrix, so each
// weight matrix is streamed once per step whatever the batch; only attention runs per
// sequence, over that sequence's KV blocks.
#include "src/cpu_backend.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <numbers>

#include "kernels/cpu/thread_pool.h"
#include "kernels/ref/dtype.h"
#include "src/rope_frequencies.h"
#include "src/sampler.h"
#include "src/tp/shard.h"
#include "troupe/communicator.h"
#include "src/step_check.h"
#include "troupe/error.h"

namespace troupe {

namespace {

[[noreturn]] void fail(const std::string& msg, const std::string& field = {}) {
  throw error(error_kind::failed, msg, field);
}

int dtype_index(troupe_dtype t) {
  switch (t) {
    case TROUPE_F32:
      return 0;
    case TROUPE_F16:
      return 1;
    case TROUPE_BF16:
      return 2;
    case TROUPE_Q8_0:
      return 3;
    case TROUPE_Q4_0:
      return 4;
  }
  return -1;
}

int64_t physical_ram_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? (int64_t)pages * page : 0;
}

}  // namespace

// ---- activation buffers ---------------------------------------------------------------

struct cpu_backend::scratch {
  std::vector<int32_t> ids, positions;  // (n_tokens)
  std::vector<int64_t> seq_begin;       // (n_seqs + 1) first token of each sequence
  std::vector<float> x;                 // (n_tokens, dim) the residual stream
  std::vector<float> xb;                // (n_tokens, dim)
  std::vector<float> q, att;            // (n_tokens, n_heads * head_dim)
  std::vector<float> k, v;              // (n_tokens, n_kv_heads * head_dim)
  std::vector<float> hb, hb2;           // (n_tokens, hidden_dim)
  std::vector<float> last;              // (n_sampled, dim) final hidden state of sampled tokens
  std::vector<float> logits;            // (n_sampled, vocab)
  int64_t n_sampled = 0;
};

// ---- construction: check the weights against the config, size the KV pool ------------

cpu_backend::cpu_backend(const model_file& model, const kernel_registry& registry, const cpu_backend_options& opt)
    : cfg_(tp::config_of(model, opt.shard)),
      w_(tp::weights_of(model, opt.shard)),
      opt_(opt),
      s_(std::make_unique<scratch>()) {
  tp::check_shard_and_comm(opt.shard, opt.comm, "cpu backend");
  const model_config& c = cfg_;
  if (c.dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.hidden_dim <= 0 ||
      c.vocab_size <= 0)
    fail(model.path() +
         ": config has a non-positive dimension (dim, n_layers, n_heads, n_kv_heads, head_dim, "
         "hidden_dim, vocab_size)");
  if (c.n_heads % c.n_kv_heads != 0)
    fail(model.path() + ": n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
             std::to_string(c.n_kv_heads),
         "n_kv_heads");
  if (c.head_dim % 2 != 0) fail(model.path() + ": head_dim must be even for RoPE", "head_dim");
  if ((int64_t)w_.layers.size() != c.n_layers)
    fail(model.path() + ": " + std::to_string(w_.layers.size()) + " layers of weights, config says " +
         std::to_string(c.n_layers));
  if (opt.block_size <= 0) fail("cpu backend: block_size must be > 0", "block_size");
  if (opt.max_batch_tokens <= 0) fail("cpu backend: max_batch_tokens must be > 0", "max_batch_tokens");

  std::string desc;
  auto note = [&](troupe_op op) {
    const std::string item = std::string(op_name(op)) + "=" + registry.selected(op).name;
    if (desc.find(item) == std::string::npos) desc += (desc.empty() ? "" : " ") + item;
  };
  auto check = [&](const tensor_view& t, int64_t rows, int64_t cols) {
    if (!t.data) fail(model.path() + ": tensor " + t.name + " has no data", "tensor " + t.name);
    if (t.rows != rows || t.cols != cols)
      fail(model.path() + ": tensor " + t.name + " is (" + std::to_string(t.rows) + ", " + std::to_string(t.cols) +
               "), expected (" + std::to_string(rows) + ", " + std::to_string(cols) + ")",
           "tensor " + t.name);
    const int di = dtype_index(t.dtype);
    if (di < 0 || kern::row_bytes(t.dtype, cols) < 0 || (di >= 3 && cols % kern::QK != 0))
      fail(model.path() + ": tensor " + t.name + " has unsupported type " + std::to_string((int)t.dtype) +
               " for its width " + std::to_string(cols),
           "tensor " + t.name);
    return di;
  };
  auto check_matmul = [&](const tensor_view& t, int64_t rows, int64_t cols) {
    const int di = check(t, rows, cols);
    const auto op = static_cast<troupe_op>(TROUPE_OP_MATMUL_F32 + di);
    matmul_[di] = registry.get<troupe_matmul_fn>(op);
    note(op);
  };
  auto check_norm = [&](const tensor_view& t) {
    if (!t.data || t.dtype != TROUPE_F32 || t.rows * t.cols != c.dim)
      fail(model.path() + ": norm " + t.name + " must be f32 of " + std::to_string(c.dim) + " elements",
           "tensor " + t.name);
  };

  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  const int emb = check(w_.tok_embd, c.vocab_size, c.dim);
  const auto emb_op = static_cast<troupe_op>(TROUPE_OP_EMBEDDING_F32 + emb);
  embedding_ = registry.get<troupe_embedding_fn>(emb_op);
  note(emb_op);
  for (const layer_weights& L : w_.layers) {
    check_norm(L.attn_norm);
    check_matmul(L.wq, q_dim, c.dim);
    check_matmul(L.wk, kv_dim, c.dim);
    check_matmul(L.wv, kv_dim, c.dim);
    check_matmul(L.wo, c.dim, q_dim);
    check_norm(L.ffn_norm);
    check_matmul(L.w_gate, c.hidden_dim, c.dim);
    check_matmul(L.w_up, c.hidden_dim, c.dim);
    check_matmul(L.w_down, c.dim, c.hidden_dim);
  }
  check_norm(w_.output_norm);
  check_matmul(w_.output, c.vocab_size, c.dim);
  rmsnorm_ = registry.get<troupe_rmsnorm_fn>(TROUPE_OP_RMSNORM);
  rope_ = registry.get<troupe_rope_fn>(TROUPE_OP_ROPE);
  attention_ = registry.get<troupe_attention_fn>(TROUPE_OP_ATTENTION);
  attention_f16kv_ = registry.get<troupe_attention_f16kv_fn>(TROUPE_OP_ATTENTION_F16KV);
  to_f16_ = registry.get<troupe_to_f16_fn>(TROUPE_OP_TO_F16);
  silu_mul_ = registry.get<troupe_silu_mul_fn>(TROUPE_OP_SILU_MUL);
  add_ = registry.get<troupe_add_fn>(TROUPE_OP_ADD);
  argmax_ = registry.get<troupe_argmax_fn>(TROUPE_OP_ARGMAX);
  for (troupe_op op : {TROUPE_OP_RMSNORM, TROUPE_OP_ROPE, TROUPE_OP_SILU_MUL, TROUPE_OP_ADD, TROUPE_OP_ARGMAX})
    note(op);
  if (opt.kv_f16) {
    note(TROUPE_OP_ATTENTION_F16KV);
    note(TROUPE_OP_TO_F16);
  } else {
    note(TROUPE_OP_ATTENTION);
  }
  kernels_desc_ = desc;

  if (opt.kctx) {
    kctx_ = *opt.kctx;
  } else {
    pool_ = std::make_unique<kern::cpu::thread_pool>(std::max(1, opt.n_threads));
    kctx_ = kern::cpu::make_kctx(*pool_);
  }
  inv_freq_ = rope_frequencies(c);

  // The KV pool. Pages are left untouched until a block is written, so a large pool costs
  // address space, not resident memory, until it fills.
  block_size_ = opt.block_size;
  kv_elem_ = opt.kv_f16 ? 2 : 4;
  const int64_t block_bytes = c.n_layers * 2 * (int64_t)block_size_ * kv_dim * kv_elem_;
  const int64_t budget = opt.kv_bytes > 0 ? opt.kv_bytes : (int64_t)(opt.kv_fraction * (double)physical_ram_bytes());
  n_blocks_ = std::min<int64_t>(budget / block_bytes, INT32_MAX);
  if (n_blocks_ <= 0)
    fail("cpu backend: a KV budget of " + std::to_string(budget) + " bytes holds no block of " +
             std::to_string(block_bytes) + " bytes",
         "kv_bytes");
  layer_bytes_ = n_blocks_ * block_size_ * kv_dim * kv_elem_;
  k_pool_ = std::make_unique_for_overwrite<char[]>(c.n_layers * layer_bytes_);
  v_pool_ = std::make_unique_for_overwrite<char[]>(c.n_layers * layer_bytes_);
  spdlog::info("cpu backend: KV pool of {} blocks x {} tokens = {} tokens ({:.1f} MiB, {}, {} layers)", n_blocks_,
               block_size_, n_blocks_ * block_size_, (double)(n_blocks_ * block_bytes) / (1 << 20),
               opt.kv_f16 ? "f16" : "f32", c.n_layers);
  if (opt.swap_bytes < 0) fail("cpu backend: swap_bytes must be >= 0", "swap_bytes");
  n_host_blocks_ = std::min<int64_t>(opt.swap_bytes / block_bytes, INT32_MAX);
  if (n_host_blocks_ > 0) {
    host_pool_ = std::make_unique_for_overwrite<char[]>(n_host_blocks_ * block_bytes);
    spdlog::info("cpu backend: host swap pool of {} blocks x {} tokens ({:.1f} MiB)", n_host_blocks_, block_size_,
                 (double)(n_host_blocks_ * block_bytes) / (1 << 20));
  }

  scratch& s = *s_;
  const int64_t T = opt.max_batch_tokens;
  s.ids.resize(T);
  s.positions.resize(T);
  s.x.resize(T * c.dim);
  s.xb.resize(T * c.dim);
  s.q.resize(T * q_dim);
  s.att.resize(T * q_dim);
  s.k.resize(T * kv_dim);
  s.v.resize(T * kv_dim);
  s.hb.resize(T * c.hidden_dim);
  s.hb2.resize(T * c.hidden_dim);
}

cpu_backend::~cpu_backend() = default;

std::string cpu_backend::describe() const {
  return "cpu (" + std::to_string(kctx_.n_threads) + " threads; " + kernels_desc_ + "; KV " +
         (opt_.kv_f16 ? "f16 " : "f32 ") + std::to_string(n_blocks_) + " blocks x " + std::to_string(block_size_) + ")";
}

void cpu_backend::copy_block(int32_t src, int32_t dst) {
  if (src < 0 || src >= n_blocks_ || dst < 0 || dst >= n_blocks_)
    fail("copy_block: block ids " + std::to_string(src) + " -> " + std::to_string(dst) + " outside [0, " +
             std::to_string(n_blocks_) + ")",
         "block_table");
  if (src == dst) return;
  const int64_t block = layer_bytes_ / n_blocks_;  // one block of one layer's K (or V), bytes
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    const int64_t base = l * layer_bytes_;
    std::memcpy(&k_pool_[base + dst * block], &k_pool_[base + src * block], block);
    std::memcpy(&v_pool_[base + dst * block], &v_pool_[base + src * block], block);
  }
}

std::span<const float> cpu_backend::last_logits(size_t sampled_index) const {
  if ((int64_t)sampled_index >= s_->n_sampled)
    fail("last_logits: index " + std::to_string(sampled_index) + " but the last step sampled " +
         std::to_string(s_->n_sampled) + " sequences");
  return {s_->logits.data() + sampled_index * cfg_.vocab_size, (size_t)cfg_.vocab_size};
}

// ---- one step --------------------------------------------------------------------------

void cpu_backend::validate(const step_plan& plan) const {
  check_step_plan(plan, {cfg_.vocab_size, n_blocks_, block_size_, opt_.max_batch_tokens, 0, 0, n_host_blocks_});
}

// Every swap_out before any swap_in: a slot emptied by a swap_in may take a swap_out only in
// a later plan, while a block a swap_out reads may be the target of a swap_in of the same plan.
void cpu_backend::swap(const step_plan& plan) {
  const int64_t block = layer_bytes_ / n_blocks_;  // one block of one layer's K (or V), bytes
  auto slot_at = [&](int32_t slot, int64_t layer, int kv) {
    return &host_pool_[((slot * cfg_.n_layers + layer) * 2 + kv) * block];
  };
  const size_t bytes = block;
  for (const block_copy& c : plan.swap_out)
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
      const int64_t at = l * layer_bytes_ + c.device_block * block;
      std::memcpy(slot_at(c.host_slot, l, 0), &k_pool_[at], bytes);
      std::memcpy(slot_at(c.host_slot, l, 1), &v_pool_[at], bytes);
    }
  for (const block_copy& c : plan.swap_in)
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
      const int64_t at = l * layer_bytes_ + c.device_block * block;
      std::memcpy(&k_pool_[at], slot_at(c.host_slot, l, 0), bytes);
      std::memcpy(&v_pool_[at], slot_at(c.host_slot, l, 1), bytes);
    }
}

void cpu_backend::matmul(const tensor_view& w, float* y, const float* x, int64_t m) const {
  matmul_[dtype_index(w.dtype)](&kctx_, y, x, w.data, m, w.rows, w.cols);
}

void cpu_backend::forward_layer(int64_t l, const step_plan& plan, int64_t T) {
  const model_config& c = cfg_;
  const layer_weights& L = w_.layers[l];
  scratch& s = *s_;
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  char* k_pool = &k_pool_[l * layer_bytes_];  // (n_blocks, n_kv_heads, block_size, head_dim) f32 or f16
  char* v_pool = &v_pool_[l * layer_bytes_];

  // attention: q, k, v of every new token of every sequence in three matmuls
  rmsnorm_(&kctx_, s.xb.data(), s.x.data(), static_cast<const float*>(L.attn_norm.data), T, c.dim, c.rms_eps);
  matmul(L.wq, s.q.data(), s.xb.data(), T);  // (T, q_dim)
  matmul(L.wk, s.k.data(), s.xb.data(), T);  // (T, kv_dim)
  matmul(L.wv, s.v.data(), s.xb.data(), T);  // (T, kv_dim)
  rope_(&kctx_, s.q.data(), s.positions.data(), T, c.n_heads, c.head_dim, inv_freq_.data(), c.rope_neox);
  rope_(&kctx_, s.k.data(), s.positions.data(), T, c.n_kv_heads, c.head_dim, inv_freq_.data(), c.rope_neox);

  // K/V of the new tokens into their slots, then each sequence attends over its blocks
  const float scale = 1.0f / std::sqrt((float)c.head_dim);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const seq_work& w = plan.seqs[i];
    const int64_t begin = s.seq_begin[i], n = s.seq_begin[i + 1] - begin;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t p = w.start_pos + t;
      const int64_t block = w.block_table[p / block_size_], offset = p % block_size_;
      for (int64_t h = 0; h < c.n_kv_heads; ++h) {
        // KV head h of this token: row (block * n_kv_heads + h) * block_size + offset
        const int64_t at = ((block * c.n_kv_heads + h) * block_size_ + offset) * c.head_dim * kv_elem_;
        const float *ks = &s.k[(begin + t) * kv_dim + h * c.head_dim],
                    *vs = &s.v[(begin + t) * kv_dim + h * c.head_dim];
        if (opt_.kv_f16) {
          to_f16_(nullptr, reinterpret_cast<uint16_t*>(k_pool + at), ks, c.head_dim);
          to_f16_(nullptr, reinterpret_cast<uint16_t*>(v_pool + at), vs, c.head_dim);
        } else {
          std::memcpy(k_pool + at, ks, c.head_dim * sizeof(float));
          std::memcpy(v_pool + at, vs, c.head_dim * sizeof(float));
        }
      }
    }
    if (opt_.kv_f16)
      attention_f16kv_(&kctx_, &s.att[begin * q_dim], &s.q[begin * q_dim], reinterpret_cast<const uint16_t*>(k_pool),
                       reinterpret_cast<const uint16_t*>(v_pool), w.block_table.data(), &s.positions[begin], n,
                       c.n_heads, c.n_kv_heads, c.head_dim, block_size_, scale);
    else
      attention_(&kctx_, &s.att[begin * q_dim], &s.q[begin * q_dim], reinterpret_cast<const float*>(k_pool),
                 reinterpret_cast<const float*>(v_pool), w.block_table.data(), &s.positions[begin], n, c.n_heads,
                 c.n_kv_heads, c.head_dim, block_size_, scale);
  }
  matmul(L.wo, s.xb.data(), s.att.data(), T);  // (T, dim): this rank's heads' share
  if (opt_.comm) opt_.comm->all_reduce_sum(s.xb.data(), T * c.dim);
  add_(&kctx_, s.x.data(), s.x.data(), s.xb.data(), T * c.dim);

  // SwiGLU feed-forward
  rmsnorm_(&kctx_, s.xb.data(), s.x.data(), static_cast<const float*>(L.ffn_norm.data), T, c.dim, c.rms_eps);
  matmul(L.w_gate, s.hb.data(), s.xb.data(), T);  // (T, hidden)
  matmul(L.w_up, s.hb2.data(), s.xb.data(), T);   // (T, hidden)
  silu_mul_(&kctx_, s.hb.data(), s.hb.data(), s.hb2.data(), T * c.hidden_dim);
  matmul(L.w_down, s.xb.data(), s.hb.data(), T);  // (T, dim): this rank's slice of hidden
  if (opt_.comm) opt_.comm->all_reduce_sum(s.xb.data(), T * c.dim);
  add_(&kctx_, s.x.data(), s.x.data(), s.xb.data(), T * c.dim);
}

step_result cpu_backend::step(const step_plan& plan) {
  validate(plan);
  swap(plan);
  const model_config& c = cfg_;
  scratch& s = *s_;

  // gather the new tokens of every sequence into one batch
  s.seq_begin.assign(1, 0);
  int64_t T = 0;
  for (const seq_work& w : plan.seqs) {
    for (size_t t = 0; t < w.tokens.size(); ++t, ++T) {
      s.ids[T] = w.tokens[t];
      s.positions[T] = w.start_pos + (int32_t)t;
    }
    s.seq_begin.push_back(T);
  }

  step_result result;
  result.step_id = plan.step_id;
  s.n_sampled = 0;
  if (T == 0) return result;

  embedding_(&kctx_, s.x.data(), w_.tok_embd.data, s.ids.data(), T, c.dim);  // (T, dim)
  for (int64_t l = 0; l < c.n_layers; ++l) forward_layer(l, plan, T);

  // logits only for the last token of each sequence that samples
  int64_t S = 0;
  for (const seq_work& w : plan.seqs) S += w.sample ? 1 : 0;
  s.last.resize(S * c.dim);
  s.logits.resize(S * c.vocab_size);
  for (size_t i = 0, j = 0; i < plan.seqs.size(); ++i)
    if (plan.seqs[i].sample)
      std::memcpy(&s.last[j++ * c.dim], &s.x[(s.seq_begin[i + 1] - 1) * c.dim], c.dim * sizeof(float));
  if (S > 0) {
    rmsnorm_(&kctx_, s.last.data(), s.last.data(), static_cast<const float*>(w_.output_norm.data), S, c.dim, c.rms_eps);
    matmul(w_.output, s.logits.data(), s.last.data(), S);  // (S, vocab)
  }
  s.n_sampled = S;

  result.outputs.reserve(plan.seqs.size());
  for (size_t i = 0, j = 0; i < plan.seqs.size(); ++i) {
    const seq_work& w = plan.seqs[i];
    if (w.sample) {
      result.outputs.push_back(sample_next(last_logits(j++), w, {argmax_, &kctx_}));
    } else {
      seq_output o;
      o.seq_id = w.seq_id;
      result.outputs.push_back(o);
    }
  }
  return result;
}

}  // namespace troupe
