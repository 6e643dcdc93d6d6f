// Sampling one token from logits: penalties, greedy or filtered random draw, logprobs.
#include "src/engine/sampler.h"

#include "kernels/ref/ref.h"

#include <algorithm>
#include <limits>
#include <cmath>
#include <numeric>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace troupe {

namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Penalties from the sequence's history, applied in place on logits (vocab).
void apply_penalties(std::vector<float>& logits, const seq_work& w) {
  const sampling_params& p = w.sampling;
  const int64_t vocab = (int64_t)logits.size();
  for (const auto& [id, bias] : p.logit_bias)
    if (id >= 0 && id < vocab) logits[id] += bias;
  const int64_t n_generated = std::max<int64_t>(0, (int64_t)w.history.size() - w.n_prompt);
  if (n_generated < p.min_tokens)
    for (int32_t id : p.end_ids)
      if (id >= 0 && id < vocab) logits[id] = -std::numeric_limits<float>::infinity();
  if (p.repetition_penalty != 1.0f && p.repeat_window > 0) {
    const size_t n = std::min<size_t>(w.history.size(), (size_t)p.repeat_window);
    std::unordered_set<int32_t> seen(w.history.end() - (std::ptrdiff_t)n, w.history.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= vocab) continue;
      float& l = logits[id];
      l = l > 0.0f ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    std::unordered_map<int32_t, int> counts;
    for (size_t i = std::min<size_t>((size_t)std::max(w.n_prompt, 0), w.history.size()); i < w.history.size(); ++i)
      ++counts[w.history[i]];
    for (auto [id, count] : counts) {
      if (id < 0 || id >= vocab) continue;
      logits[id] -= (float)count * p.frequency_penalty + p.presence_penalty;
    }
  }
}

// Orders ids by logit, highest first; the lowest id wins ties, so that greedy decoding and
// top-k = 1 agree and do not depend on a sort's whims.
auto by_logit(std::span<const float> l) {
  return [l](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
}

// The draw without filters over a large vocabulary, in id order like the plain walk below:
// the mass of each chunk of k_draw_chunk logits comes from the argmax kernel (a vectorized
// log-sum-exp per chunk, relative to the chunk's maximum), and only the chunk the draw
// lands in is walked token by token. A scalar exp per token cost 213 us a token at 32k.
constexpr int64_t k_draw_chunk = 256;

int32_t draw_in_chunks(std::span<const float> l, float mx, float temperature, double u, const sampler_kernels& k) {
  const int64_t n = (int64_t)l.size(), chunks = n / k_draw_chunk;
  std::vector<int32_t> top((size_t)chunks);
  std::vector<float> lp((size_t)chunks);
  k.argmax(k.ctx, top.data(), lp.data(), l.data(), chunks, k_draw_chunk, temperature);
  auto weight = [&](int64_t i) -> double { return std::exp((l[i] - mx) / temperature); };
  // sum over chunk c of exp((x - mx) / T) = exp((max_c - mx) / T) * exp(-lp_c)
  std::vector<double> mass((size_t)chunks);
  double total = 0.0;
  for (int64_t c = 0; c < chunks; ++c)
    total += mass[c] = std::exp((double)(l[c * k_draw_chunk + top[c]] - mx) / temperature - (double)lp[c]);
  for (int64_t i = chunks * k_draw_chunk; i < n; ++i) total += weight(i);
  const double target = u * total;
  double cum = 0.0;
  for (int64_t c = 0; c < chunks; ++c) {
    if (target < cum + mass[c]) {
      for (int64_t i = c * k_draw_chunk; i < (c + 1) * k_draw_chunk; ++i)
        if (target < (cum += weight(i))) return (int32_t)i;
      return (int32_t)((c + 1) * k_draw_chunk - 1);  // the exact sum fell short of the chunk's mass
    }
    cum += mass[c];
  }
  for (int64_t i = chunks * k_draw_chunk; i < n; ++i)
    if (target < (cum += weight(i))) return (int32_t)i;
  return (int32_t)(n - 1);  // rounding may leave target just above the sum
}

}  // namespace

bool has_penalties(const sampling_params& p) {
  return (p.repetition_penalty != 1.0f && p.repeat_window > 0) || p.frequency_penalty != 0.0f ||
         p.presence_penalty != 0.0f || !p.logit_bias.empty() || (p.min_tokens > 0 && !p.end_ids.empty());
}

double sampling_uniform(uint64_t seed, int64_t n_generated) {
  const uint64_t z = splitmix64(splitmix64(seed) ^ splitmix64(0x5eed0000ull + (uint64_t)n_generated));
  return (double)(z >> 11) * 0x1.0p-53;
}

seq_output sample_next(std::span<const float> logits_in, const seq_work& w, const sampler_kernels& kernels) {
  const sampling_params& p = w.sampling;
  std::vector<float> penalized;  // a copy only when penalties change it
  std::span<const float> logits = logits_in;
  if (has_penalties(p)) {
    penalized.assign(logits_in.begin(), logits_in.end());
    apply_penalties(penalized, w);
    logits = penalized;
  }

  // log-softmax of the penalized logits at temperature 1: the reported logprobs
  int32_t best = 0;
  float best_logprob = 0.0f;
  const troupe_argmax_fn argmax = kernels.argmax ? kernels.argmax : kern::ref::argmax;
  argmax(kernels.ctx, &best, &best_logprob, logits.data(), 1, (int64_t)logits.size(), 1.0f);
  const float mx = logits[best];
  const float log_z = mx - best_logprob;
  auto logprob = [&](int32_t id) { return id == best ? best_logprob : logits[id] - log_z; };

  seq_output out;
  out.seq_id = w.seq_id;
  const int64_t n_generated = std::max<int64_t>(0, (int64_t)w.history.size() - w.n_prompt);
  const bool no_filter = (p.top_k <= 0 || (size_t)p.top_k >= logits.size()) && p.top_p >= 1.0f && p.min_p <= 0.0f;
  if (p.temperature == 0.0f) {
    out.token = best;
  } else if (no_filter && kernels.argmax && (int64_t)logits.size() >= 2 * k_draw_chunk) {
    out.token = draw_in_chunks(logits, mx, p.temperature, sampling_uniform(p.seed, n_generated), kernels);
  } else {
    // Candidates, highest logit first (lowest id first on ties) when a filter needs the
    // order. min_p can only keep logits >= mx + T*log(min_p): drop the rest before sorting
    // (with a margin for rounding; the exact test follows below).
    std::vector<int32_t> cand;
    cand.reserve(logits.size());
    const float cut = p.min_p > 0.0f ? mx + p.temperature * std::log(p.min_p) - 1e-3f : -INFINITY;
    for (int32_t i = 0; i < (int32_t)logits.size(); ++i)
      if (logits[i] >= cut) cand.push_back(i);
    const auto higher = by_logit(logits);
    // probabilities at the temperature, normalized over the candidates in `cand` order
    auto weight = [&](int32_t id) -> double { return std::exp((logits[id] - mx) / p.temperature); };
    std::vector<double> prob;
    auto normalize = [&] {
      prob.resize(cand.size());
      double z = 0.0;
      for (size_t i = 0; i < cand.size(); ++i) z += prob[i] = weight(cand[i]);
      for (double& q : prob) q /= z;
    };
    // top_p: the smallest prefix of prob (in order) whose mass reaches top_p
    auto nucleus = [&] {
      double cum = 0.0;
      size_t n = 0;
      while (n < prob.size() && cum < p.top_p) cum += prob[n++];
      prob.resize(std::max<size_t>(n, 1));
    };
    if (p.top_k > 0 && (size_t)p.top_k < cand.size()) {
      // The k best, in order. A partial sort (a heap of k) beat a selection and a sort of
      // k: most logits lose to the heap's worst at once (bench/sampler_bench.cpp).
      const auto k = (std::ptrdiff_t)p.top_k;
      std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), higher);
      cand.resize((size_t)k);
      normalize();
      if (p.top_p < 1.0f) nucleus();
    } else if (p.top_p < 1.0f) {
      // The nucleus without sorting the whole vocabulary (a sort of 32k candidates took
      // milliseconds a token): the best `sorted` candidates in order, 64 at first (a
      // partial sort) and eight times more (a selection and a sort) while their mass is
      // short of top_p. A peaked distribution stops at the first 64; a flat one ends in a
      // full sort. The normalizer is over every candidate.
      double z = 0.0;
      if (cand.size() == logits.size() && kernels.argmax) {
        // every logit is a candidate: the kernel's log-partition at the temperature
        int32_t top = 0;
        float top_lp = 0.0f;
        kernels.argmax(kernels.ctx, &top, &top_lp, logits.data(), 1, (int64_t)logits.size(), p.temperature);
        z = std::exp(-(double)top_lp);
      } else {
        for (int32_t id : cand) z += weight(id);
      }
      const size_t total = cand.size();
      size_t sorted = 0, n = 0;
      double cum = 0.0;
      for (size_t want = std::min<size_t>(64, total);; want = std::min(total, want * 8)) {
        const auto from = cand.begin() + (std::ptrdiff_t)sorted, to = cand.begin() + (std::ptrdiff_t)want;
        if (sorted == 0 && want < total) {
          std::partial_sort(from, to, cand.end(), higher);  // 64 of many: a heap is cheapest
        } else {
          if (want < total) std::nth_element(from, to, cand.end(), higher);  // then a selection
          std::sort(from, to, higher);
        }
        sorted = want;
        while (n < sorted && cum < p.top_p) cum += weight(cand[n++]) / z;
        if (cum >= p.top_p || sorted == total) break;
      }
      cand.resize(std::max<size_t>(n, 1));
      prob.resize(cand.size());
      for (size_t i = 0; i < cand.size(); ++i) prob[i] = weight(cand[i]) / z;
    } else {
      if (p.min_p > 0.0f) std::sort(cand.begin(), cand.end(), higher);
      normalize();  // no filter: the draw runs over the ids in order
    }
    if (p.min_p > 0.0f) {
      const double floor = p.min_p * prob[0];
      size_t n = 1;
      while (n < prob.size() && prob[n] >= floor) ++n;
      prob.resize(n);
    }
    const double total = std::accumulate(prob.begin(), prob.end(), 0.0);
    const double target = sampling_uniform(p.seed, n_generated) * total;
    double cum = 0.0;
    size_t chosen = prob.size() - 1;  // rounding may leave target just above the sum
    for (size_t i = 0; i < prob.size(); ++i) {
      cum += prob[i];
      if (target < cum) {
        chosen = i;
        break;
      }
    }
    out.token = cand[chosen];
  }
  out.logprob = logprob(out.token);

  if (p.top_logprobs > 0) {
    const size_t n = std::min<size_t>((size_t)p.top_logprobs, logits.size());
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + (std::ptrdiff_t)n, ids.end(), by_logit(logits));
    for (size_t i = 0; i < n; ++i) out.top.push_back({ids[i], logprob(ids[i])});
  }
  return out;
}

}  // namespace troupe
