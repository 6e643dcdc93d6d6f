// troupe model inspect|synth|quantize: look inside a model file, write a synthetic one,
// or rewrite one in another weight type.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>

#include "commands.h"
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

// `tokenizer_dir`: a Hugging Face tokenizer.json (and tokenizer_config.json) whose vocabulary,
// merges, special tokens, pre-tokenizer and chat template the model gets; else synth_vocab.
int run_synth(const std::string& preset, const std::string& dtype, const std::string& out, uint64_t seed,
              const std::string& tokenizer_dir) {
  tokenizer_data vocab;
  model_config c;
  if (tokenizer_dir.empty()) {
    c = synth_preset(preset);
    vocab = synth_vocab(c.vocab_size);
  } else {
    spdlog::info("reading tokenizer {}", tokenizer_dir);
    vocab = load_hf_tokenizer_json(tokenizer_dir);
    c = synth_preset(preset, vocab);
    spdlog::info("tokenizer: {} tokens, {} merges, pre {}, bos {}, eos {}, eot {}, chat template {} bytes",
                 vocab.tokens.size(), vocab.merges.size(), vocab.pre.empty() ? "none" : vocab.pre, vocab.bos_id,
                 vocab.eos_id, vocab.eot_id, vocab.chat_template.size());
  }
  spdlog::info("synth {} ({} layers, dim {}, vocab {}) as {} into {}", preset, c.n_layers, c.dim, c.vocab_size, dtype,
               out);
  write_llama_gguf(out, c, vocab, synth_tensors(c, parse_dtype(dtype), seed), progress_logger(out));
  spdlog::info("wrote {}", out);
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

  auto* synth = model->add_subcommand("synth", "Write a GGUF Llama model with seeded random weights");
  auto preset = std::make_shared<std::string>("tiny");
  auto dtype = std::make_shared<std::string>("f32");
  auto out = std::make_shared<std::string>();
  auto seed = std::make_shared<uint64_t>(1);
  synth->add_option("--preset", *preset, "tiny, 110m or 1b")->check(CLI::IsMember({"tiny", "110m", "1b"}));
  synth->add_option("--dtype", *dtype, "weight type")->check(CLI::IsMember(kern::engine_dtype_names()));
  synth->add_option("--out", *out, "output .gguf file")->required();
  synth->add_option("--seed", *seed, "random seed");
  auto synth_tok = std::make_shared<std::string>();
  synth->add_option("--tokenizer", *synth_tok,
                    "Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json): its vocabulary, "
                    "special tokens and chat template, and the model's vocab size");
  synth->callback([=] { set_runner([=] { return run_synth(*preset, *dtype, *out, *seed, *synth_tok); }); });

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
