// troupe model inspect|synth|quantize: look inside a model file, write a synthetic one,
// or rewrite one in another weight type.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>

#include <fstream>
#include <functional>
#include <iterator>

#include "commands.h"
#include "kernels/make_registry.h"
#include "src/engine/quality.h"
#include "kernels/ref/dtype.h"
#include "src/model/model_export.h"
#include "src/model/model_synth.h"
#include "src/model/tokenizer_files.h"
#include "troupe/model.h"

namespace troupe::cli {

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  for (; b >= 1024.0 && u < 4; ++u) b /= 1024.0;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

std::string token_text(const tokenizer_data& t, int32_t id) {
  if (id < 0 || id >= static_cast<int32_t>(t.tokens.size())) return "none";
  return std::to_string(id) + " \"" + t.tokens[id] + "\"";
}

// ---- inspect ----------------------------------------------------------------------------

int run_inspect(const std::string& path, const std::string& tokenizer) {
  const auto m = open_model(path, tokenizer);
  const model_config& c = m->config();
  const model_weights& w = m->weights();
  std::printf("file          %s\n", m->path().c_str());
  std::printf("format        %s\n", m->format().c_str());
  std::printf("architecture  %s%s%s\n", c.arch.c_str(), c.name.empty() ? "" : ", name ", c.name.c_str());
  std::printf("shape         dim %lld, %lld layers, %lld heads (%lld kv, head_dim %lld), hidden %lld, vocab %lld\n",
              (long long)c.dim, (long long)c.n_layers, (long long)c.n_heads, (long long)c.n_kv_heads,
              (long long)c.head_dim, (long long)c.hidden_dim, (long long)c.vocab_size);
  std::printf("context       %lld tokens\n", (long long)c.max_seq_len);
  std::printf("norm, rope    rms eps %g, rope theta %g, %s pairs%s\n", c.rms_eps, c.rope_theta,
              c.rope_neox ? "neox (i, i+d/2)" : "interleaved (2i, 2i+1)", c.scaling.enabled ? "" : ", no scaling");
  if (c.scaling.enabled)
    std::printf("rope scaling  llama3: factor %g, low %g, high %g, original context %lld\n", c.scaling.factor,
                c.scaling.low_freq_factor, c.scaling.high_freq_factor, (long long)c.scaling.original_max_position);
  std::printf("embeddings    %s\n",
              c.tied_embeddings ? "tied (output head reuses token_embd)" : "separate output head");
  const tokenizer_data& t = m->tokenizer();
  std::printf("tokenizer     %s, %zu tokens, %zu merges, bos %s, eos %s",
              t.type == tokenizer_data::kind::sentencepiece_bpe ? "sentencepiece_bpe" : "byte_level_bpe",
              t.tokens.size(), t.merges.size(), token_text(t, t.bos_id).c_str(), token_text(t, t.eos_id).c_str());
  if (t.eot_id >= 0) std::printf(", turn ends at %s", token_text(t, t.eot_id).c_str());
  for (int32_t id : t.extra_eos_ids) std::printf(", also ends at %s", token_text(t, id).c_str());
  std::printf("%s%s\n", t.add_bos ? ", adds bos" : "", t.pre.empty() ? "" : (", pre " + t.pre).c_str());
  if (!t.chat_template.empty()) std::printf("chat template %zu bytes\n", t.chat_template.size());

  std::printf("\n%-34s %-16s %-6s %12s\n", "tensor", "(rows, cols)", "type", "bytes");
  uint64_t params = 0, bytes = 0;
  auto row = [&](const tensor_view& v, bool counted) {
    const uint64_t b = static_cast<uint64_t>(v.rows * kern::row_bytes(v.dtype, v.cols));
    char shape[48];
    std::snprintf(shape, sizeof shape, "(%lld, %lld)", (long long)v.rows, (long long)v.cols);
    std::printf("%-34s %-16s %-6s %12llu%s\n", v.name.c_str(), shape, dtype_name(v.dtype), (unsigned long long)b,
                counted ? "" : "  (tied)");
    if (counted) {
      params += static_cast<uint64_t>(v.rows * v.cols);
      bytes += b;
    }
  };
  row(w.tok_embd, true);
  for (const layer_weights& l : w.layers)
    for (const tensor_view* v : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down})
      row(*v, true);
  row(w.output_norm, true);
  row(w.output, !c.tied_embeddings);
  std::printf("\nparameters    %llu (%.2f M)\nweight bytes  %llu (%s)\n", (unsigned long long)params, params / 1e6,
              (unsigned long long)bytes, human_bytes(static_cast<double>(bytes)).c_str());
  return 0;
}

// ---- synth and quantize --------------------------------------------------------------------

// Logs every 10% of a write of more than 64 MiB.
write_progress progress_logger(const std::string& out) {
  auto last = std::make_shared<uint64_t>(0);
  return [out, last](const std::string&, uint64_t done, uint64_t total) {
    if (total < (uint64_t{64} << 20)) return;
    const uint64_t decile = done * 10 / total;
    if (decile <= *last) return;
    *last = decile;
    spdlog::info("{}: {:3d}% ({} of {})", out, decile * 10, human_bytes(static_cast<double>(done)),
                 human_bytes(static_cast<double>(total)));
  };
}

// What `model synth` writes: a preset's shape, overridden by any shape flag given (0 keeps
// the preset's), made into `arch`.
struct synth_options {
  std::string preset = "tiny", arch = "llama", dtype = "f32", out, tokenizer_dir;
  uint64_t seed = 1;
  int64_t dim = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, ffn = 0, vocab = 0, context = 0;
  int64_t sliding_window = -1;  // -1: the arch's default
};

// `tokenizer_dir`: a Hugging Face tokenizer.json (and tokenizer_config.json) whose vocabulary,
// merges, special tokens, pre-tokenizer and chat template the model gets; else synth_vocab.
int run_synth(const synth_options& o) {
  tokenizer_data vocab;
  model_config c = synth_preset(o.preset);
  if (!o.tokenizer_dir.empty()) {
    if (o.vocab) throw error(error_kind::failed, "--vocab and --tokenizer: the tokenizer sets the vocabulary", "vocab");
    spdlog::info("reading tokenizer {}", o.tokenizer_dir);
    vocab = load_hf_tokenizer_json(o.tokenizer_dir);
    c = synth_preset(o.preset, vocab);
    spdlog::info("tokenizer: {} tokens, {} merges, pre {}, bos {}, eos {}, eot {}, chat template {} bytes",
                 vocab.tokens.size(), vocab.merges.size(), vocab.pre.empty() ? "none" : vocab.pre, vocab.bos_id,
                 vocab.eos_id, vocab.eot_id, vocab.chat_template.size());
  }
  const bool heads_given = o.heads > 0;
  if (o.dim) c.dim = o.dim;
  if (o.layers) c.n_layers = o.layers;
  if (o.heads) c.n_heads = o.heads;
  if (o.kv_heads)
    c.n_kv_heads = o.kv_heads;
  else if (heads_given)
    c.n_kv_heads = c.n_heads;
  if (o.ffn) c.hidden_dim = o.ffn;
  if (o.vocab) c.vocab_size = o.vocab;
  if (o.context) c.max_seq_len = o.context;
  c.head_dim = o.head_dim ? o.head_dim : c.dim / c.n_heads;
  if (c.n_heads % c.n_kv_heads)
    throw error(
        error_kind::failed,
        "--heads " + std::to_string(c.n_heads) + " is not a multiple of --kv-heads " + std::to_string(c.n_kv_heads),
        "kv-heads");
  if (c.head_dim % 2)
    throw error(error_kind::failed, "head_dim " + std::to_string(c.head_dim) + " (expected even)", "head-dim");
  apply_arch(c, o.arch);
  if (o.sliding_window >= 0) c.sliding_window = o.sliding_window;
  if (c.sliding_window > 0 && c.arch != "mistral")
    throw error(error_kind::failed, "--sliding-window is for --arch mistral", "sliding-window");
  if (o.tokenizer_dir.empty()) vocab = synth_vocab(c.vocab_size);
  spdlog::info("synth {} {} ({} layers, dim {}, {} heads / {} kv of {}, ffn {}, vocab {}, context {}{}) as {} into {}",
               o.arch, o.preset, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim, c.vocab_size,
               c.max_seq_len, c.sliding_window ? ", window " + std::to_string(c.sliding_window) : std::string(),
               o.dtype, o.out);
  write_llama_gguf(o.out, c, vocab, synth_tensors(c, parse_dtype(o.dtype), o.seed), progress_logger(o.out));
  spdlog::info("wrote {}", o.out);
  return 0;
}

int run_quantize(const std::string& in, const std::string& out, const std::string& dtype,
                 const std::string& tokenizer) {
  const auto m = open_model(in, tokenizer);
  spdlog::info("{} ({}) -> {} as {}", in, m->format(), out, dtype);
  const auto tensors = gguf_tensors_of(*m, parse_dtype(dtype), [](const std::string& s) { spdlog::warn("{}", s); });
  write_llama_gguf(out, m->config(), m->tokenizer(), tensors, progress_logger(out));
  spdlog::info("wrote {}", out);
  return 0;
}

// Perplexity and comparisons: a progress line per tenth of the chunks.
std::function<void(int64_t, int64_t)> chunk_progress(const std::string& what) {
  auto last = std::make_shared<int64_t>(-1);
  return [what, last](int64_t done, int64_t total) {
    const int64_t decile = done * 10 / total;
    if (decile == *last) return;
    *last = decile;
    spdlog::info("{}: {:3d}% ({} of {} chunks)", what, (int)(decile * 10), done, total);
  };
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(error_kind::failed, "cannot read text file " + path, "text");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct quality_flags {
  std::string model, base, text;
  quality_options opt;
  bool json = false;
};

int run_perplexity(const quality_flags& f) {
  const auto m = open_model(f.model);
  const auto reg = kern::make_kernel_registry({});
  const auto ids = tokenize_text(*m, read_text(f.text));
  spdlog::info("{}: {} tokens of {}, chunks of {}", f.model, ids.size(), f.text, f.opt.ctx);
  quality_options o = f.opt;
  o.progress = chunk_progress("perplexity");
  const perplexity_result r = perplexity(*m, *reg, ids, o);
  if (f.json)
    std::printf("{\"ppl\":%.6f,\"ppl_err\":%.6f,\"nll\":%.6f,\"tokens\":%lld,\"chunks\":%lld,\"text_tokens\":%lld}\n",
                r.ppl, r.ppl_err, r.nll, (long long)r.tokens, (long long)r.chunks, (long long)r.text_tokens);
  else
    std::printf("perplexity %.4f +/- %.5f over %lld tokens (%lld chunks of %lld; text %lld tokens)\n", r.ppl, r.ppl_err,
                (long long)r.tokens, (long long)r.chunks, (long long)f.opt.ctx, (long long)r.text_tokens);
  return 0;
}

int run_compare(const quality_flags& f) {
  const auto base = open_model(f.base);
  const auto m = open_model(f.model);
  const auto reg = kern::make_kernel_registry({});
  const auto ids = tokenize_text(*base, read_text(f.text));
  if (tokenize_text(*m, read_text(f.text)) != ids)
    throw error(error_kind::failed, f.model + " tokenizes the text differently from " + f.base, "model");
  quality_options o = f.opt;
  o.progress = chunk_progress("compare");
  const compare_result r = compare_models(*base, *m, *reg, ids, o);
  if (f.json)
    std::printf(
        "{\"ppl_base\":%.6f,\"ppl\":%.6f,\"ppl_delta\":%.6f,\"kld_mean\":%.6g,\"kld_p99\":%.6g,\"kld_max\":%.6g,"
        "\"top1\":%.6f,\"tokens\":%lld}\n",
        r.base.ppl, r.model.ppl, r.model.ppl - r.base.ppl, r.kld_mean, r.kld_p99, r.kld_max, r.top1,
        (long long)r.model.tokens);
  else
    std::printf(
        "perplexity   base %.4f, model %.4f (%+.4f, %+.2f%%)\nKL divergence mean %.6f, p99 %.6f, max %.6f nats\n"
        "top-1 agreement %.2f%% over %lld tokens\n",
        r.base.ppl, r.model.ppl, r.model.ppl - r.base.ppl, 100.0 * (r.model.ppl / r.base.ppl - 1), r.kld_mean,
        r.kld_p99, r.kld_max, 100.0 * r.top1, (long long)r.model.tokens);
  return 0;
}

}  // namespace

void add_model(CLI::App& app) {
  auto* model = app.add_subcommand("model", "Inspect, synthesize and quantize model files");
  model->require_subcommand(1);

  auto* inspect = model->add_subcommand("inspect", "Show a model's shape, tensors, types and tokenizer");
  auto path = std::make_shared<std::string>();
  auto tokenizer = std::make_shared<std::string>();
  inspect->add_option("path", *path, "GGUF file, llama2.c .bin or Hugging Face directory")->required();
  inspect->add_option("--tokenizer", *tokenizer, "tokenizer file for a llama2.c checkpoint");
  inspect->callback([=] { set_runner([=] { return run_inspect(*path, *tokenizer); }); });

  auto* synth =
      model->add_subcommand("synth", "Write a GGUF model (Llama, Mistral, Qwen2, Qwen3) with seeded random weights");
  auto so = std::make_shared<synth_options>();
  synth->add_option("--preset", so->preset, "shape to start from: tiny, 110m or 1b")
      ->check(CLI::IsMember({"tiny", "110m", "1b"}))
      ->capture_default_str();
  synth->add_option("--arch", so->arch, "llama, mistral (sliding window), qwen2 (q/k/v biases), qwen3 (q/k norms)")
      ->check(CLI::IsMember({"llama", "mistral", "qwen2", "qwen3"}))
      ->capture_default_str();
  synth->add_option("--dtype", so->dtype, "weight type")
      ->check(CLI::IsMember(kern::engine_dtype_names()))
      ->capture_default_str();
  synth->add_option("--out", so->out, "output .gguf file")->required();
  synth->add_option("--seed", so->seed, "random seed")->capture_default_str();
  const auto positive = CLI::PositiveNumber;
  synth->add_option("--dim", so->dim, "embedding width (default: the preset's)")->check(positive);
  synth->add_option("--layers", so->layers, "layers")->check(positive);
  synth->add_option("--heads", so->heads, "attention heads")->check(positive);
  synth->add_option("--kv-heads", so->kv_heads, "KV heads (grouped-query attention; default: --heads)")
      ->check(positive);
  synth->add_option("--head-dim", so->head_dim, "width of a head (default: dim / heads)")->check(positive);
  synth->add_option("--ffn", so->ffn, "feed-forward (SwiGLU) width")->check(positive);
  synth->add_option("--vocab", so->vocab, "vocabulary size (a generated SentencePiece vocabulary)")
      ->check(CLI::Range(int64_t{259}, int64_t{1} << 24));
  synth->add_option("--context", so->context, "context length")->check(positive);
  synth
      ->add_option("--sliding-window", so->sliding_window,
                   "Mistral's attention window, tokens (default: min(4096, context / 2); 0: none)")
      ->check(CLI::NonNegativeNumber);
  synth->add_option("--tokenizer", so->tokenizer_dir,
                    "Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json): its vocabulary, "
                    "special tokens and chat template, and the model's vocab size");
  synth->callback([=] { set_runner([=] { return run_synth(*so); }); });

  auto add_quality_flags = [](CLI::App* sub, quality_flags& f) {
    sub->add_option("--text", f.text, "plain text file to score (e.g. /usr/share/common-licenses/GPL-3)")
        ->required()
        ->check(CLI::ExistingFile);
    sub->add_option("--ctx", f.opt.ctx, "tokens per chunk; the second half of each is scored")->capture_default_str();
    sub->add_option("--chunks", f.opt.max_chunks, "at most this many chunks (0: all)")->capture_default_str();
    sub->add_option("--threads", f.opt.threads, "kernel threads")->check(CLI::PositiveNumber)->capture_default_str();
    sub->add_flag("--json", f.json, "one JSON line instead of text");
  };
  auto* ppl = model->add_subcommand("perplexity", "Perplexity of a model over a text, as llama-perplexity scores it");
  auto pf = std::make_shared<quality_flags>();
  ppl->add_option("--model", pf->model, "model file")->required();
  add_quality_flags(ppl, *pf);
  ppl->callback([=] { set_runner([=] { return run_perplexity(*pf); }); });
  auto* cmp = model->add_subcommand(
      "compare", "What a compression costs: KL divergence, top-1 agreement and perplexity against the base model");
  auto cf = std::make_shared<quality_flags>();
  cmp->add_option("--base", cf->base, "the uncompressed model (f16, f32)")->required();
  cmp->add_option("--model", cf->model, "the compressed model")->required();
  add_quality_flags(cmp, *cf);
  cmp->callback([=] { set_runner([=] { return run_compare(*cf); }); });

  auto* quantize = model->add_subcommand("quantize", "Rewrite a model as GGUF in another weight type");
  auto in = std::make_shared<std::string>();
  auto qout = std::make_shared<std::string>();
  auto qtype = std::make_shared<std::string>("q8_0");
  auto qtok = std::make_shared<std::string>();
  quantize->add_option("in", *in, "any model open_model() reads")->required();
  quantize->add_option("out", *qout, "output .gguf file")->required();
  quantize->add_option("--dtype", *qtype, "weight type; norms stay f32")
      ->check(CLI::IsMember(kern::engine_dtype_names()));
  quantize->add_option("--tokenizer", *qtok, "tokenizer file for a llama2.c checkpoint");
  quantize->callback([=] { set_runner([=] { return run_quantize(*in, *qout, *qtype, *qtok); }); });
}

}  // namespace troupe::cli
