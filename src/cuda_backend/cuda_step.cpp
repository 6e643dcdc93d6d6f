// The CUDA backend, one step: the plan becomes packed metadata (one copy to the device), the
// forward pass runs on the backend's stream over all new tokens at once (decode sequences
// first, then prefill chunks), tokens are chosen on the device, and one sync returns them.
// A step made only of decode tokens is captured once as a CUDA graph per shape
// (sequences, sampled sequences, attention partitions) and replayed after.
#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>

#include "kernels/cuda/attention_decode.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/kv_cache.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "src/cuda_backend/cuda_backend_impl.h"
#include "src/sampler.h"
#include "src/step_check.h"
#include "troupe/error.h"

namespace troupe {

namespace kc = kern::cuda;

namespace {

constexpr size_t k_max_graphs = 64;  // beyond this, new shapes run without a graph

// Penalties and top alternatives need the CPU sampler (src/sampler.cpp) on the host.
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

void cuda_backend::impl::mm(float* y, const float* x, const dev_weight& w, int64_t m) {
  kc::matmul(cublas, y, x, w.data, w.dtype, m, w.rows, w.cols, half_type, gemm_ws, gemm_ws_bytes, stream);
}

// out = rmsnorm(x (+= residual)) * w over rows; through the registry's variant when one
// other than the built-in is selected (then unfused).
void cuda_backend::impl::norm(float* out, float* xs, const float* residual, const float* w, int64_t rows) {
  if (rmsnorm_override) {
    const troupe_kctx ctx{nullptr, nullptr, 1, stream};
    if (residual) kc::invoke_add(xs, xs, residual, rows * cfg.dim, stream);
    rmsnorm_override(&ctx, out, xs, w, rows, cfg.dim, cfg.rms_eps);
  } else if (residual) {
    kc::invoke_add_rmsnorm(out, xs, residual, w, rows, cfg.dim, cfg.rms_eps, stream);
  } else {
    kc::invoke_rmsnorm(out, xs, w, rows, cfg.dim, cfg.rms_eps, stream);
  }
}

void cuda_backend::impl::enqueue_forward(const step_shape& sh) {
  const model_config& c = cfg;
  const meta_layout& ml = sh.meta;
  TROUPE_CUDA_CHECK(cudaMemcpyAsync(meta_dev.get(), meta_host.get(), ml.total, cudaMemcpyHostToDevice, stream));
  const int32_t* ids = meta_dev.as<int32_t>(ml.ids);
  const int32_t* positions = meta_dev.as<int32_t>(ml.positions);
  const int32_t* slots = meta_dev.as<int32_t>(ml.slots);
  const int32_t* tables = meta_dev.as<int32_t>(ml.block_tables);
  const int32_t* dec_positions = meta_dev.as<int32_t>(ml.dec_positions);
  const auto* tiles = meta_dev.as<kc::prefill_tile>(ml.tiles);
  const int64_t T = sh.T;
  const troupe_kctx ctx{nullptr, nullptr, 1, stream};
  const float scale = 1.0f / std::sqrt((float)c.head_dim);

  kc::invoke_embedding(x, tok_embd.data, tok_embd.dtype, ids, T, c.dim, stream);  // (T, dim)
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const dev_layer& L = layers[l];
    // the residual add of the previous layer's FFN is fused into this norm
    norm(xn, x, l == 0 ? nullptr : tmp, L.attn_norm, T);
    mm(q, xn, L.wq, T);  // (T, q_dim)
    mm(k, xn, L.wk, T);  // (T, kv_dim)
    mm(v, xn, L.wv, T);  // (T, kv_dim)
    if (rope_override) {
      rope_override(&ctx, q, positions, T, c.n_heads, c.head_dim, inv_freq, c.rope_neox);
      rope_override(&ctx, k, positions, T, c.n_kv_heads, c.head_dim, inv_freq, c.rope_neox);
    } else {
      kc::invoke_rope(q, q_dim, positions, T, c.n_heads, c.head_dim, inv_freq, c.rope_neox, stream);
      kc::invoke_rope(k, kv_dim, positions, T, c.n_kv_heads, c.head_dim, inv_freq, c.rope_neox, stream);
    }
    void* kp = kv_layer(l, false);
    void* vp = kv_layer(l, true);
    kc::invoke_kv_store(kp, vp, opt.kv_f16, k, v, kv_dim, slots, T, kv_dim, c.head_dim, opt.block_size, stream);
    if (sh.n_dec > 0)  // decode sequences own batch rows 0..n_dec-1 and table rows 0..n_dec-1
      kc::invoke_attention_decode(att, q, kp, vp, opt.kv_f16, tables, sh.bt_stride, dec_positions, sh.n_dec, c.n_heads,
                                  c.n_kv_heads, c.head_dim, opt.block_size, scale, sh.n_parts, attn_ws, stream);
    if (sh.n_tiles > 0)
      kc::invoke_attention_prefill(att, q, kp, vp, opt.kv_f16, tables, sh.bt_stride, positions, tiles, sh.n_tiles,
                                   c.n_heads, c.n_kv_heads, c.head_dim, opt.block_size, scale, stream);
    mm(tmp, att, L.wo, T);  // (T, dim); a partial sum under tensor parallelism
    all_reduce(tmp, T);
    norm(xn, x, tmp, L.ffn_norm, T);
    mm(gate, xn, L.w_gate, T);  // (T, hidden)
    mm(up, xn, L.w_up, T);      // (T, hidden)
    if (silu_mul_override)
      silu_mul_override(&ctx, gate, gate, up, T * c.hidden_dim);
    else
      kc::invoke_silu_mul(gate, gate, up, T * c.hidden_dim, stream);
    mm(tmp, gate, L.w_down, T);  // (T, dim); a partial sum under tensor parallelism
    all_reduce(tmp, T);
  }
  norm(xn, x, tmp, output_norm, T);
  if (sh.n_sample > 0) {
    // gather the sampled rows: an f32 "embedding lookup" in xn
    kc::invoke_embedding(last, xn, TROUPE_F32, meta_dev.as<int32_t>(ml.logit_rows), sh.n_sample, c.dim, stream);
    mm(logits, last, output, sh.n_sample);  // (n_sample, vocab)
  }
}

void cuda_backend::impl::enqueue_sampling(const step_shape& sh) {
  if (sh.n_sample <= 0) return;
  const int64_t S = sh.n_sample;
  kc::invoke_argmax(out_ids, out_logprobs, logits, S, cfg.vocab_size, stream);
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
  std::vector<size_t> order;
  for (size_t i = 0; i < plan.seqs.size(); ++i)
    if (plan.seqs[i].tokens.size() == 1) order.push_back(i);
  step_shape sh;
  sh.n_dec = (int64_t)order.size();
  for (size_t i = 0; i < plan.seqs.size(); ++i)
    if (plan.seqs[i].tokens.size() != 1) order.push_back(i);
  sh.n_seqs = (int64_t)order.size();

  std::vector<kc::prefill_tile> tiles;
  std::vector<size_t> sampled;  // plan index of each sampled row, in row order
  int64_t T = 0;
  int32_t max_dec_pos = 0;
  int64_t max_end = 0;  // longest sequence after this step, in positions
  for (size_t r = 0; r < order.size(); ++r) {
    const seq_work& w = plan.seqs[order[r]];
    max_end = std::max<int64_t>(max_end, w.start_pos + (int64_t)w.tokens.size());
    if ((int64_t)r >= sh.n_dec)
      append_prefill_tiles(tiles, (int32_t)r, (int32_t)T, (int32_t)w.tokens.size());
    else
      max_dec_pos = std::max(max_dec_pos, w.start_pos);
    T += (int64_t)w.tokens.size();
    if (w.sample) sampled.push_back(order[r]);
  }
  sh.T = T;
  sh.n_tiles = (int64_t)tiles.size();
  sh.n_sample = (int64_t)sampled.size();
  sh.n_parts = sh.n_dec > 0 ? kc::decode_partitions((int64_t)max_dec_pos + 1) : 1;
  bool host_sampling = false;
  for (size_t i : sampled) host_sampling |= needs_host_sampling(plan.seqs[i]);
  const bool use_graph = opt.cuda_graphs && sh.n_dec == sh.n_seqs && !host_sampling && !rmsnorm_override &&
                         !rope_override && !silu_mul_override &&
                         !opt.comm;  // the all-reduces sync the stream: not capturable
  // Block tables as long as this step's longest sequence needs (a power of two, at least
  // 16 blocks, so that one captured graph serves sequences as they grow), not max_seq_len:
  // the table copy per step stays small for long-context models.
  const int64_t blocks = (max_end + opt.block_size - 1) / opt.block_size;
  sh.bt_stride = std::min<int64_t>(bt_stride, (int64_t)std::bit_ceil((uint64_t)std::max<int64_t>(16, blocks)));
  if (use_graph)  // likewise rounded up
    sh.n_parts = std::min(max_parts, (int)std::bit_ceil((unsigned)sh.n_parts));
  sh.meta = layout(T, sh.n_seqs, sh.n_dec, sh.n_tiles, sh.n_sample, sh.bt_stride);

  // ---- metadata, packed in pinned memory
  const meta_layout& ml = sh.meta;
  int32_t* ids = meta_host.as<int32_t>(ml.ids);
  int32_t* positions = meta_host.as<int32_t>(ml.positions);
  int32_t* slots = meta_host.as<int32_t>(ml.slots);
  int32_t* tables = meta_host.as<int32_t>(ml.block_tables);
  int32_t* dec_positions = meta_host.as<int32_t>(ml.dec_positions);
  int32_t* logit_rows = meta_host.as<int32_t>(ml.logit_rows);
  auto* params = meta_host.as<kc::sample_row_params>(ml.sample_params);
  std::copy(tiles.begin(), tiles.end(), meta_host.as<kc::prefill_tile>(ml.tiles));
  std::fill(tables, tables + sh.n_seqs * sh.bt_stride, 0);
  int64_t t = 0, j = 0;
  for (size_t r = 0; r < order.size(); ++r) {
    const seq_work& w = plan.seqs[order[r]];
    std::copy(w.block_table.begin(), w.block_table.begin() + std::min<int64_t>(sh.bt_stride, w.block_table.size()),
              tables + r * sh.bt_stride);
    if ((int64_t)r < sh.n_dec) dec_positions[r] = w.start_pos;
    for (size_t i = 0; i < w.tokens.size(); ++i, ++t) {
      const int32_t p = w.start_pos + (int32_t)i;
      ids[t] = w.tokens[i];
      positions[t] = p;
      slots[t] = w.block_table[p / opt.block_size] * opt.block_size + p % opt.block_size;
    }
    if (w.sample) {
      logit_rows[j] = (int32_t)(t - 1);
      const sampling_params& sp = w.sampling;
      const int64_t n_generated = std::max<int64_t>(0, (int64_t)w.history.size() - w.n_prompt);
      const float u = std::min((float)sampling_uniform(sp.seed, n_generated), std::nextafter(1.0f, 0.0f));
      params[j] = {sp.temperature, sp.top_k, sp.top_p, sp.min_p, u};
      ++j;
    }
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
