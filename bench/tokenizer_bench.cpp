// Tokenizer throughput: bytes of text encoded (and decoded) per second, on 1 MiB built from
// the shared models' reference stories plus some accents, emoji and CJK; and the real Llama 3
// and Qwen3 tokenizers (../shared/tokenizers) on 1 MiB of their reference texts and chats,
// in MB/s and tokens/s (bench/tokenizer_reference.mjs times transformers.js on the same text).
// Run: bench_tokenizer (reads ../shared/models and ../shared/tokenizers beside the checkout).
#include <benchmark/benchmark.h>

#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "src/model/tokenizer.h"
#include "src/model/tokenizer_files.h"
#include "src/model/unicode_text.h"

namespace {

const std::string k_models = TROUPE_MODELS_DIR;
const std::string k_tokenizers = k_models + "/../tokenizers";

std::string one_mib_of_text() {
  std::ifstream in(k_models + "/stories260K/reference/once_upon_a_time.gen64.ids.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string ref = ss.str();
  const std::string story = ref.substr(ref.find("text: ") + 6);
  const std::string unit = story + " Café naïve 😀 日本語のテキスト, 12345 items.\n";
  std::string text;
  while (text.size() < (1u << 20)) text += unit;
  return text;
}

// Bytes and tokens per second of encoding `text` (one_mib_of_text() by default).
void encode_bench(benchmark::State& st, const troupe::tokenizer& tok, const std::string& text = one_mib_of_text(),
                  bool add_bos = true) {
  size_t ids = 0;
  for (auto _ : st) {
    auto out = tok.encode(text, add_bos);
    ids = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * text.size()));
  st.counters["ids"] = static_cast<double>(ids);
  st.counters["tokens/s"] = benchmark::Counter(static_cast<double>(ids * st.iterations()), benchmark::Counter::kIsRate);
}

void bm_encode_llama2c(benchmark::State& st) {
  encode_bench(st, troupe::tokenizer(troupe::load_llama2c_tokenizer(k_models + "/stories260K/tok512.bin", 512)));
}
BENCHMARK(bm_encode_llama2c)->Unit(benchmark::kMillisecond);

void bm_encode_hf_json(benchmark::State& st) {
  encode_bench(st, troupe::tokenizer(troupe::load_hf_tokenizer_json(k_models + "/tinystories-656K")));
}
BENCHMARK(bm_encode_hf_json)->Unit(benchmark::kMillisecond);

// Byte-level BPE with the Llama 3 pre-tokenizer: the byte alphabet plus every pair of
// lowercase letters and of "Ġ" + letter as merges (no Llama 3 vocabulary is in the repo).
void bm_encode_byte_level(benchmark::State& st) {
  troupe::tokenizer_data d;
  d.type = troupe::tokenizer_data::kind::byte_level_bpe;
  d.add_space_prefix = false;
  d.pre = "llama-bpe";
  for (int b = 0; b < 256; ++b) {
    d.tokens.emplace_back();
    troupe::unicode::append_utf8(d.tokens.back(), troupe::unicode::byte_to_code_point(static_cast<unsigned char>(b)));
  }
  for (char a = 'a'; a <= 'z'; ++a) {
    for (char b = 'a'; b <= 'z'; ++b) {
      d.merges.push_back(std::string{a, ' ', b});
      d.tokens.push_back(std::string{a, b});
    }
    d.merges.push_back("\xC4\xA0 " + std::string(1, a));
    d.tokens.push_back("\xC4\xA0" + std::string(1, a));
  }
  encode_bench(st, troupe::tokenizer(d));
}
BENCHMARK(bm_encode_byte_level)->Unit(benchmark::kMillisecond);

// The texts and rendered chats of reference/llama3.json and reference/qwen3.json, each
// followed by "\n", repeated to at least 1 MiB (tokenizer_reference.mjs builds the same).
std::string one_mib_of_reference_text() {
  std::string unit;
  for (const char* name : {"llama3", "qwen3"}) {
    std::ifstream in(k_tokenizers + "/reference/" + name + ".json");
    const auto root = nlohmann::json::parse(in);
    for (const auto& t : root["texts"]) unit += t["text"].get<std::string>() + "\n";
    for (const auto& c : root["chats"]) unit += c["rendered"].get<std::string>() + "\n";
  }
  std::string text;
  while (text.size() < (1u << 20)) text += unit;
  return text;
}

void encode_real(benchmark::State& st, const std::string& name) {
  encode_bench(st, troupe::tokenizer(troupe::load_hf_tokenizer_json(k_tokenizers + "/" + name)),
               one_mib_of_reference_text(), /*add_bos=*/false);
}

void bm_encode_llama3(benchmark::State& st) { encode_real(st, "llama3"); }
BENCHMARK(bm_encode_llama3)->Unit(benchmark::kMillisecond);

void bm_encode_qwen3(benchmark::State& st) { encode_real(st, "qwen3"); }
BENCHMARK(bm_encode_qwen3)->Unit(benchmark::kMillisecond);

void bm_decode_llama2c(benchmark::State& st) {
  const troupe::tokenizer tok(troupe::load_llama2c_tokenizer(k_models + "/stories260K/tok512.bin", 512));
  const std::string text = one_mib_of_text();
  const auto ids = tok.encode(text, true);
  for (auto _ : st) benchmark::DoNotOptimize(tok.decode(ids));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * text.size()));
}
BENCHMARK(bm_decode_llama2c)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
