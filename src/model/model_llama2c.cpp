// llama2.c checkpoints (the legacy "version 0" export): a header of 7 int32 then f32
// weights, each kind for all layers at once:
//   token_embedding_table (vocab, dim)
//   rms_att_weight (n_layers, dim)
//   wq (n_layers, n_heads*head_size, dim), wk, wv (n_layers, n_kv_heads*head_size, dim)
//   wo (n_layers, dim, n_heads*head_size)
//   rms_ffn_weight (n_layers, dim)
//   w1 (n_layers, hidden, dim), w2 (n_layers, dim, hidden), w3 (n_layers, hidden, dim)
//   rms_final_weight (dim)
//   freq_cis_real, freq_cis_imag (seq_len, head_size/2) each: unused
//   wcls (vocab, dim) only when the header's vocab_size is negative.
// w1 is the gate, w3 the up projection, w2 the down projection.
#include <cstring>
#include <filesystem>

#include "src/model/mmap_file.h"
#include "src/model/model_loaders.h"
#include "src/model/tokenizer_files.h"
#include "troupe/error.h"

namespace troupe {

namespace {

struct header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

// The tokenizer beside a checkpoint: tokenizer.bin, else the only tok*.bin.
std::string find_tokenizer(const std::string& checkpoint) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(checkpoint).parent_path().empty() ? fs::path(".") : fs::path(checkpoint).parent_path();
  if (fs::exists(dir / "tokenizer.bin")) return (dir / "tokenizer.bin").string();
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("tok") && name.ends_with(".bin") && e.path() != fs::path(checkpoint))
      found.push_back(e.path());
  }
  if (found.size() != 1)
    throw error(error_kind::failed,
                checkpoint +
                    ": llama2.c checkpoints need a tokenizer: pass one, or put tokenizer.bin (or a single "
                    "tok*.bin) beside it; found " +
                    std::to_string(found.size()) + " candidates in " + dir.string(),
                "tokenizer");
  return found.front();
}

}  // namespace

std::unique_ptr<model_file> open_llama2c(const std::string& path, const std::string& tokenizer_path) {
  auto map = std::make_shared<const mapped_file>(path);
  auto m = std::make_unique<loaded_model>();
  m->path_ = path;
  m->format_ = "llama2.c";
  m->resources.push_back(map);
  const uint64_t size = map->size();
  if (size < sizeof(header))
    throw error(error_kind::failed,
                path + ": truncated file: " + std::to_string(size) + " bytes, the llama2.c header needs 28");
  header h;
  std::memcpy(&h, map->data(), sizeof h);
  if (std::memcmp(map->data(), "24ka", 4) == 0)
    throw error(error_kind::unimplemented,
                path + ": llama2.c export version 1/2 (magic \"ak42\") is not supported; export with --version 0");
  const int32_t fields[] = {h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.seq_len};
  const char* names[] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "seq_len"};
  for (int i = 0; i < 6; ++i)
    if (fields[i] <= 0 || fields[i] > (1 << 20))
      throw error(error_kind::failed,
                  path + ": corrupted header: " + names[i] + " is " + std::to_string(fields[i]) + " (expected 1..2^20)",
                  names[i]);
  if (h.vocab_size == 0 || h.vocab_size < -(1 << 24) || h.vocab_size > (1 << 24))
    throw error(error_kind::failed, path + ": corrupted header: vocab_size is " + std::to_string(h.vocab_size),
                "vocab_size");
  if (h.dim % h.n_heads != 0 || h.n_heads % h.n_kv_heads != 0)
    throw error(error_kind::failed,
                path + ": corrupted header: dim " + std::to_string(h.dim) + ", n_heads " + std::to_string(h.n_heads) +
                    ", n_kv_heads " + std::to_string(h.n_kv_heads) +
                    " (expected dim % n_heads == 0 and n_heads % "
                    "n_kv_heads == 0)",
                "n_heads");

  model_config& c = m->config_;
  c.arch = "llama";
  c.name = std::filesystem::path(path).stem().string();
  c.dim = h.dim;
  c.hidden_dim = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.vocab_size = h.vocab_size < 0 ? -int64_t{h.vocab_size} : h.vocab_size;
  c.max_seq_len = h.seq_len;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_neox = false;
  c.tied_embeddings = h.vocab_size > 0;

  // Lay the tensors out in file order and check the total before taking any view.
  const int64_t L = c.n_layers, D = c.dim, H = c.hidden_dim, V = c.vocab_size;
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  uint64_t offset = sizeof(header);
  auto take = [&](int64_t rows, int64_t cols) {
    const uint64_t at = offset;
    offset += static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols) * sizeof(float);
    return at;
  };
  const uint64_t o_embd = take(V, D), o_att = take(L, D), o_wq = take(L * q_dim, D), o_wk = take(L * kv_dim, D),
                 o_wv = take(L * kv_dim, D), o_wo = take(L * D, q_dim), o_ffn = take(L, D), o_w1 = take(L * H, D),
                 o_w2 = take(L * D, H), o_w3 = take(L * H, D), o_final = take(1, D);
  take(c.max_seq_len, c.head_dim);  // freq_cis_real and freq_cis_imag, (seq_len, head_size/2) each
  const uint64_t o_cls = h.vocab_size < 0 ? take(V, D) : o_embd;
  if (size < offset)
    throw error(error_kind::failed, path + ": truncated file: " + std::to_string(size) + " bytes, the header (dim " +
                                        std::to_string(D) + ", " + std::to_string(L) + " layers, vocab " +
                                        std::to_string(V) + ") needs " + std::to_string(offset));

  const uint8_t* base = map->data();
  auto view = [&](std::string name, uint64_t at, int64_t layer, int64_t rows, int64_t cols) {
    tensor_view v;
    v.name = std::move(name);
    v.data = base + at + static_cast<uint64_t>(layer * rows * cols) * sizeof(float);
    v.dtype = TROUPE_F32;
    v.rows = rows;
    v.cols = cols;
    return v;
  };
  model_weights& w = m->weights_;
  w.tok_embd = view("token_embedding_table", o_embd, 0, V, D);
  w.layers.resize(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i) {
    std::string n = "[";
    n += std::to_string(i) + "]";
    layer_weights& l = w.layers[i];
    l.attn_norm = view("rms_att_weight" + n, o_att, i, 1, D);
    l.wq = view("wq" + n, o_wq, i, q_dim, D);
    l.wk = view("wk" + n, o_wk, i, kv_dim, D);
    l.wv = view("wv" + n, o_wv, i, kv_dim, D);
    l.wo = view("wo" + n, o_wo, i, D, q_dim);
    l.ffn_norm = view("rms_ffn_weight" + n, o_ffn, i, 1, D);
    l.w_gate = view("w1" + n, o_w1, i, H, D);
    l.w_down = view("w2" + n, o_w2, i, D, H);
    l.w_up = view("w3" + n, o_w3, i, H, D);
  }
  w.output_norm = view("rms_final_weight", o_final, 0, 1, D);
  w.output = c.tied_embeddings ? w.tok_embd : view("wcls", o_cls, 0, V, D);
  validate_model(path, c, w);

  const std::string tok = tokenizer_path.empty() ? find_tokenizer(path) : tokenizer_path;
  m->tokenizer_ = load_llama2c_tokenizer(tok, static_cast<int32_t>(V));  // reads exactly V tokens
  validate_tokenizer(path, m->config_, m->tokenizer_);
  return m;
}

}  // namespace troupe
