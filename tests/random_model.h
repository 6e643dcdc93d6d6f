// A small Llama-shaped model with random f32 weights held in memory, and a plain
// single-sequence forward pass over it (dense KV cache, no kernels, no batching): the
// independent oracle for the CPU backend's batched, paged forward pass.
#pragma once
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "troupe/model.h"

namespace troupe::test {

class random_model : public model_file {
 public:
  explicit random_model(model_config c, uint32_t seed = 1) : cfg_(std::move(c)) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    const int64_t q_dim = cfg_.n_heads * cfg_.head_dim, kv_dim = cfg_.n_kv_heads * cfg_.head_dim;
    auto make = [&](const std::string& name, int64_t rows, int64_t cols, float scale, float mean = 0.0f) {
      auto& buf = bufs_.emplace_back(rows * cols);
      for (float& x : buf) x = mean + scale * n01(rng);
      return tensor_view{name, buf.data(), TROUPE_F32, rows, cols};
    };
    bufs_.reserve(4 + 9 * cfg_.n_layers);  // views point into these: no reallocation
    w_.tok_embd = make("tok_embd", cfg_.vocab_size, cfg_.dim, 1.0f);
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      const float s_in = 1.0f / std::sqrt((float)cfg_.dim), s_hid = 1.0f / std::sqrt((float)cfg_.hidden_dim);
      layer_weights L;
      L.attn_norm = make(p + "attn_norm", 1, cfg_.dim, 0.1f, 1.0f);
      L.wq = make(p + "wq", q_dim, cfg_.dim, s_in);
      L.wk = make(p + "wk", kv_dim, cfg_.dim, s_in);
      L.wv = make(p + "wv", kv_dim, cfg_.dim, s_in);
      L.wo = make(p + "wo", cfg_.dim, q_dim, 1.0f / std::sqrt((float)q_dim));
      L.ffn_norm = make(p + "ffn_norm", 1, cfg_.dim, 0.1f, 1.0f);
      L.w_gate = make(p + "w_gate", cfg_.hidden_dim, cfg_.dim, s_in);
      L.w_up = make(p + "w_up", cfg_.hidden_dim, cfg_.dim, s_in);
      L.w_down = make(p + "w_down", cfg_.dim, cfg_.hidden_dim, s_hid);
      w_.layers.push_back(L);
    }
    w_.output_norm = make("output_norm", 1, cfg_.dim, 0.1f, 1.0f);
    w_.output = make("output", cfg_.vocab_size, cfg_.dim, 1.0f / std::sqrt((float)cfg_.dim));
  }

  const std::string& path() const override { return path_; }
  const model_config& config() const override { return cfg_; }
  const model_weights& weights() const override { return w_; }
  const tokenizer_data& tokenizer() const override { return tok_; }
  std::string format() const override { return "random"; }
  model_weights& mutable_weights() { return w_; }

 private:
  std::string path_ = "<random model>";
  model_config cfg_;
  model_weights w_;
  tokenizer_data tok_;
  std::vector<std::vector<float>> bufs_;
};

inline model_config small_config() {
  model_config c;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.hidden_dim = 48;
  c.vocab_size = 64;
  c.max_seq_len = 128;
  return c;
}

// Feeds tokens one at a time from position 0 and returns the logits after each, (n, vocab).
inline std::vector<std::vector<float>> naive_forward(const model_file& m, const std::vector<int32_t>& tokens) {
  const model_config& c = m.config();
  const model_weights& w = m.weights();
  const int64_t q_dim = c.n_heads * c.head_dim, half = c.head_dim / 2;
  auto f = [](const tensor_view& t) { return static_cast<const float*>(t.data); };
  auto matvec = [](const tensor_view& W, const std::vector<float>& x) {
    std::vector<float> y(W.rows);
    for (int64_t r = 0; r < W.rows; ++r) {
      double acc = 0;
      for (int64_t i = 0; i < W.cols; ++i) acc += (double)static_cast<const float*>(W.data)[r * W.cols + i] * x[i];
      y[r] = (float)acc;
    }
    return y;
  };
  auto norm = [&](const std::vector<float>& x, const float* g) {
    double ss = 0;
    for (float v : x) ss += (double)v * v;
    const float s = 1.0f / std::sqrt((float)(ss / x.size()) + c.rms_eps);
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * s * g[i];
    return y;
  };
  std::vector<double> freq(half);
  for (int64_t i = 0; i < half; ++i) {
    freq[i] = std::pow((double)c.rope_theta, -2.0 * i / c.head_dim);
    if (c.scaling.enabled) {  // Llama 3, written from its description
      const double wl = 2 * M_PI / freq[i], lo = c.scaling.original_max_position / c.scaling.low_freq_factor,
                   hi = c.scaling.original_max_position / c.scaling.high_freq_factor;
      if (wl > lo) {
        freq[i] /= c.scaling.factor;
      } else if (wl >= hi) {
        const double sm = (c.scaling.original_max_position / wl - c.scaling.low_freq_factor) /
                          (c.scaling.high_freq_factor - c.scaling.low_freq_factor);
        freq[i] = (1 - sm) * freq[i] / c.scaling.factor + sm * freq[i];
      }
    }
  }
  auto rope = [&](std::vector<float>& v, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = h * c.head_dim + (c.rope_neox ? i : 2 * i), b = a + (c.rope_neox ? half : 1);
        const double th = pos * freq[i];
        const float x0 = v[a], x1 = v[b];
        v[a] = (float)(x0 * std::cos(th) - x1 * std::sin(th));
        v[b] = (float)(x0 * std::sin(th) + x1 * std::cos(th));
      }
  };
  std::vector<std::vector<std::vector<float>>> kc(c.n_layers), vc(c.n_layers);  // [layer][pos](kv_dim)
  std::vector<std::vector<float>> out;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    std::vector<float> x(f(w.tok_embd) + tokens[pos] * c.dim, f(w.tok_embd) + (tokens[pos] + 1) * c.dim);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const layer_weights& L = w.layers[l];
      auto xb = norm(x, f(L.attn_norm));
      auto q = matvec(L.wq, xb), k = matvec(L.wk, xb), v = matvec(L.wv, xb);
      rope(q, c.n_heads, (int64_t)pos);
      rope(k, c.n_kv_heads, (int64_t)pos);
      kc[l].push_back(k);
      vc[l].push_back(v);
      std::vector<float> att(q_dim, 0.0f);
      for (int64_t h = 0; h < c.n_heads; ++h) {
        const int64_t kvh = h / (c.n_heads / c.n_kv_heads);
        std::vector<double> sc(pos + 1);
        double mx = -1e300, sum = 0;
        for (size_t p = 0; p <= pos; ++p) {
          double d = 0;
          for (int64_t i = 0; i < c.head_dim; ++i) d += (double)q[h * c.head_dim + i] * kc[l][p][kvh * c.head_dim + i];
          sc[p] = d / std::sqrt((double)c.head_dim);
          mx = std::max(mx, sc[p]);
        }
        for (double& s : sc) sum += s = std::exp(s - mx);
        for (size_t p = 0; p <= pos; ++p)
          for (int64_t i = 0; i < c.head_dim; ++i)
            att[h * c.head_dim + i] += (float)(sc[p] / sum) * vc[l][p][kvh * c.head_dim + i];
      }
      auto o = matvec(L.wo, att);
      for (int64_t i = 0; i < c.dim; ++i) x[i] += o[i];
      xb = norm(x, f(L.ffn_norm));
      auto g = matvec(L.w_gate, xb), u = matvec(L.w_up, xb);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      auto d = matvec(L.w_down, g);
      for (int64_t i = 0; i < c.dim; ++i) x[i] += d[i];
    }
    out.push_back(matvec(w.output, norm(x, f(w.output_norm))));
  }
  return out;
}

}  // namespace troupe::test
