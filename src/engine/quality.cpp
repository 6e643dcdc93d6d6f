#include "src/engine/quality.h"

#include <algorithm>
#include <cmath>

#include "src/engine/cpu_backend.h"
#include "src/model/tokenizer.h"
#include "troupe/error.h"

namespace troupe {

namespace {

[[noreturn]] void fail(const std::string& msg, const std::string& field) {
  throw error(error_kind::failed, msg, field);
}

// log-softmax of one row, in doubles.
void log_softmax(const float* x, int64_t n, std::vector<double>& out) {
  out.resize(n);
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, (double)x[i]);
  double z = 0;
  for (int64_t i = 0; i < n; ++i) z += std::exp((double)x[i] - mx);
  const double lz = mx + std::log(z);
  for (int64_t i = 0; i < n; ++i) out[i] = (double)x[i] - lz;
}

// One model on the CPU backend, scoring chunk after chunk from position 0.
struct scorer {
  scorer(const model_file& m, const kernel_registry& reg, const quality_options& opt) : model(m) {
    cpu_backend_options o;
    o.n_threads = std::max(1, opt.threads);
    o.max_batch_tokens = opt.ctx;
    o.block_size = 16;
    const model_config& c = m.config();
    o.kv_bytes = (opt.ctx + o.block_size) * c.n_layers * 2 * c.n_kv_heads * c.head_dim * 4 + (1 << 20);
    backend = std::make_unique<cpu_backend>(m, reg, o);
    for (int32_t b = 0; b < (opt.ctx + o.block_size - 1) / o.block_size; ++b) table.push_back(b);
  }
  std::vector<float> chunk(const std::vector<int32_t>& tokens) { return backend->all_logits(tokens, 0, table); }
  const model_file& model;
  std::unique_ptr<cpu_backend> backend;
  std::vector<int32_t> table;
};

struct nll_sum {
  double sum = 0, sum2 = 0;
  int64_t n = 0;
  void add(double v) {
    sum += v;
    sum2 += v * v;
    ++n;
  }
  perplexity_result result(int64_t chunks, int64_t text_tokens) const {
    perplexity_result r;
    r.tokens = n;
    r.chunks = chunks;
    r.text_tokens = text_tokens;
    r.nll = n ? sum / n : 0;
    r.ppl = std::exp(r.nll);
    const double var = n > 1 ? std::max(0.0, sum2 / n - r.nll * r.nll) : 0;
    r.ppl_err = n > 1 ? r.ppl * std::sqrt(var / (n - 1)) : 0;
    return r;
  }
};

// The chunks of `ids` as llama-perplexity makes them: whole chunks of ctx tokens, the
// first of each replaced by BOS when the tokenizer adds one.
int64_t chunk_count(const model_file& m, const std::vector<int32_t>& ids, const quality_options& opt) {
  if (opt.ctx < 4) fail("ctx " + std::to_string(opt.ctx) + " (expected at least 4)", "ctx");
  if (opt.ctx > m.config().max_seq_len)
    fail("ctx " + std::to_string(opt.ctx) + " is longer than " + m.path() + "'s context of " +
             std::to_string(m.config().max_seq_len) + " tokens",
         "ctx");
  const int64_t n = (int64_t)ids.size() / opt.ctx;
  if (n == 0)
    fail("the text is " + std::to_string(ids.size()) + " tokens, less than one chunk of " + std::to_string(opt.ctx),
         "text");
  return opt.max_chunks > 0 ? std::min(n, opt.max_chunks) : n;
}

std::vector<int32_t> chunk_ids(const model_file& m, const std::vector<int32_t>& ids, int64_t i, int64_t ctx) {
  std::vector<int32_t> c(ids.begin() + i * ctx, ids.begin() + (i + 1) * ctx);
  const tokenizer_data& t = m.tokenizer();
  if (t.add_bos && t.bos_id >= 0) c[0] = t.bos_id;
  return c;
}

}  // namespace

std::vector<int32_t> tokenize_text(const model_file& model, const std::string& text) {
  const tokenizer tok(model.tokenizer());
  return tok.encode(text, model.tokenizer().add_bos, false);
}

perplexity_result perplexity(const model_file& model, const kernel_registry& registry, const std::vector<int32_t>& ids,
                             const quality_options& opt) {
  const int64_t chunks = chunk_count(model, ids, opt);
  scorer s(model, registry, opt);
  const int64_t vocab = model.config().vocab_size, first = opt.ctx / 2;
  nll_sum nll;
  std::vector<double> lp;
  for (int64_t i = 0; i < chunks; ++i) {
    const auto c = chunk_ids(model, ids, i, opt.ctx);
    const auto logits = s.chunk(c);
    for (int64_t j = first; j + 1 < opt.ctx; ++j) {
      log_softmax(&logits[j * vocab], vocab, lp);
      nll.add(-lp[c[j + 1]]);
    }
    if (opt.progress) opt.progress(i + 1, chunks);
  }
  return nll.result(chunks, (int64_t)ids.size());
}

compare_result compare_models(const model_file& base, const model_file& model, const kernel_registry& registry,
                              const std::vector<int32_t>& ids, const quality_options& opt) {
  const int64_t vocab = base.config().vocab_size;
  if (model.config().vocab_size != vocab)
    fail(model.path() + " has a vocabulary of " + std::to_string(model.config().vocab_size) + " tokens, " +
             base.path() + " of " + std::to_string(vocab),
         "model");
  const int64_t chunks = std::min(chunk_count(base, ids, opt), chunk_count(model, ids, opt));
  scorer sb(base, registry, opt), sm(model, registry, opt);
  const int64_t first = opt.ctx / 2;
  nll_sum nb, nm;
  std::vector<double> kld;
  int64_t agree = 0;
  std::vector<double> lb, lm;
  for (int64_t i = 0; i < chunks; ++i) {
    const auto c = chunk_ids(base, ids, i, opt.ctx);
    const auto xb = sb.chunk(c), xm = sm.chunk(c);
    for (int64_t j = first; j + 1 < opt.ctx; ++j) {
      log_softmax(&xb[j * vocab], vocab, lb);
      log_softmax(&xm[j * vocab], vocab, lm);
      nb.add(-lb[c[j + 1]]);
      nm.add(-lm[c[j + 1]]);
      double k = 0;
      for (int64_t v = 0; v < vocab; ++v) k += std::exp(lb[v]) * (lb[v] - lm[v]);
      kld.push_back(std::max(0.0, k));
      const auto ab = std::max_element(lb.begin(), lb.end()) - lb.begin();
      const auto am = std::max_element(lm.begin(), lm.end()) - lm.begin();
      agree += ab == am;
    }
    if (opt.progress) opt.progress(i + 1, chunks);
  }
  compare_result r;
  r.base = nb.result(chunks, (int64_t)ids.size());
  r.model = nm.result(chunks, (int64_t)ids.size());
  double sum = 0;
  for (double k : kld) sum += k;
  r.kld_mean = kld.empty() ? 0 : sum / kld.size();
  std::sort(kld.begin(), kld.end());
  r.kld_p99 = kld.empty() ? 0 : kld[std::min(kld.size() - 1, (size_t)std::ceil(0.99 * kld.size()) - 1)];
  r.kld_max = kld.empty() ? 0 : kld.back();
  r.top1 = kld.empty() ? 0 : (double)agree / kld.size();
  return r;
}

}  // namespace troupe
