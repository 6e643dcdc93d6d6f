// Tokenizers: SentencePiece-style BPE (llama.cpp / SentencePiece merge semantics, byte
// fallback) and byte-level BPE (GPT-2 byte mapping, Llama 3 pre-tokenizer), over one BPE
// engine; and the incremental detokenizer for streaming.
#include "src/model/tokenizer.h"

#include <cstdio>

#include <algorithm>
#include <queue>

#include "src/model/unicode_text.h"
#include "troupe/error.h"

namespace troupe {

namespace {

const std::string k_space_marker = "\xE2\x96\x81";  // U+2581

// GGUF token types.
constexpr int32_t k_type_control = 3;
constexpr int32_t k_type_user_defined = 4;
constexpr int32_t k_type_byte = 6;

[[noreturn]] void fail(const std::string& field, const std::string& what) {
  throw error(error_kind::failed, "tokenizer: " + field + ": " + what, field);
}

uint64_t pair_key(uint32_t left, uint32_t right) { return (static_cast<uint64_t>(left) << 32) | right; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction: lookup tables from the loader's data.
// ---------------------------------------------------------------------------------------------

tokenizer::tokenizer(tokenizer_data data) : data_(std::move(data)) {
  const auto n = static_cast<int32_t>(data_.tokens.size());
  if (n == 0) fail("tokens", "expected a non-empty vocabulary");
  if (!data_.scores.empty() && data_.scores.size() != data_.tokens.size())
    fail("scores",
         "expected one score per token (" + std::to_string(n) + "), got " + std::to_string(data_.scores.size()));
  if (!data_.token_types.empty() && data_.token_types.size() != data_.tokens.size())
    fail("token_types",
         "expected one type per token (" + std::to_string(n) + "), got " + std::to_string(data_.token_types.size()));
  auto check_id = [n](const char* field, int32_t id) {
    if (id < -1 || id >= n)
      fail(field, "id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(n) + " tokens");
  };
  check_id("bos_id", data_.bos_id);
  check_id("eos_id", data_.eos_id);
  check_id("unk_id", data_.unk_id);
  check_id("eot_id", data_.eot_id);
  for (int32_t id : data_.extra_eos_ids) check_id("extra_eos_ids", id);

  const bool byte_level = data_.type == tokenizer_data::kind::byte_level_bpe;
  auto type_of = [&](int32_t id) { return data_.token_types.empty() ? 1 : data_.token_types[id]; };

  piece_to_id_.reserve(data_.tokens.size());
  control_.assign(data_.tokens.size(), 0);
  bytes_.resize(data_.tokens.size());
  byte_token_.fill(-1);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& text = data_.tokens[id];
    piece_to_id_.try_emplace(text, id);
    const int32_t type = type_of(id);
    control_[id] = type == k_type_control || id == data_.bos_id || is_eos(id);
    if (type == k_type_control || type == k_type_user_defined) {
      bytes_[id] = text;
    } else if (byte_level) {
      for (size_t pos = 0; pos < text.size();) {
        const char32_t cp = unicode::next_code_point(text, pos);
        const int b = unicode::code_point_to_byte(cp);
        if (b >= 0) {
          bytes_[id] += static_cast<char>(b);
        } else {
          unicode::append_utf8(bytes_[id], cp);
        }
      }
    } else if (const int b = unicode::byte_piece_value(text);
               b >= 0 && (type == k_type_byte || data_.token_types.empty())) {
      bytes_[id] = std::string(1, static_cast<char>(b));
      if (byte_token_[b] < 0) byte_token_[b] = id;
    } else {
      bytes_[id] = unicode::replace_all(text, k_space_marker, " ");
    }
  }
  if (byte_level) {
    for (int b = 0; b < 256; ++b) {
      std::string mapped;
      unicode::append_utf8(mapped, unicode::byte_to_code_point(static_cast<unsigned char>(b)));
      byte_token_[b] = find_piece(mapped);
    }
  }

  // Tokens written in the text that stand for themselves: control and user-defined tokens,
  // and "<|...|>" added tokens of vocabularies without types.
  for (int32_t id = 0; id < n; ++id) {
    const std::string& text = data_.tokens[id];
    const int32_t type = type_of(id);
    const bool bracketed = text.size() > 4 && text.starts_with("<|") && text.ends_with("|>");
    if (!text.empty() && (control_[id] || type == k_type_user_defined || bracketed))
      specials_by_first_byte_[static_cast<unsigned char>(text[0])].push_back(id);
  }
  for (auto& ids : specials_by_first_byte_)
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int32_t a, int32_t b) { return data_.tokens[a].size() > data_.tokens[b].size(); });

  // Ranked merges "a b": a token may itself hold a space, so take the split whose two sides
  // and concatenation are all in the vocabulary.
  use_merges_ = !data_.merges.empty();
  if (byte_level && !use_merges_) fail("merges", "byte-level BPE needs its ranked merges, found none");
  merges_.reserve(data_.merges.size());
  for (size_t rank = 0; rank < data_.merges.size(); ++rank) {
    const std::string& m = data_.merges[rank];
    bool found = false;
    for (size_t sp = m.find(' '); sp != std::string::npos && !found; sp = m.find(' ', sp + 1)) {
      const int32_t a = find_piece(std::string_view(m).substr(0, sp));
      const int32_t b = find_piece(std::string_view(m).substr(sp + 1));
      if (a < 0 || b < 0) continue;
      const int32_t ab = find_piece(m.substr(0, sp) + m.substr(sp + 1));
      if (ab < 0) continue;
      merges_.try_emplace(pair_key(static_cast<uint32_t>(a), static_cast<uint32_t>(b)),
                          merge_rule{static_cast<int32_t>(rank), ab});
      found = true;
    }
    if (!found)
      fail("merges[" + std::to_string(rank) + "]",
           "'" + m + "' is not two vocabulary tokens whose concatenation is a vocabulary token");
  }

  // Pairs of characters adjacent inside some token: only there can a merge join two chunks.
  if (!byte_level) {
    for (const std::string& text : data_.tokens) {
      size_t pos = 0;
      char32_t prev = text.empty() ? 0 : unicode::next_code_point(text, pos);
      while (pos < text.size()) {
        const char32_t cp = unicode::next_code_point(text, pos);
        adjacent_pairs_.insert(pair_key(prev, cp));
        prev = cp;
      }
    }
  }

  const std::string& pre = data_.pre;
  ignore_merges_ = byte_level && (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3");
  if (pre == "gpt2" || pre == "gpt-2") {
    pattern_ = unicode::pre_tokenizer::gpt2;
  } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
    pattern_ = unicode::pre_tokenizer::qwen2;
  } else {
    pattern_ = unicode::pre_tokenizer::llama3;
  }
}

int32_t tokenizer::find_piece(std::string_view piece) const {
  const auto it = piece_to_id_.find(piece);
  return it == piece_to_id_.end() ? -1 : it->second;
}

bool tokenizer::is_eos(int32_t id) const {
  return id >= 0 &&
         (id == data_.eos_id || id == data_.eot_id ||
          std::find(data_.extra_eos_ids.begin(), data_.extra_eos_ids.end(), id) != data_.extra_eos_ids.end());
}

bool tokenizer::is_control(int32_t id) const { return id >= 0 && id < vocab_size() && control_[id]; }

// ---------------------------------------------------------------------------------------------
// Encoding: special tokens first, then each text fragment by the vocabulary's algorithm.
// ---------------------------------------------------------------------------------------------

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && data_.bos_id >= 0) out.push_back(data_.bos_id);
  // Text between special tokens is encoded fragment by fragment; SentencePiece prefixes each
  // with a space, as llama.cpp does (a fragment is always at the start or after a special).
  size_t start = 0;
  for (size_t i = 0; parse_special && i < text.size();) {
    int32_t matched = -1;
    for (int32_t id : specials_by_first_byte_[static_cast<unsigned char>(text[i])]) {
      if (text.substr(i).starts_with(data_.tokens[id])) {
        matched = id;
        break;
      }
    }
    if (matched < 0) {
      ++i;
      continue;
    }
    if (i > start) encode_text(text.substr(start, i - start), out);
    out.push_back(matched);
    i += data_.tokens[matched].size();
    start = i;
  }
  if (start < text.size()) encode_text(text.substr(start), out);
  return out;
}

void tokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  if (data_.type == tokenizer_data::kind::byte_level_bpe) {
    encode_byte_level(text, out);
  } else {
    encode_sentencepiece(text, data_.add_space_prefix, out);
  }
}

// A symbol of the BPE work string: a byte range and the token it is (-1: none yet), linked
// to its neighbours. Merging grows the left symbol and empties the right one.
struct tokenizer::symbol {
  uint32_t begin = 0;
  uint32_t len = 0;
  int32_t id = -1;
  int32_t prev = -1;
  int32_t next = -1;
};

void tokenizer::encode_sentencepiece(std::string_view text, bool prefix_space, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string work = prefix_space ? k_space_marker : std::string();
  work += unicode::replace_all(text, " ", k_space_marker);

  // The work string is cut where no merge can ever cross: between two characters that are
  // adjacent in no vocabulary token. Each chunk then merges alone, with the same result as the
  // whole string (merges are local) and a small queue.
  std::vector<symbol> symbols;
  char32_t prev_cp = 0;
  bool prev_whole = false;  // the previous character entered as one symbol
  for (size_t pos = 0; pos < work.size();) {
    const size_t begin = pos;
    const char32_t cp = unicode::next_code_point(work, pos);
    const size_t len = pos - begin;
    const int32_t id = find_piece(std::string_view(work).substr(begin, len));
    bool bytes_known = true;
    for (size_t k = begin; k < pos; ++k)
      bytes_known = bytes_known && byte_token_[static_cast<unsigned char>(work[k])] >= 0;
    const bool whole = !(id < 0 && use_merges_ && bytes_known);
    if (!symbols.empty() && whole && prev_whole && !adjacent_pairs_.contains(pair_key(prev_cp, cp))) {
      merge_symbols(work, symbols, out);
      symbols.clear();
    }
    if (whole) {
      symbols.push_back({static_cast<uint32_t>(begin), static_cast<uint32_t>(len), id});
    } else {
      // Ranked merges work on ids: a character outside the vocabulary enters as its bytes.
      for (size_t k = begin; k < pos; ++k)
        symbols.push_back({static_cast<uint32_t>(k), 1, byte_token_[static_cast<unsigned char>(work[k])]});
    }
    prev_cp = cp;
    prev_whole = whole;
  }
  merge_symbols(work, symbols, out);
}

void tokenizer::encode_byte_level(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<symbol> symbols;
  std::string mapped;
  for (std::string_view word : unicode::pre_tokenize(text, pattern_)) {
    if (ignore_merges_) {
      mapped.clear();
      for (char c : word) unicode::append_utf8(mapped, unicode::byte_to_code_point(static_cast<unsigned char>(c)));
      if (const int32_t id = find_piece(mapped); id >= 0) {
        out.push_back(id);
        continue;
      }
    }
    symbols.clear();
    for (size_t i = 0; i < word.size(); ++i)
      symbols.push_back({static_cast<uint32_t>(i), 1, byte_token_[static_cast<unsigned char>(word[i])]});
    merge_symbols(word, symbols, out);
  }
}

// Repeatedly merges the best adjacent pair: by the score of the merged piece (SentencePiece:
// higher first) or by merge rank (lower first); ties go to the leftmost pair. A priority
// queue holds every candidate pair; one made stale by an earlier merge is recognised by its
// byte length no longer matching and skipped (as llama.cpp does).
void tokenizer::merge_symbols(std::string_view work, std::vector<symbol>& symbols, std::vector<int32_t>& out) const {
  struct candidate {
    double priority;
    int32_t left, right;
    uint32_t len;
    int32_t result;
  };
  auto worse = [](const candidate& a, const candidate& b) {
    return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
  };
  std::priority_queue<candidate, std::vector<candidate>, decltype(worse)> queue(worse);

  const auto count = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < count; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < count ? i + 1 : -1;
  }
  auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const symbol& a = symbols[l];
    const symbol& b = symbols[r];
    if (use_merges_) {
      if (a.id < 0 || b.id < 0) return;
      const auto it = merges_.find(pair_key(static_cast<uint32_t>(a.id), static_cast<uint32_t>(b.id)));
      if (it == merges_.end()) return;
      queue.push({-static_cast<double>(it->second.rank), l, r, a.len + b.len, it->second.result});
    } else {
      const int32_t id = find_piece(work.substr(a.begin, a.len + b.len));
      if (id < 0) return;
      queue.push({data_.scores.empty() ? 0.0 : data_.scores[id], l, r, a.len + b.len, id});
    }
  };
  for (int32_t i = 0; i + 1 < count; ++i) try_pair(i, i + 1);

  while (!queue.empty()) {
    const candidate c = queue.top();
    queue.pop();
    symbol& left = symbols[c.left];
    symbol& right = symbols[c.right];
    if (left.len == 0 || right.len == 0 || left.next != c.right || left.len + right.len != c.len) continue;
    left.len += right.len;
    left.id = c.result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.len = 0;
    try_pair(left.prev, c.left);
    try_pair(c.left, left.next);
  }

  for (int32_t i = count > 0 ? 0 : -1; i >= 0; i = symbols[i].next) {
    const symbol& s = symbols[i];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    // Byte fallback: a piece outside the vocabulary as its byte tokens, else one unknown.
    bool all_bytes = true;
    for (uint32_t k = 0; k < s.len; ++k)
      all_bytes = all_bytes && byte_token_[static_cast<unsigned char>(work[s.begin + k])] >= 0;
    if (all_bytes) {
      for (uint32_t k = 0; k < s.len; ++k) out.push_back(byte_token_[static_cast<unsigned char>(work[s.begin + k])]);
    } else if (data_.unk_id >= 0) {
      out.push_back(data_.unk_id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

int32_t tokenizer::checked_id(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw error(error_kind::failed,
                "tokenizer: token id " + std::to_string(id) + " outside the vocabulary of " +
                    std::to_string(vocab_size()) + " tokens",
                "token");
  return id;
}

std::string tokenizer::token_bytes(int32_t id) const { return bytes_[checked_id(id)]; }

std::string tokenizer::decode(const std::vector<int32_t>& ids, bool skip_control) const {
  std::string out;
  bool at_start = true;
  for (int32_t id : ids) {
    const std::string& bytes = bytes_[checked_id(id)];
    if (is_control(id)) {
      if (id == data_.bos_id) at_start = true;
      if (!skip_control) out += bytes;
      continue;
    }
    const bool strip = at_start && strips_leading_space() && !bytes.empty() && bytes[0] == ' ';
    out.append(bytes, strip ? 1 : 0);
    at_start = false;
  }
  return out;
}

std::string incremental_detokenizer::feed(int32_t id) {
  std::string bytes = tok_->token_bytes(id);
  if (tok_->is_control(id)) {
    if (id == tok_->bos()) at_start_ = true;
    return {};
  }
  if (at_start_ && tok_->strips_leading_space() && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);
  at_start_ = false;
  pending_ += bytes;
  size_t rest = 0;
  std::string out = unicode::valid_prefix(pending_, rest);
  pending_.erase(0, rest);
  return out;
}

std::string incremental_detokenizer::flush() {
  size_t rest = 0;
  std::string out = unicode::valid_prefix(pending_, rest);
  if (rest < pending_.size()) out += "\xEF\xBF\xBD";  // a character cut short
  pending_.clear();
  return out;
}

tokenizer_data byte_vocabulary() {
  tokenizer_data d;
  d.tokens = {"<unk>", "<s>", "</s>"};
  d.token_types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    d.tokens.push_back(name);
    d.token_types.push_back(6);
  }
  d.scores.assign(d.tokens.size(), 0.0f);
  d.unk_id = 0;
  d.bos_id = 1;
  d.eos_id = 2;
  return d;
}

}  // namespace troupe
