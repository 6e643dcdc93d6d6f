// The CPU worker backend. One step() runs every sequence of the plan through the model at
// once: the new tokens of all sequences form one (n_tokens, dim) activation matrix
// (gather_batch), so each weight matrix is streamed once per step whatever the batch; only
// attention runs per sequence, over that sequence's KV blocks. The layer is the shared
// recipe (src/engine/llama_recipe.h); this file is its executor on host buffers.
#include "src/engine/cpu_backend.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <numbers>

#include "kernels/cpu/thread_pool.h"
#include "kernels/ref/dtype.h"
#include "src/engine/rope_frequencies.h"
#include "src/engine/sampler.h"
#include "src/engine/shard.h"
#include "troupe/communicator.h"
#include "src/engine/step_check.h"
#include "troupe/error.h"

namespace troupe {

namespace {

[[noreturn]] void fail(const std::string& msg, const std::string& field = {}) {
  throw error(error_kind::failed, msg, field);
}

int64_t physical_ram_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? (int64_t)pages * page : 0;
}

}  // namespace

// ---- activation buffers ---------------------------------------------------------------

struct cpu_backend::scratch {
  step_batch batch;             // the plan's tokens, positions, slots, in plan order
  std::vector<float> x;         // (n_tokens, dim) the residual stream
  std::vector<float> xn, tmp;   // (n_tokens, dim) normed; output of wo and w_down
  std::vector<float> q, att;    // (n_tokens, n_heads * head_dim)
  std::vector<float> k, v;      // (n_tokens, n_kv_heads * head_dim)
  std::vector<float> gate, up;  // (n_tokens, hidden_dim)
  std::vector<float> last;      // (n_sampled, dim) final hidden state of sampled tokens
  std::vector<float> logits;    // (n_sampled, vocab)
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

  // Every op of the recipe through the registry: the variant selected for the CPU of the
  // op's form for each weight type and for the KV type, or a clear error naming them.
  std::string desc;
  auto pick = [&](troupe_op op, troupe_dtype t) {
    const troupe_kernel_variant& v = registry.require(op, TROUPE_BACKEND_CPU, t);
    const std::string item = std::string(op_name(v.op)) + "=" + v.name;
    if (desc.find(item) == std::string::npos) desc += (desc.empty() ? "" : " ") + item;
    return v.fn;
  };
  auto check = [&](const tensor_view& t, int64_t rows, int64_t cols) {
    if (!t.data) fail(model.path() + ": tensor " + t.name + " has no data", "tensor " + t.name);
    if (t.rows != rows || t.cols != cols)
      fail(model.path() + ": tensor " + t.name + " is (" + std::to_string(t.rows) + ", " + std::to_string(t.cols) +
               "), expected (" + std::to_string(rows) + ", " + std::to_string(cols) + ")",
           "tensor " + t.name);
    const int di = weight_family_index(t.dtype);
    if (di < 0 || kern::row_bytes(t.dtype, cols) < 0 || (di >= 3 && cols % kern::QK != 0))
      fail(model.path() + ": tensor " + t.name + " has unsupported type " + std::to_string((int)t.dtype) +
               " for its width " + std::to_string(cols),
           "tensor " + t.name);
    return di;
  };
  auto check_matmul = [&](const tensor_view& t, int64_t rows, int64_t cols) {
    const int di = check(t, rows, cols);
    matmul_[di] = reinterpret_cast<troupe_matmul_fn>(pick(TROUPE_OP_MATMUL_F32, t.dtype));
  };
  auto check_vector = [&](const tensor_view& t, int64_t n, const char* what) {
    if (!t.data || t.dtype != TROUPE_F32 || t.rows * t.cols != n)
      fail(model.path() + ": " + what + " " + t.name + " must be f32 of " + std::to_string(n) + " elements",
           "tensor " + t.name);
  };
  auto check_norm = [&](const tensor_view& t) { check_vector(t, c.dim, "norm"); };

  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  check(w_.tok_embd, c.vocab_size, c.dim);
  embedding_ = reinterpret_cast<troupe_embedding_fn>(pick(TROUPE_OP_EMBEDDING_F32, w_.tok_embd.dtype));
  for (const layer_weights& L : w_.layers) {
    check_norm(L.attn_norm);
    check_matmul(L.wq, q_dim, c.dim);
    check_matmul(L.wk, kv_dim, c.dim);
    check_matmul(L.wv, kv_dim, c.dim);
    check_matmul(L.wo, c.dim, q_dim);
    if (c.qkv_bias) {
      check_vector(L.bq, q_dim, "bias");
      check_vector(L.bk, kv_dim, "bias");
      check_vector(L.bv, kv_dim, "bias");
    }
    if (c.qk_norm) {
      check_vector(L.q_norm, c.head_dim, "norm");
      check_vector(L.k_norm, c.head_dim, "norm");
    }
    check_norm(L.ffn_norm);
    check_matmul(L.w_gate, c.hidden_dim, c.dim);
    check_matmul(L.w_up, c.hidden_dim, c.dim);
    check_matmul(L.w_down, c.dim, c.hidden_dim);
  }
  check_norm(w_.output_norm);
  check_matmul(w_.output, c.vocab_size, c.dim);
  const troupe_dtype kv_type = opt.kv_f16 ? TROUPE_F16 : TROUPE_F32;
  rmsnorm_ = reinterpret_cast<troupe_rmsnorm_fn>(pick(TROUPE_OP_RMSNORM, TROUPE_F32));
  add_rmsnorm_ = reinterpret_cast<troupe_add_rmsnorm_fn>(pick(TROUPE_OP_ADD_RMSNORM, TROUPE_F32));
  rope_ = reinterpret_cast<troupe_rope_fn>(pick(TROUPE_OP_ROPE, TROUPE_F32));
  kv_store_ = reinterpret_cast<troupe_kv_store_fn>(pick(TROUPE_OP_KV_STORE, kv_type));
  attention_ = pick(TROUPE_OP_ATTENTION, kv_type);
  silu_mul_ = reinterpret_cast<troupe_silu_mul_fn>(pick(TROUPE_OP_SILU_MUL, TROUPE_F32));
  if (c.qkv_bias) add_bias_ = reinterpret_cast<troupe_add_bias_fn>(pick(TROUPE_OP_ADD_BIAS, TROUPE_F32));
  gather_ = reinterpret_cast<troupe_embedding_fn>(pick(TROUPE_OP_EMBEDDING_F32, TROUPE_F32));
  argmax_ = reinterpret_cast<troupe_argmax_fn>(pick(TROUPE_OP_ARGMAX, TROUPE_F32));
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
  s.x.resize(T * c.dim);
  s.xn.resize(T * c.dim);
  s.tmp.resize(T * c.dim);
  s.q.resize(T * q_dim);
  s.att.resize(T * q_dim);
  s.k.resize(T * kv_dim);
  s.v.resize(T * kv_dim);
  s.gate.resize(T * c.hidden_dim);
  s.up.resize(T * c.hidden_dim);
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

// ---- plan checks and swaps --------------------------------------------------------------

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

// ---- the executor of the recipe ---------------------------------------------------------

float* cpu_backend::buf(llama_act a) const {
  scratch& s = *s_;
  switch (a) {
    case llama_act::x:
      return s.x.data();
    case llama_act::xn:
      return s.xn.data();
    case llama_act::q:
      return s.q.data();
    case llama_act::att:
      return s.att.data();
    case llama_act::k:
      return s.k.data();
    case llama_act::v:
      return s.v.data();
    case llama_act::tmp:
      return s.tmp.data();
    case llama_act::gate:
      return s.gate.data();
    case llama_act::up:
      return s.up.data();
    case llama_act::last:
      return s.last.data();
    case llama_act::logits:
      return s.logits.data();
  }
  return nullptr;
}

const tensor_view& cpu_backend::weight(weight_id id) const {
  if (id.which == llama_weight::output_norm) return w_.output_norm;
  if (id.which == llama_weight::output) return w_.output;
  const layer_weights& L = w_.layers[id.layer];
  switch (id.which) {
    case llama_weight::bq:
      return L.bq;
    case llama_weight::bk:
      return L.bk;
    case llama_weight::bv:
      return L.bv;
    case llama_weight::q_norm:
      return L.q_norm;
    case llama_weight::k_norm:
      return L.k_norm;
    case llama_weight::attn_norm:
      return L.attn_norm;
    case llama_weight::wq:
      return L.wq;
    case llama_weight::wk:
      return L.wk;
    case llama_weight::wv:
      return L.wv;
    case llama_weight::wo:
      return L.wo;
    case llama_weight::ffn_norm:
      return L.ffn_norm;
    case llama_weight::w_gate:
      return L.w_gate;
    case llama_weight::w_up:
      return L.w_up;
    default:
      return L.w_down;
  }
}

void cpu_backend::embedding(llama_act out, int64_t rows) {
  embedding_(&kctx_, buf(out), w_.tok_embd.data, s_->batch.ids.data(), rows, cfg_.dim);
}

void cpu_backend::rmsnorm(llama_act out, llama_act x, weight_id w, int64_t rows) {
  rmsnorm_(&kctx_, buf(out), buf(x), static_cast<const float*>(weight(w).data), rows, cfg_.dim, cfg_.rms_eps);
}

void cpu_backend::add_rmsnorm(llama_act out, llama_act x, llama_act residual, weight_id w, int64_t rows) {
  add_rmsnorm_(&kctx_, buf(out), buf(x), buf(residual), static_cast<const float*>(weight(w).data), rows, cfg_.dim,
               cfg_.rms_eps);
}

void cpu_backend::matmul(llama_act y, llama_act x, weight_id id, int64_t rows) {
  const tensor_view& w = weight(id);
  matmul_[weight_family_index(w.dtype)](&kctx_, buf(y), buf(x), w.data, rows, w.rows, w.cols);
}

void cpu_backend::rope(llama_act x, int64_t rows, int64_t n_heads) {
  rope_(&kctx_, buf(x), s_->batch.positions.data(), rows, n_heads, cfg_.head_dim, inv_freq_.data(), cfg_.rope_neox);
}

void cpu_backend::add_bias(llama_act x, weight_id b, int64_t rows) {
  const tensor_view& t = weight(b);
  add_bias_(&kctx_, buf(x), static_cast<const float*>(t.data), rows, t.cols);
}

void cpu_backend::head_rmsnorm(llama_act x, weight_id w, int64_t rows, int64_t n_heads) {
  // (rows, n_heads * head_dim) is (rows * n_heads, head_dim): one norm per head
  rmsnorm_(&kctx_, buf(x), buf(x), static_cast<const float*>(weight(w).data), rows * n_heads, cfg_.head_dim,
           cfg_.rms_eps);
}

void cpu_backend::kv_store(int64_t l, llama_act k, llama_act v, int64_t rows) {
  kv_store_(&kctx_, &k_pool_[l * layer_bytes_], &v_pool_[l * layer_bytes_], buf(k), buf(v), s_->batch.slots.data(),
            rows, cfg_.n_kv_heads, cfg_.head_dim, block_size_);
}

// Per sequence, over that sequence's blocks; the variant splits the heads over the pool.
void cpu_backend::attention(int64_t l, llama_act out, llama_act q) {
  const model_config& c = cfg_;
  const step_batch& b = s_->batch;
  const int64_t q_dim = c.n_heads * c.head_dim;
  const char* k_pool = &k_pool_[l * layer_bytes_];  // (n_blocks, n_kv_heads, block_size, head_dim)
  const char* v_pool = &v_pool_[l * layer_bytes_];
  const float scale = 1.0f / std::sqrt((float)c.head_dim);
  float *o = buf(out), *qs = buf(q);
  for (int64_t r = 0; r < b.seqs(); ++r) {
    const int64_t begin = b.seq_begin[r], n = b.seq_begin[r + 1] - begin;
    const int32_t* table = b.block_tables[r].data();
    if (opt_.kv_f16)
      reinterpret_cast<troupe_attention_f16kv_fn>(attention_)(
          &kctx_, o + begin * q_dim, qs + begin * q_dim, reinterpret_cast<const uint16_t*>(k_pool),
          reinterpret_cast<const uint16_t*>(v_pool), table, &b.positions[begin], n, c.n_heads, c.n_kv_heads, c.head_dim,
          block_size_, scale, c.sliding_window);
    else
      reinterpret_cast<troupe_attention_fn>(attention_)(
          &kctx_, o + begin * q_dim, qs + begin * q_dim, reinterpret_cast<const float*>(k_pool),
          reinterpret_cast<const float*>(v_pool), table, &b.positions[begin], n, c.n_heads, c.n_kv_heads, c.head_dim,
          block_size_, scale, c.sliding_window);
  }
}

void cpu_backend::silu_mul(llama_act gate, llama_act up, int64_t n) {
  silu_mul_(&kctx_, buf(gate), buf(gate), buf(up), n);
}

void cpu_backend::all_reduce(llama_act x, int64_t rows) {
  if (opt_.comm) opt_.comm->all_reduce_sum(buf(x), rows * cfg_.dim);
}

void cpu_backend::gather_rows(llama_act out, llama_act x, int64_t n_sample) {
  gather_(&kctx_, buf(out), buf(x), s_->batch.logit_rows.data(), n_sample, cfg_.dim);
}

// ---- one step ---------------------------------------------------------------------------

std::vector<float> cpu_backend::all_logits(std::span<const int32_t> tokens, int32_t start_pos,
                                           std::span<const int32_t> block_table) {
  step_plan plan;
  seq_work w;
  w.seq_id = 1;
  w.tokens.assign(tokens.begin(), tokens.end());
  w.start_pos = start_pos;
  w.block_table.assign(block_table.begin(), block_table.end());
  w.sample = true;
  plan.seqs.push_back(std::move(w));
  validate(plan);
  const model_config& c = cfg_;
  scratch& s = *s_;
  gather_batch(plan.seqs, block_size_, batch_order::plan, s.batch);
  const int64_t T = s.batch.tokens();
  s.batch.logit_rows.resize(T);  // every row, not only the last
  for (int64_t t = 0; t < T; ++t) s.batch.logit_rows[t] = (int32_t)t;
  s.last.resize(T * c.dim);
  s.logits.resize(T * c.vocab_size);
  s.n_sampled = 0;
  llama_forward(*this, c, T, T);
  s.n_sampled = T;
  return s.logits;
}

step_result cpu_backend::step(const step_plan& plan) {
  validate(plan);
  swap(plan);
  const model_config& c = cfg_;
  scratch& s = *s_;
  gather_batch(plan.seqs, block_size_, batch_order::plan, s.batch);
  const int64_t T = s.batch.tokens(), S = s.batch.n_sample();
  s.last.resize(S * c.dim);
  s.logits.resize(S * c.vocab_size);
  s.n_sampled = 0;
  llama_forward(*this, c, T, S);
  s.n_sampled = S;

  step_result result;
  result.step_id = plan.step_id;
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
