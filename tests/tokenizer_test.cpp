// Tokenizers: exact ids against the shared models' references, round trips, byte fallback,
// a synthetic byte-level BPE vocabulary, streaming detokenization and malformed files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "src/model/tokenizer.h"
#include "src/model/tokenizer_files.h"
#include "src/model/unicode_text.h"
#include "test_support.h"
#include "troupe/error.h"

namespace troupe {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

// reference/*.ids.txt: "prompt_ids: ...", "generated_ids: ...", "text: " up to the file's
// final newline.
struct reference_run {
  std::vector<int32_t> prompt_ids, generated_ids;
  std::string text;
};

reference_run read_reference(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  reference_run r;
  auto ids_after = [&](const std::string& key) {
    std::vector<int32_t> ids;
    const size_t at = all.find(key);
    if (at == std::string::npos) return ids;
    std::istringstream line(all.substr(at + key.size(), all.find('\n', at) - at - key.size()));
    for (int32_t id; line >> id;) ids.push_back(id);
    return ids;
  };
  r.prompt_ids = ids_after("prompt_ids:");
  r.generated_ids = ids_after("generated_ids:");
  const size_t t = all.find("text: ");
  if (t != std::string::npos) r.text = all.substr(t + 6);
  if (!r.text.empty() && r.text.back() == '\n') r.text.pop_back();
  return r;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

tokenizer stories_tokenizer() {
  return tokenizer(load_llama2c_tokenizer((test::models_dir() / "stories260K" / "tok512.bin").string(), 512));
}

// A scratch directory under the system temp dir, removed at the end of the test.
struct scratch_dir {
  fs::path path;
  scratch_dir() {
    path = fs::temp_directory_path() /
           ("troupe_tokenizer_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~scratch_dir() { fs::remove_all(path); }
  fs::path write(const std::string& name, const std::string& content) const {
    std::ofstream(path / name, std::ios::binary) << content;
    return path / name;
  }
};

template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "(no troupe::error thrown)";
}

// ---------------------------------------------------------------------------------------------
// Reference ids of the shared models
// ---------------------------------------------------------------------------------------------

TEST(Tokenizer, Llama2cMatchesReferencePromptIds) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer tok = stories_tokenizer();
  const auto ref = read_reference(test::models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
  ASSERT_EQ(ref.prompt_ids, (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("Once upon a time", true), ref.prompt_ids);
  EXPECT_EQ(tok.encode("Once upon a time", false),
            std::vector<int32_t>(ref.prompt_ids.begin() + 1, ref.prompt_ids.end()));
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_TRUE(tok.is_eos(2));
  EXPECT_TRUE(tok.is_control(1));
  EXPECT_FALSE(tok.is_control(403));
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.token_bytes(403), " Once");
  EXPECT_EQ(tok.token_bytes(13), "\n");
}

TEST(Tokenizer, Llama2cDecodesReferenceGeneration) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer tok = stories_tokenizer();
  const auto ref = read_reference(test::models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
  ASSERT_EQ(ref.generated_ids.size(), 64u);
  EXPECT_EQ(tok.decode(concat(ref.prompt_ids, ref.generated_ids)), ref.text);
}

TEST(Tokenizer, HfJsonMatchesReferencePromptIds) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer_data data = load_hf_tokenizer_json((test::models_dir() / "tinystories-656K").string());
  EXPECT_EQ(data.type, tokenizer_data::kind::sentencepiece_bpe);
  EXPECT_TRUE(data.add_space_prefix);
  EXPECT_EQ(data.bos_id, 1);  // "<|start_story|>", from tokenizer_config.json
  EXPECT_EQ(data.eos_id, 2);
  EXPECT_EQ(data.unk_id, 0);
  const tokenizer tok(data);
  const auto ref = read_reference(test::models_dir() / "tinystories-656K/reference/once_upon_a_time.gen64.ids.txt");
  ASSERT_EQ(ref.prompt_ids, (std::vector<int32_t>{1, 80, 147, 201, 282, 57}));
  EXPECT_EQ(tok.encode("Once upon a time", true), ref.prompt_ids);
  // The file's own special token written in the text is matched whole.
  EXPECT_EQ(tok.encode("<|start_story|>Once upon a time", false), ref.prompt_ids);
}

TEST(Tokenizer, HfJsonDecodesReferenceGeneration) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer tok(load_hf_tokenizer_json((test::models_dir() / "tinystories-656K" / "tokenizer.json").string()));
  const auto ref = read_reference(test::models_dir() / "tinystories-656K/reference/once_upon_a_time.gen64.ids.txt");
  ASSERT_EQ(ref.generated_ids.size(), 64u);
  EXPECT_EQ(tok.decode(concat(ref.prompt_ids, ref.generated_ids)), ref.text);
  // And back: the reference text (plain ASCII, in this vocabulary) round-trips.
  EXPECT_EQ(tok.decode(tok.encode(ref.text, true)), ref.text);
}

// ---------------------------------------------------------------------------------------------
// SentencePiece BPE: round trips and byte fallback
// ---------------------------------------------------------------------------------------------

TEST(Tokenizer, SentencePieceRoundTrips) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer tok = stories_tokenizer();
  for (const std::string s : {"Once upon a time, there was a little girl.", "café, naïve, Ærøskøbing, Straße",
                              "emoji 😀🎉 and 👩‍👩‍👧", "日本語のテキストと中文",
                              "line one\nline two\r\n\n  indented\ttab", "  leading and trailing spaces  ", "", "a"}) {
    EXPECT_EQ(tok.decode(tok.encode(s, true)), s) << s;
    EXPECT_EQ(tok.decode(tok.encode(s, false)), s) << s;
  }
  EXPECT_EQ(tok.encode("", true), std::vector<int32_t>{1});
  EXPECT_TRUE(tok.encode("", false).empty());
}

TEST(Tokenizer, SentencePieceFallsBackToBytes) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer tok = stories_tokenizer();
  // "日" (E6 97 A5) is not in the 512-token vocabulary: its bytes are tokens 3 + byte.
  EXPECT_EQ(tok.encode("日", false), (std::vector<int32_t>{410, 3 + 0xE6, 3 + 0x97, 3 + 0xA5}));
  // "é" is in the vocabulary (485) and stays whole.
  EXPECT_EQ(tok.encode("é", false), (std::vector<int32_t>{410, 485}));
  EXPECT_EQ(tok.token_bytes(3 + 0xE6), "\xE6");
}

TEST(Tokenizer, SentencePieceMergesByScoreThenLeftmost) {
  // Scores decide, not position: "bc" (score 5) beats the leftmost "ab" (score 1).
  tokenizer_data d;
  d.tokens = {"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "\xE2\x96\x81"};
  d.scores = {0, 0, 0, -1, -1, -1, 1, 5, -1};
  d.token_types = {2, 3, 3, 1, 1, 1, 1, 1, 1};
  d.bos_id = 1;
  d.eos_id = 2;
  d.unk_id = 0;
  d.add_space_prefix = false;
  tokenizer tok(d);
  EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{3, 7}));
  // Equal scores: the leftmost pair merges first.
  d.scores[6] = d.scores[7] = 2;
  tokenizer tied(d);
  EXPECT_EQ(tied.encode("abc", false), (std::vector<int32_t>{6, 5}));
  // No byte tokens in this vocabulary: an unknown character becomes <unk>.
  EXPECT_EQ(tied.encode("a\xC3\xA9", false), (std::vector<int32_t>{3, 0}));
}

// Independent oracles, written the slow obvious way: every round merges the best adjacent
// pair of the whole sequence (llama2.c's run.c: highest score; Hugging Face: lowest rank;
// the leftmost on ties).
std::vector<int32_t> oracle_bpe(const tokenizer_data& d, const std::string& text) {
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.push_back("\xE2\x96\x81");
  for (size_t pos = 0; pos < text.size();) {
    const size_t start = pos;
    unicode::next_code_point(text, pos);
    const std::string c = text.substr(start, pos - start);
    pieces.push_back(c == " " ? "\xE2\x96\x81" : c);
  }
  auto id_of = [&](const std::string& p) {
    const auto it = std::find(d.tokens.begin(), d.tokens.end(), p);
    return it == d.tokens.end() ? -1 : static_cast<int32_t>(it - d.tokens.begin());
  };
  auto rank_of = [&](const std::string& a, const std::string& b) {
    const auto it = std::find(d.merges.begin(), d.merges.end(), a + " " + b);
    return it == d.merges.end() ? -1 : static_cast<int>(it - d.merges.begin());
  };
  for (;;) {
    int best = -1;
    double best_priority = 0;
    for (size_t i = 0; i + 1 < pieces.size(); ++i) {
      double priority = 0;
      if (d.merges.empty()) {
        const int32_t id = id_of(pieces[i] + pieces[i + 1]);
        if (id < 0) continue;
        priority = d.scores[id];
      } else {
        const int rank = rank_of(pieces[i], pieces[i + 1]);
        if (rank < 0) continue;
        priority = -rank;
      }
      if (best < 0 || priority > best_priority) {
        best = static_cast<int>(i);
        best_priority = priority;
      }
    }
    if (best < 0) break;
    pieces[best] += pieces[best + 1];
    pieces.erase(pieces.begin() + best + 1);
  }
  std::vector<int32_t> ids;
  for (const std::string& p : pieces) {
    if (const int32_t id = id_of(p); id >= 0) {
      ids.push_back(id);
      continue;
    }
    std::vector<int32_t> bytes;
    for (unsigned char b : p) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      bytes.push_back(id_of(name));
    }
    if (std::find(bytes.begin(), bytes.end(), -1) == bytes.end()) {
      ids.insert(ids.end(), bytes.begin(), bytes.end());
    } else {
      ids.push_back(d.unk_id);
    }
  }
  return ids;
}

// Texts of words from the reference stories and a few characters outside the vocabularies.
std::vector<std::string> random_texts(int count) {
  const std::vector<std::string> words = {
      "Once",  "upon",    "a",       "time",  "there", "was",  "little", "girl", "named", "Lily", "She",  "loved",
      "to",    "play",    "outside", "park.", "One",   "day,", "saw",    "big,", "red",   "ball", "it's", "mom",
      "said,", "\"Okay,", "let's",   "café",  "naïve", "😀",    "日本",   "—",    "12345", "Ω",    "\n",   "  "};
  std::mt19937 rng(42);
  std::vector<std::string> texts;
  for (int i = 0; i < count; ++i) {
    std::string t;
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int w = 0; w < n; ++w) t += (w ? " " : "") + words[rng() % words.size()];
    texts.push_back(t);
  }
  return texts;
}

TEST(Tokenizer, Llama2cEqualsGlobalBestScoreOracle) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer_data d = load_llama2c_tokenizer((test::models_dir() / "stories260K" / "tok512.bin").string(), 512);
  const tokenizer tok(d);
  for (const std::string& text : random_texts(150)) ASSERT_EQ(tok.encode(text, false), oracle_bpe(d, text)) << text;
}

TEST(Tokenizer, HfJsonEqualsGlobalBestRankOracle) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer_data d = load_hf_tokenizer_json((test::models_dir() / "tinystories-656K").string());
  const tokenizer tok(d);
  for (const std::string& text : random_texts(60)) ASSERT_EQ(tok.encode(text, false), oracle_bpe(d, text)) << text;
}

// ---------------------------------------------------------------------------------------------
// Byte-level BPE: pre-tokenizer, merges by rank, special tokens
// ---------------------------------------------------------------------------------------------

std::vector<std::string> split(std::string_view s, unicode::pre_tokenizer kind = unicode::pre_tokenizer::llama3) {
  std::vector<std::string> out;
  for (auto piece : unicode::pre_tokenize(s, kind)) out.emplace_back(piece);
  return out;
}

using strings = std::vector<std::string>;

TEST(Tokenizer, Llama3PreTokenizerSplits) {
  EXPECT_EQ(split("I'm sure it's HERE'S"), (strings{"I", "'m", " sure", " it", "'s", " HERE", "'S"}));
  EXPECT_EQ(split("they'll we've you're I'd"), (strings{"they", "'ll", " we", "'ve", " you", "'re", " I", "'d"}));
  EXPECT_EQ(split("1234567 89"), (strings{"123", "456", "7", " ", "89"}));
  EXPECT_EQ(split("pi=3.14"), (strings{"pi", "=", "3", ".", "14"}));
  EXPECT_EQ(split("a  b   c"), (strings{"a", " ", " b", "  ", " c"}));
  EXPECT_EQ(split("end   "), (strings{"end", "   "}));
  EXPECT_EQ(split("x\n\n  y"), (strings{"x", "\n\n", " ", " y"}));
  EXPECT_EQ(split("Hello, world!!\n"), (strings{"Hello", ",", " world", "!!\n"}));
  EXPECT_EQ(split("café 日本語テキスト Москва"), (strings{"café", " 日本語テキスト", " Москва"}));
  EXPECT_EQ(split("$x ...ok"), (strings{"$x", " ...", "ok"}));
  EXPECT_EQ(split("😀😀 hi"), (strings{"😀😀", " hi"}));
  // Combining marks are neither letters nor numbers (as the regex engine has it).
  EXPECT_EQ(split("नमस्ते दुनिया"), (strings{"नमस", "्त", "े", " द", "ुन", "िय", "ा"}));
  EXPECT_EQ(split("مرحبا بالعالم"), (strings{"مرحبا", " بالعالم"}));
}

TEST(Tokenizer, Gpt2PreTokenizerSplits) {
  const auto gpt2 = unicode::pre_tokenizer::gpt2;
  EXPECT_EQ(split("I'm 12345 HERE'S", gpt2), (strings{"I", "'m", " 12345", " HERE", "'", "S"}));
  EXPECT_EQ(split("a  b!!", gpt2), (strings{"a", " ", " b", "!!"}));
}

// A byte-level vocabulary: the 256 mapped bytes (ids 0..255 in byte order), then merges.
tokenizer_data synthetic_byte_level() {
  tokenizer_data d;
  d.type = tokenizer_data::kind::byte_level_bpe;
  d.add_space_prefix = false;
  d.pre = "llama-bpe";
  for (int b = 0; b < 256; ++b) {
    std::string s;
    unicode::append_utf8(s, unicode::byte_to_code_point(static_cast<unsigned char>(b)));
    d.tokens.push_back(s);
  }
  // "Ġ" is the mapped space.
  for (const char* merge : {"t h", "th e", "Ġ t", "Ġt h", "Ġth e", "1 2", "12 3", "a b", "b c"}) {
    d.merges.push_back(merge);
    std::string m = merge;
    d.tokens.push_back(m.erase(m.find(' '), 1));  // ids 256.. : th the Ġt Ġth Ġthe 12 123 ab bc
  }
  d.tokens.push_back("<|begin_of_text|>");  // 265
  d.tokens.push_back("<|eot_id|>");         // 266
  d.token_types.assign(d.tokens.size(), 1);
  d.token_types[265] = d.token_types[266] = 3;
  d.bos_id = 265;
  d.eos_id = 266;
  return d;
}

TEST(Tokenizer, ByteLevelMergesByRank) {
  const tokenizer tok(synthetic_byte_level());
  EXPECT_EQ(tok.token_bytes(260), " the");
  EXPECT_EQ(tok.encode("the the", false), (std::vector<int32_t>{257, 260}));
  EXPECT_EQ(tok.encode("the", true), (std::vector<int32_t>{265, 257}));
  // Numbers in groups of three, merged within each group: "1234" -> "123" "4".
  EXPECT_EQ(tok.encode("1234", false), (std::vector<int32_t>{262, '4'}));
  // "a b" ranks before "b c".
  EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{263, 'c'}));
  // Special tokens in the text are matched whole, before BPE.
  EXPECT_EQ(tok.encode("the<|eot_id|>the", false), (std::vector<int32_t>{257, 266, 257}));
  EXPECT_EQ(tok.encode("the<|eot_id|>", false, /*parse_special=*/false).size(), 11u);
  EXPECT_TRUE(tok.is_control(266));
  EXPECT_TRUE(tok.is_eos(266));
}

TEST(Tokenizer, ByteLevelRankOrderDecides) {
  tokenizer_data d = synthetic_byte_level();
  std::swap(d.merges[7], d.merges[8]);  // now "b c" ranks before "a b"
  const tokenizer tok(d);
  EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{'a', 264}));
}

TEST(Tokenizer, ByteLevelRoundTripsAnyText) {
  const tokenizer tok(synthetic_byte_level());
  for (const std::string s : {"Hello, world! It's 2024.", "café naïve", "😀 emoji 👩‍👩‍👧", "日本語 中文",
                              "a\n\nb\r\n  c\t", "  the   the  "}) {
    EXPECT_EQ(tok.decode(tok.encode(s, true)), s) << s;
  }
  // Control tokens produce no text; no space is stripped in byte-level vocabularies.
  EXPECT_EQ(tok.decode({265, 259, 266}), " th");
}

// ---------------------------------------------------------------------------------------------
// Incremental detokenizer
// ---------------------------------------------------------------------------------------------

TEST(Tokenizer, IncrementalHoldsBackSplitCharacter) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer tok = stories_tokenizer();
  const std::vector<int32_t> ids = tok.encode("Once 😀!", true);
  // BOS, "▁Once", "▁", the emoji's four byte tokens, "!".
  ASSERT_EQ(ids, (std::vector<int32_t>{1, 403, 410, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80, 443}));
  incremental_detokenizer detok(tok);
  EXPECT_EQ(detok.feed(ids[0]), "");      // BOS
  EXPECT_EQ(detok.feed(ids[1]), "Once");  // the added leading space is stripped
  EXPECT_EQ(detok.feed(ids[2]), " ");
  EXPECT_EQ(detok.feed(ids[3]), "");
  EXPECT_EQ(detok.feed(ids[4]), "");
  EXPECT_EQ(detok.feed(ids[5]), "");
  EXPECT_EQ(detok.feed(ids[6]), "😀");
  EXPECT_EQ(detok.feed(ids[7]), "!");
  EXPECT_EQ(detok.feed(tok.eos()), "");
  EXPECT_EQ(detok.flush(), "");
}

TEST(Tokenizer, IncrementalReplacesBrokenBytes) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer tok = stories_tokenizer();
  const std::string fffd = "\xEF\xBF\xBD";
  incremental_detokenizer from_start(tok, /*at_sequence_start=*/true);
  EXPECT_EQ(from_start.feed(403), "Once");  // ids of a sequence without BOS lose the added space
  incremental_detokenizer detok(tok);
  EXPECT_EQ(detok.feed(403), " Once");    // a continuation keeps its space
  EXPECT_EQ(detok.feed(3 + 0x80), fffd);  // a stray continuation byte can never complete
  EXPECT_EQ(detok.feed(3 + 0xE6), "");
  EXPECT_EQ(detok.feed(3 + 0x97), "");
  EXPECT_EQ(detok.feed(411), fffd + "e");  // a lead cut short by a complete character
  EXPECT_EQ(detok.feed(3 + 0xF0), "");
  EXPECT_EQ(detok.flush(), fffd);  // held back until the end, then replaced
  EXPECT_EQ(detok.flush(), "");
}

TEST(Tokenizer, IncrementalEqualsDecodeOnReference) {
  TROUPE_REQUIRE_MODELS();
  const tokenizer tok = stories_tokenizer();
  const auto ref = read_reference(test::models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
  incremental_detokenizer detok(tok);
  std::string streamed;
  for (int32_t id : concat(ref.prompt_ids, ref.generated_ids)) streamed += detok.feed(id);
  streamed += detok.flush();
  EXPECT_EQ(streamed, ref.text);
}

TEST(Tokenizer, IncrementalByteLevelSplitsCharacterOverTokens) {
  const tokenizer tok(synthetic_byte_level());
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, one byte token each here
  const std::vector<int32_t> ids = tok.encode("the" + emoji, false);
  ASSERT_EQ(ids, (std::vector<int32_t>{257, 0xF0, 0x9F, 0x98, 0x80}));
  incremental_detokenizer detok(tok);
  EXPECT_EQ(detok.feed(ids[0]), "the");
  EXPECT_EQ(detok.feed(ids[1]), "");
  EXPECT_EQ(detok.feed(ids[2]), "");
  EXPECT_EQ(detok.feed(ids[3]), "");
  EXPECT_EQ(detok.feed(ids[4]), emoji);
  EXPECT_EQ(detok.feed(266), "");  // <|eot_id|>: control, no text
  EXPECT_EQ(detok.flush(), "");
}

TEST(Unicode, ValidPrefixReplacesIllFormedSequences) {
  const std::string fffd = "\xEF\xBF\xBD";
  size_t rest = 0;
  EXPECT_EQ(unicode::valid_prefix("ok \xC3\xA9", rest), "ok \xC3\xA9");
  EXPECT_EQ(rest, 5u);
  // A surrogate (ED A0 80) and an overlong form (C0 AF): one U+FFFD per maximal ill-formed part.
  EXPECT_EQ(unicode::valid_prefix("\xED\xA0\x80", rest), fffd + fffd + fffd);
  EXPECT_EQ(unicode::valid_prefix("\xC0\xAF", rest), fffd + fffd);
  // A lead whose sequence is cut short by the end is held back, not replaced.
  EXPECT_EQ(unicode::valid_prefix("a\xE6\x97", rest), "a");
  EXPECT_EQ(rest, 1u);
  // ... but one interrupted by another character is replaced.
  EXPECT_EQ(unicode::valid_prefix("\xE6\x97"
                                  "a",
                                  rest),
            fffd + "a");
}

TEST(Unicode, LetterAndNumberClasses) {
  for (char32_t c : {U'a', U'Z', U'é', U'ß', U'Ω', U'ж', U'日', U'テ', U'한', U'ا'})
    EXPECT_TRUE(unicode::is_letter(c)) << static_cast<uint32_t>(c);
  for (char32_t c : {U'1', U'²', U'½', U'٣', U'Ⅻ', U'０'})
    EXPECT_TRUE(unicode::is_number(c)) << static_cast<uint32_t>(c);
  for (char32_t c : {U' ', U'.', U'\u0301', U'×', U'😀', U'、', U'・'})
    EXPECT_FALSE(unicode::is_letter(c)) << static_cast<uint32_t>(c);
  for (char32_t c : {U' ', U'\n', U'\u00A0', U'\u3000'}) EXPECT_TRUE(unicode::is_space(c)) << static_cast<uint32_t>(c);
  EXPECT_FALSE(unicode::is_space(U'x'));
  // The GPT-2 mapping is a bijection of the 256 bytes: space is "Ġ" (U+0120).
  EXPECT_EQ(static_cast<uint32_t>(unicode::byte_to_code_point(' ')), 0x120u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(unicode::code_point_to_byte(unicode::byte_to_code_point(b)), b);
}

// ---------------------------------------------------------------------------------------------
// Loaders: malformed files give clear errors
// ---------------------------------------------------------------------------------------------

TEST(TokenizerFiles, Llama2cMalformed) {
  const scratch_dir dir;
  const auto missing = (dir.path / "nope.bin").string();
  EXPECT_NE(error_message([&] { load_llama2c_tokenizer(missing, 512); }).find("nope.bin"), std::string::npos);

  std::string truncated(4, '\0');
  truncated[0] = 7;  // max_token_length 7, then no tokens
  const auto t = dir.write("truncated.bin", truncated).string();
  const std::string msg = error_message([&] { load_llama2c_tokenizer(t, 512); });
  EXPECT_NE(msg.find("truncated.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("token 0"), std::string::npos) << msg;

  std::string bad_len(4, '\0');
  bad_len[0] = 7;
  bad_len += std::string(4, '\0') + std::string("\xFF\xFF\xFF\x7F", 4);  // score 0, len 2^31-1
  const auto b = dir.write("badlen.bin", bad_len).string();
  EXPECT_NE(error_message([&] { load_llama2c_tokenizer(b, 512); }).find("max_token_length"), std::string::npos);
}

TEST(TokenizerFiles, Llama2cReadsSmallFile) {
  const scratch_dir dir;
  std::string file(4, '\0');
  file[0] = 6;
  auto add = [&](float score, const std::string& piece) {
    const auto len = static_cast<int32_t>(piece.size());
    file.append(reinterpret_cast<const char*>(&score), 4);
    file.append(reinterpret_cast<const char*>(&len), 4);
    file += piece;
  };
  add(0, "<unk>");
  add(0, "\n<s>\n");
  add(0, "\n</s>\n");
  add(-1, " ");
  add(-2, "h");
  add(-3, "i");
  add(5, " hi");
  add(1, " h");  // BPE reaches " hi" only through " h" + "i"
  const auto path = dir.write("tok.bin", file).string();
  const tokenizer_data d = load_llama2c_tokenizer(path, 0);  // 0: every token in the file
  ASSERT_EQ(d.tokens.size(), 8u);
  EXPECT_EQ(d.tokens[1], "<s>");
  EXPECT_EQ(d.tokens[6], "\xE2\x96\x81hi");  // real spaces normalized to U+2581
  const tokenizer tok(d);
  EXPECT_EQ(tok.encode("hi hi", true), (std::vector<int32_t>{1, 6, 6}));
  EXPECT_THROW(load_llama2c_tokenizer(path, 9), error);  // asks for more tokens than present
}

TEST(TokenizerFiles, HfJsonMalformed) {
  const scratch_dir dir;
  auto message_for = [&](const std::string& json) {
    const auto p = dir.write("tokenizer.json", json).string();
    return error_message([&] { tokenizer(load_hf_tokenizer_json(p)); });
  };
  EXPECT_NE(message_for("{ not json").find("invalid JSON"), std::string::npos);
  EXPECT_NE(message_for(R"({"model": {"type": "BPE"}})").find("model.vocab"), std::string::npos);
  EXPECT_NE(message_for(R"({"model": {"type": "Unigram", "vocab": []}})").find("Unigram"), std::string::npos);
  EXPECT_NE(message_for(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}})").find("model.merges[0]"),
            std::string::npos);
  const std::string merge_msg =
      message_for(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", ["a", "c"]]}})");
  EXPECT_NE(merge_msg.find("tokenizer.json: model.merges[1]"), std::string::npos) << merge_msg;
  // The tokenizer itself rejects such data too, whatever loader built it.
  tokenizer_data bad;
  bad.tokens = {"a", "b"};
  bad.merges = {"a b"};
  EXPECT_NE(error_message([&] { tokenizer{bad}; }).find("merges[0]"), std::string::npos);
  EXPECT_NE(message_for(R"({"model": {"type": "BPE", "vocab": {"a": "zero"}}})").find("model.vocab[\"a\"]"),
            std::string::npos);
  dir.write("tokenizer_config.json", R"({"bos_token": "<nope>"})");
  const std::string msg = message_for(R"({"model": {"type": "BPE", "vocab": {"a": 0}}})");
  EXPECT_NE(msg.find("tokenizer_config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bos_token"), std::string::npos) << msg;
  EXPECT_NE(error_message([&] { load_hf_tokenizer_json((dir.path / "missing").string()); }).find("not found"),
            std::string::npos);
}

TEST(TokenizerFiles, HfJsonByteLevel) {
  const scratch_dir dir;
  // Byte alphabet "a", "b", "Ġ" (mapped space), merges in both forms, Llama 3 style files.
  dir.write("tokenizer.json", R"({
    "added_tokens": [{"id": 5, "content": "<|begin_of_text|>", "special": true},
                     {"id": 6, "content": "<|eot_id|>", "special": true}],
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": false}]},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>"}}]},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4},
              "merges": ["a b", ["Ġ", "ab"]]}})");
  dir.write("config.json", R"({"bos_token_id": 5, "eos_token_id": [6, 5]})");
  const tokenizer_data d = load_hf_tokenizer_json(dir.path.string());
  EXPECT_EQ(d.type, tokenizer_data::kind::byte_level_bpe);
  EXPECT_EQ(d.pre, "llama-bpe");
  EXPECT_EQ(d.bos_id, 5);
  EXPECT_EQ(d.eos_id, 6);
  EXPECT_EQ(d.extra_eos_ids, std::vector<int32_t>{5});
  EXPECT_TRUE(d.add_bos);
  EXPECT_EQ(d.merges, (std::vector<std::string>{"a b", "Ġ ab"}));
  EXPECT_EQ(d.token_types[6], 3);
  const tokenizer tok(d);
  EXPECT_EQ(tok.encode("ab ab<|eot_id|>", true), (std::vector<int32_t>{5, 3, 4, 6}));
  EXPECT_EQ(tok.decode({5, 3, 4, 6}), "ab ab");
}

}  // namespace
}  // namespace troupe
