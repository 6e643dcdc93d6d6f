// The CUDA backend, one step: the plan is gathered (gather_batch) into packed metadata (one
// copy to the device), the shared recipe (llama_forward) runs on the backend's stream over
// all new tokens at once (decode sequences first, then prefill chunks) with this file's
// executor, tokens are chosen on the device, and one sync returns them.
// A step made only of decode tokens is captured once as a CUDA graph per shape
// (sequences, sampled sequences, attention partitions) and replayed after.
#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>

#include "kernels/cuda/attention_decode.cuh"
#include "kernels/cuda/gemm.cuh"
#include "src/engine/cuda/cuda_backend_impl.h"
#include "src/engine/sampler.h"
#include "src/engine/step_check.h"
#include "troupe/communicator.h"
#include "troupe/error.h"

namespace troupe {

namespace kc = kern::cuda;

namespace {

constexpr size_t k_max_graphs = 64;  // beyond this, new shapes run without a graph

// Penalties and top alternatives need the CPU sampler (src/engine/sampler.cpp) on the host.
bool needs_host_sampling(const seq_work& w) { return w.sampling.top_logprobs > 0 || has_penalties(w.sampling); }

}  // namespace

void cuda_backend::impl::validate(const step_plan& plan) const {
  check_step_plan(
      plan, {cfg.vocab_size, n_blocks, opt.block_size, opt.max_batch_tokens, max_seq_len, opt.max_seqs, n_host_blocks});
}

// On the step's stream, before its forward: every swap_out, then every swap_in (a block a
// swap_out reads may be the target of a swap_in of the same plan).
void cuda_backend::impl::enqueue_swaps(const step_plan& plan) {
  auto host = [&](int32_t slot, int64_t layer, bool value) {
    return host_pool.as<char>(((size_t)(slot * cfg.n_layers + layer) * 2 + (value ? 1 : 0)) * kv_block_bytes);
  };
  auto dev = [&](int32_t block, int64_t layer, bool value) {
    return static_cast<char*>(kv_layer(layer, value)) + (size_t)block * kv_block_bytes;
  };
  for (const block_copy& c : plan.swap_out)
    for (int64_t l = 0; l < cfg.n_layers; ++l)
      for (bool value : {false, true})
        TROUPE_CUDA_CHECK(cudaMemcpyAsync(host(c.host_slot, l, value), dev(c.device_block, l, value), kv_block_bytes,
                                          cudaMemcpyDeviceToHost, stream));
  for (const block_copy& c : plan.swap_in)
    for (int64_t l = 0; l < cfg.n_layers; ++l)
      for (bool value : {false, true})
        TROUPE_CUDA_CHECK(cudaMemcpyAsync(dev(c.device_block, l, value), host(c.host_slot, l, value), kv_block_bytes,
                                          cudaMemcpyHostToDevice, stream));
}

// ---- the executor of the recipe ---------------------------------------------------------

float* cuda_backend::impl::buf(llama_act a) const {
  switch (a) {
    case llama_act::x:
      return x;
    case llama_act::xn:
      return xn;
    case llama_act::q:
      return q;
    case llama_act::att:
      return att;
    case llama_act::k:
      return k;
    case llama_act::v:
      return v;
    case llama_act::tmp:
      return tmp;
    case llama_act::gate:
      return gate;
    case llama_act::up:
      return up;
    case llama_act::last:
      return last;
    case llama_act::logits:
      return logits;
  }
  return nullptr;
}

const float* cuda_backend::impl::norm_weight(weight_id w) const {
  switch (w.which) {
    case llama_weight::bq:
      return layers[w.layer].bq;
    case llama_weight::bk:
      return layers[w.layer].bk;
    case llama_weight::bv:
      return layers[w.layer].bv;
    case llama_weight::q_norm:
      return layers[w.layer].q_norm;
    case llama_weight::k_norm:
      return layers[w.layer].k_norm;
    case llama_weight::attn_norm:
      return layers[w.layer].attn_norm;
    case llama_weight::ffn_norm:
      return layers[w.layer].ffn_norm;
    default:
      return output_norm;
  }
}

const dev_weight& cuda_backend::impl::matrix(weight_id w) const {
  if (w.which == llama_weight::output) return output;
  const dev_layer& L = layers[w.layer];
  switch (w.which) {
    case llama_weight::wq:
      return L.wq;
    case llama_weight::wk:
      return L.wk;
    case llama_weight::wv:
      return L.wv;
    case llama_weight::wo:
      return L.wo;
    case llama_weight::w_gate:
      return L.w_gate;
    case llama_weight::w_up:
      return L.w_up;
    default:
      return L.w_down;
  }
}

namespace {
troupe_kctx stream_ctx(cudaStream_t s) { return troupe_kctx{nullptr, nullptr, 1, s}; }
}  // namespace

void cuda_backend::impl::embedding(llama_act out, int64_t rows) {
  const troupe_kctx ctx = stream_ctx(stream);
  embedding_fn(&ctx, buf(out), tok_embd.data, meta_dev.as<int32_t>(shape->meta.ids), rows, cfg.dim);
}

void cuda_backend::impl::rmsnorm(llama_act out, llama_act xs, weight_id w, int64_t rows) {
  const troupe_kctx ctx = stream_ctx(stream);
  rmsnorm_fn(&ctx, buf(out), buf(xs), norm_weight(w), rows, cfg.dim, cfg.rms_eps);
}

void cuda_backend::impl::add_rmsnorm(llama_act out, llama_act xs, llama_act residual, weight_id w, int64_t rows) {
  const troupe_kctx ctx = stream_ctx(stream);
  add_rmsnorm_fn(&ctx, buf(out), buf(xs), buf(residual), norm_weight(w), rows, cfg.dim, cfg.rms_eps);
}

// The built-in GEMM runs on the backend's cuBLAS handle and workspace (nothing allocated,
// so that it can be captured in a graph); any other variant through the ABI.
void cuda_backend::impl::matmul(llama_act y, llama_act xs, weight_id id, int64_t rows) {
  const dev_weight& w = matrix(id);
  if (w.variant) {
    const troupe_kctx ctx = stream_ctx(stream);
    w.variant(&ctx, buf(y), buf(xs), w.data, rows, w.rows, w.cols);
    return;
  }
  kc::matmul(cublas, buf(y), buf(xs), w.data, w.dtype, rows, w.rows, w.cols, half_type, gemm_ws, gemm_ws_bytes, stream);
}

void cuda_backend::impl::rope(llama_act xs, int64_t rows, int64_t n_heads) {
  const troupe_kctx ctx = stream_ctx(stream);
  rope_fn(&ctx, buf(xs), meta_dev.as<int32_t>(shape->meta.positions), rows, n_heads, cfg.head_dim, inv_freq,
          cfg.rope_neox);
}

void cuda_backend::impl::add_bias(llama_act xs, weight_id b, int64_t rows) {
  const troupe_kctx ctx = stream_ctx(stream);
  const int64_t n = b.which == llama_weight::bq ? q_dim : kv_dim;
  add_bias_fn(&ctx, buf(xs), norm_weight(b), rows, n);
}

// (rows, n_heads * head_dim) is (rows * n_heads, head_dim): one norm per head.
void cuda_backend::impl::head_rmsnorm(llama_act xs, weight_id w, int64_t rows, int64_t n_heads) {
  const troupe_kctx ctx = stream_ctx(stream);
  rmsnorm_fn(&ctx, buf(xs), buf(xs), norm_weight(w), rows * n_heads, cfg.head_dim, cfg.rms_eps);
}

void cuda_backend::impl::kv_store(int64_t l, llama_act ks, llama_act vs, int64_t rows) {
  const troupe_kctx ctx = stream_ctx(stream);
  kv_store_fn(&ctx, kv_layer(l, false), kv_layer(l, true), buf(ks), buf(vs), meta_dev.as<int32_t>(shape->meta.slots),
              rows, cfg.n_kv_heads, cfg.head_dim, opt.block_size);
}

// The built-in attention runs batched: decode sequences (batch rows and table rows
// 0..n_dec-1) in one partitioned launch, prefill chunks in query tiles. Another variant
// runs per sequence through the ABI, on device pointers into the same metadata.
void cuda_backend::impl::attention(int64_t l, llama_act out, llama_act qs) {
  const model_config& c = cfg;
  const step_shape& sh = *shape;
  const meta_layout& ml = sh.meta;
  const int32_t* positions = meta_dev.as<int32_t>(ml.positions);
  const int32_t* tables = meta_dev.as<int32_t>(ml.block_tables);
  const float scale = 1.0f / std::sqrt((float)c.head_dim);
  void* kp = kv_layer(l, false);
  void* vp = kv_layer(l, true);
  float *o = buf(out), *qd = buf(qs);
  if (attention_variant) {
    const troupe_kctx ctx = stream_ctx(stream);
    for (int64_t r = 0; r < batch.seqs(); ++r) {
      const int64_t begin = batch.seq_begin[r], n = batch.seq_begin[r + 1] - begin;
      const int32_t* table = tables + r * sh.bt_stride;
      if (opt.kv_f16)
        reinterpret_cast<troupe_attention_f16kv_fn>(attention_variant)(
            &ctx, o + begin * q_dim, qd + begin * q_dim, static_cast<const uint16_t*>(kp),
            static_cast<const uint16_t*>(vp), table, positions + begin, n, c.n_heads, c.n_kv_heads, c.head_dim,
            opt.block_size, scale, c.sliding_window);
      else
        reinterpret_cast<troupe_attention_fn>(attention_variant)(
            &ctx, o + begin * q_dim, qd + begin * q_dim, static_cast<const float*>(kp), static_cast<const float*>(vp),
            table, positions + begin, n, c.n_heads, c.n_kv_heads, c.head_dim, opt.block_size, scale, c.sliding_window);
    }
    return;
  }
  if (sh.n_dec > 0)
    kc::invoke_attention_decode(o, qd, kp, vp, opt.kv_f16, tables, sh.bt_stride, meta_dev.as<int32_t>(ml.dec_positions),
                                sh.n_dec, c.n_heads, c.n_kv_heads, c.head_dim, opt.block_size, scale, c.sliding_window,
                                sh.n_parts, attn_ws, stream);
  if (sh.n_tiles > 0)
    kc::invoke_attention_prefill(o, qd, kp, vp, opt.kv_f16, tables, sh.bt_stride, positions,
                                 meta_dev.as<kc::prefill_tile>(ml.tiles), sh.n_tiles, c.n_heads, c.n_kv_heads,
                                 c.head_dim, opt.block_size, scale, c.sliding_window, stream);
}

void cuda_backend::impl::silu_mul(llama_act g, llama_act u, int64_t n) {
  const troupe_kctx ctx = stream_ctx(stream);
  silu_mul_fn(&ctx, buf(g), buf(g), buf(u), n);
}

void cuda_backend::impl::all_reduce(llama_act xs, int64_t rows) {
  if (!opt.comm || opt.comm->size() == 1) return;
  // The communicator works on its own stream and syncs it before returning: this step's
  // work so far must be finished before it reads the buffer, and what follows on `stream`
  // is queued only after it returns.
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream));
  opt.comm->all_reduce_sum(buf(xs), (size_t)(rows * cfg.dim));
}

// An f32 "embedding lookup" of the sampled rows.
void cuda_backend::impl::gather_rows(llama_act out, llama_act xs, int64_t n_sample) {
  const troupe_kctx ctx = stream_ctx(stream);
  gather_fn(&ctx, buf(out), buf(xs), meta_dev.as<int32_t>(shape->meta.logit_rows), n_sample, cfg.dim);
}

// ---- one step ----------------------------------------------------------------------------

void cuda_backend::impl::enqueue_forward(const step_shape& sh) {
  TROUPE_CUDA_CHECK(cudaMemcpyAsync(meta_dev.get(), meta_host.get(), sh.meta.total, cudaMemcpyHostToDevice, stream));
  shape = &sh;
  llama_forward(*this, cfg, sh.T, sh.n_sample);
  shape = nullptr;
}

void cuda_backend::impl::enqueue_sampling(const step_shape& sh) {
  if (sh.n_sample <= 0) return;
  const int64_t S = sh.n_sample;
  const troupe_kctx ctx{nullptr, nullptr, 1, stream};
  argmax_fn(&ctx, out_ids, out_logprobs, logits, S, cfg.vocab_size, 1.0f);
  kc::invoke_sample(out_ids, out_logprobs, logits, meta_dev.as<kc::sample_row_params>(sh.meta.sample_params), S,
                    cfg.vocab_size, stream);
  TROUPE_CUDA_CHECK(cudaMemcpyAsync(out_host.get(), out_ids, S * 4, cudaMemcpyDeviceToHost, stream));
  TROUPE_CUDA_CHECK(cudaMemcpyAsync(out_host.as<char>(S * 4), out_logprobs, S * 4, cudaMemcpyDeviceToHost, stream));
}

void cuda_backend::impl::run_graph(const step_shape& sh) {
  const auto key = std::make_tuple(sh.n_seqs, sh.n_sample, sh.n_parts, sh.bt_stride);
  auto it = graphs.find(key);
  if (it == graphs.end()) {
    if (graphs.size() >= k_max_graphs) {
      enqueue_forward(sh);
      enqueue_sampling(sh);
      return;
    }
    cudaGraph_t graph = nullptr;
    TROUPE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue_forward(sh);
      enqueue_sampling(sh);
    } catch (...) {
      (void)cudaStreamEndCapture(stream, &graph);
      if (graph) (void)cudaGraphDestroy(graph);
      throw;
    }
    TROUPE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    TROUPE_CUDA_CHECK(e);
    it = graphs.emplace(key, exec).first;
  } else {
    ++graph_replays;
  }
  TROUPE_CUDA_CHECK(cudaGraphLaunch(it->second, stream));
}

step_result cuda_backend::impl::step(const step_plan& plan) {
  validate(plan);
  TROUPE_CUDA_CHECK(cudaSetDevice(opt.device));
  step_result result;
  result.step_id = plan.step_id;
  result.outputs.resize(plan.seqs.size());
  last_n_sample = 0;
  enqueue_swaps(plan);
  if (plan.seqs.empty()) {
    TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream));
    return result;
  }

  // decode sequences first (their batch rows are their table rows), then prefill chunks
  gather_batch(plan.seqs, opt.block_size, batch_order::decode_first, batch);
  const std::vector<size_t>& sampled = batch.sampled;  // plan index of each sampled row, in row order
  step_shape sh;
  sh.n_dec = batch.n_decode;
  sh.n_seqs = batch.seqs();
  std::vector<kc::prefill_tile> tiles;
  int32_t max_dec_pos = 0;
  for (int64_t r = 0; r < batch.seqs(); ++r) {
    const int64_t begin = batch.seq_begin[r], n = batch.seq_begin[r + 1] - begin;
    if (r >= sh.n_dec)
      append_prefill_tiles(tiles, (int32_t)r, (int32_t)begin, (int32_t)n);
    else
      max_dec_pos = std::max(max_dec_pos, batch.positions[begin]);
  }
  const int64_t T = batch.tokens();
  sh.T = T;
  sh.n_tiles = (int64_t)tiles.size();
  sh.n_sample = batch.n_sample();
  sh.n_parts = sh.n_dec > 0 ? kc::decode_partitions((int64_t)max_dec_pos + 1) : 1;
  bool host_sampling = false;
  for (size_t i : sampled) host_sampling |= needs_host_sampling(plan.seqs[i]);
  const bool use_graph = opt.cuda_graphs && sh.n_dec == sh.n_seqs && !host_sampling && all_builtin &&
                         !opt.comm;  // the all-reduces sync the stream: not capturable
  // Block tables as long as this step's longest sequence needs (a power of two, at least
  // 16 blocks, so that one captured graph serves sequences as they grow), not max_seq_len:
  // the table copy per step stays small for long-context models.
  const int64_t blocks = (batch.max_end + opt.block_size - 1) / opt.block_size;
  sh.bt_stride = std::min<int64_t>(bt_stride, (int64_t)std::bit_ceil((uint64_t)std::max<int64_t>(16, blocks)));
  if (use_graph)  // likewise rounded up
    sh.n_parts = std::min(max_parts, (int)std::bit_ceil((unsigned)sh.n_parts));
  sh.meta = layout(T, sh.n_seqs, sh.n_dec, sh.n_tiles, sh.n_sample, sh.bt_stride);

  // ---- metadata, packed in pinned memory
  const meta_layout& ml = sh.meta;
  int32_t* tables = meta_host.as<int32_t>(ml.block_tables);
  int32_t* dec_positions = meta_host.as<int32_t>(ml.dec_positions);
  auto* params = meta_host.as<kc::sample_row_params>(ml.sample_params);
  std::copy(batch.ids.begin(), batch.ids.end(), meta_host.as<int32_t>(ml.ids));
  std::copy(batch.positions.begin(), batch.positions.end(), meta_host.as<int32_t>(ml.positions));
  std::copy(batch.slots.begin(), batch.slots.end(), meta_host.as<int32_t>(ml.slots));
  std::copy(batch.logit_rows.begin(), batch.logit_rows.end(), meta_host.as<int32_t>(ml.logit_rows));
  std::copy(tiles.begin(), tiles.end(), meta_host.as<kc::prefill_tile>(ml.tiles));
  std::fill(tables, tables + sh.n_seqs * sh.bt_stride, 0);
  for (int64_t r = 0; r < batch.seqs(); ++r) {
    const std::span<const int32_t> table = batch.block_tables[r];
    std::copy(table.begin(), table.begin() + std::min<int64_t>(sh.bt_stride, table.size()), tables + r * sh.bt_stride);
    if (r < sh.n_dec) dec_positions[r] = batch.positions[batch.seq_begin[r]];
  }
  for (int64_t j = 0; j < sh.n_sample; ++j) {
    const seq_work& w = plan.seqs[sampled[j]];
    const sampling_params& sp = w.sampling;
    const int64_t n_generated = std::max<int64_t>(0, (int64_t)w.history.size() - w.n_prompt);
    const float u = std::min((float)sampling_uniform(sp.seed, n_generated), std::nextafter(1.0f, 0.0f));
    params[j] = {sp.temperature, sp.top_k, sp.top_p, sp.min_p, u};
  }

  // ---- device work
  if (use_graph) {
    run_graph(sh);
  } else {
    enqueue_forward(sh);
    enqueue_sampling(sh);
  }
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream));
  // last_logits() counts sampled sequences in plan order; logits rows are in batch order
  last_rows.resize(sampled.size());
  std::iota(last_rows.begin(), last_rows.end(), 0);
  std::sort(last_rows.begin(), last_rows.end(), [&](int64_t a, int64_t b) { return sampled[a] < sampled[b]; });
  last_n_sample = sh.n_sample;

  // ---- results in plan order
  const int32_t* got_ids = out_host.as<int32_t>();
  const float* got_lp = out_host.as<float>(sh.n_sample * 4);
  for (size_t i = 0; i < plan.seqs.size(); ++i) result.outputs[i].seq_id = plan.seqs[i].seq_id;
  std::vector<float> row;
  for (int64_t s = 0; s < sh.n_sample; ++s) {
    const seq_work& w = plan.seqs[sampled[s]];
    seq_output& o = result.outputs[sampled[s]];
    if (needs_host_sampling(w)) {
      row.resize(cfg.vocab_size);
      TROUPE_CUDA_CHECK(cudaMemcpy(row.data(), logits + s * cfg.vocab_size, row.size() * 4, cudaMemcpyDeviceToHost));
      o = sample_next(row, w, {host_argmax, nullptr});
    } else {
      o.token = got_ids[s];
      o.logprob = got_lp[s];
    }
  }
  return result;
}

}  // namespace troupe
