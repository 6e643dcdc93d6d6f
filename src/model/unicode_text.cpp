// Unicode helpers for the tokenizers.
#include "src/model/unicode_text.h"

#include <algorithm>
#include <array>

namespace troupe::unicode {

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

int utf8_length(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 1;
}

namespace {

// Whether `c` may be byte k (1..3) of a sequence led by `lead` (Unicode Table 3-7: excludes
// overlong forms, surrogates and code points past U+10FFFF).
bool valid_continuation(unsigned char lead, int k, unsigned char c) {
  if (k == 1) {
    if (lead == 0xE0) return c >= 0xA0 && c <= 0xBF;
    if (lead == 0xED) return c >= 0x80 && c <= 0x9F;
    if (lead == 0xF0) return c >= 0x90 && c <= 0xBF;
    if (lead == 0xF4) return c >= 0x80 && c <= 0x8F;
  }
  return c >= 0x80 && c <= 0xBF;
}

// Bytes of a well-formed sequence at s[pos] (0 when ill-formed); `complete` false when the
// string ends inside a sequence that is well-formed so far.
size_t sequence_at(std::string_view s, size_t pos, bool& complete) {
  const auto lead = static_cast<unsigned char>(s[pos]);
  complete = true;
  if (lead < 0x80) return 1;
  const int need = utf8_length(lead);
  if (need == 1) return 0;
  int k = 1;
  while (k < need && pos + k < s.size() && valid_continuation(lead, k, static_cast<unsigned char>(s[pos + k]))) ++k;
  if (k == need) return need;
  if (pos + k == s.size()) complete = false;
  return 0;
}

const std::string k_replacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

char32_t next_code_point(std::string_view s, size_t& pos) {
  bool complete = true;
  const size_t n = sequence_at(s, pos, complete);
  if (n == 0) {
    ++pos;
    return 0xFFFD;
  }
  const auto b = [&](size_t i) { return static_cast<char32_t>(static_cast<unsigned char>(s[pos + i])); };
  char32_t cp = 0;
  switch (n) {
    case 1:
      cp = b(0);
      break;
    case 2:
      cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
      break;
    case 3:
      cp = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
      break;
    default:
      cp = ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
  pos += n;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string valid_prefix(std::string_view s, size_t& rest_begin) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    bool complete = true;
    const size_t n = sequence_at(s, pos, complete);
    if (!complete) break;  // may still be completed by the next bytes
    if (n == 0) {
      // One U+FFFD per maximal ill-formed subpart: skip the lead and its valid continuations.
      const auto lead = static_cast<unsigned char>(s[pos]);
      size_t k = 1;
      const int need = utf8_length(lead);
      while (need > 1 && k < static_cast<size_t>(need) && pos + k < s.size() &&
             valid_continuation(lead, static_cast<int>(k), static_cast<unsigned char>(s[pos + k])))
        ++k;
      out += k_replacement;
      pos += k;
    } else {
      out.append(s.substr(pos, n));
      pos += n;
    }
  }
  rest_begin = pos;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Classification: sorted, disjoint [first, last] ranges searched by binary search.
// ---------------------------------------------------------------------------------------------

namespace {

struct range {
  char32_t first, last;
};

#include "src/model/unicode_tables.inc"

template <size_t N>
bool in_ranges(const range (&table)[N], char32_t cp) {
  const range* end = table + N;
  const range* it = std::upper_bound(table, end, cp, [](char32_t c, const range& r) { return c < r.first; });
  return it != table && cp <= (it - 1)->last;
}

}  // namespace

bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z');
  return in_ranges(k_letters, cp);
}

bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(k_numbers, cp);
}

bool is_space(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte <-> unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// map in order onto U+0100.. so that every byte has a visible, non-space character.
// ---------------------------------------------------------------------------------------------

namespace {

constexpr bool self_mapped(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

struct byte_map {
  std::array<char32_t, 256> to_cp{};
  std::array<int16_t, 256 + 68> to_byte{};  // indexed by code point < 324
  constexpr byte_map() {
    unsigned next = 256;
    for (auto& v : to_byte) v = -1;
    for (unsigned b = 0; b < 256; ++b) {
      to_cp[b] = self_mapped(b) ? b : next++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

constexpr byte_map k_byte_map;

}  // namespace

char32_t byte_to_code_point(unsigned char b) { return k_byte_map.to_cp[b]; }

int code_point_to_byte(char32_t cp) { return cp < k_byte_map.to_byte.size() ? k_byte_map.to_byte[cp] : -1; }

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers: each alternative of the regex tried in order at the current code point,
// with the regex's greedy and backtracking outcome worked out per rule.
// ---------------------------------------------------------------------------------------------

namespace {

struct code_points {
  std::vector<char32_t> cp;
  std::vector<size_t> offset;  // byte offset of each code point, plus the end

  bool letter(size_t i) const { return i < cp.size() && is_letter(cp[i]); }
  bool number(size_t i) const { return i < cp.size() && is_number(cp[i]); }
  bool space(size_t i) const { return i < cp.size() && is_space(cp[i]); }
  bool newline(size_t i) const { return i < cp.size() && (cp[i] == '\r' || cp[i] == '\n'); }
  bool other(size_t i) const { return i < cp.size() && !is_space(cp[i]) && !is_letter(cp[i]) && !is_number(cp[i]); }
};

char32_t ascii_lower(char32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// 's 't 're 've 'm 'll 'd at i; returns the end or i when none.
size_t match_contraction(const code_points& t, size_t i, bool ignore_case) {
  const size_t n = t.cp.size();
  if (t.cp[i] != '\'' || i + 1 >= n) return i;
  auto at = [&](size_t j) { return ignore_case ? ascii_lower(t.cp[j]) : t.cp[j]; };
  const char32_t a = at(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if (i + 2 < n) {
    const char32_t b = at(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  }
  return i;
}

// \s*[\r\n]+ | \s+(?!\S) | \s+ at a whitespace code point i (with_newline_rule: llama3 only).
size_t match_whitespace(const code_points& t, size_t i, bool with_newline_rule) {
  size_t end = i;
  size_t last_newline = SIZE_MAX;
  while (t.space(end)) {
    if (t.newline(end)) last_newline = end;
    ++end;
  }
  // \s*[\r\n]+: \s* backs off to the last line break of the run.
  if (with_newline_rule && last_newline != SIZE_MAX) return last_newline + 1;
  // \s+(?!\S): leave the last space to the word that follows.
  if (end == t.cp.size() || end - i < 2) return end;
  return end - 1;
}

// Llama 3's pattern; Qwen2's is the same but for \p{N} (one digit a piece): max_digits 3 or 1.
size_t match_llama3(const code_points& t, size_t i, size_t max_digits) {
  const char32_t c = t.cp[i];
  if (size_t e = match_contraction(t, i, true); e != i) return e;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t j = i;
  if (!t.letter(j) && c != '\r' && c != '\n' && !t.number(j) && t.letter(j + 1)) ++j;
  if (t.letter(j)) {
    while (t.letter(j)) ++j;
    return j;
  }
  // \p{N}{1,3} (Qwen2: \p{N})
  if (t.number(i)) {
    j = i + 1;
    while (j < i + max_digits && t.number(j)) ++j;
    return j;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  j = (c == ' ' && t.other(i + 1)) ? i + 1 : i;
  if (t.other(j)) {
    while (t.other(j)) ++j;
    while (t.newline(j)) ++j;
    return j;
  }
  if (t.space(i)) return match_whitespace(t, i, true);
  return i + 1;
}

size_t match_gpt2(const code_points& t, size_t i) {
  if (size_t e = match_contraction(t, i, false); e != i) return e;
  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
  const size_t j = t.cp[i] == ' ' ? i + 1 : i;
  for (auto cls : {&code_points::letter, &code_points::number, &code_points::other}) {
    if ((t.*cls)(j)) {
      size_t e = j;
      while ((t.*cls)(e)) ++e;
      return e;
    }
  }
  if (t.space(i)) return match_whitespace(t, i, false);
  return i + 1;
}

}  // namespace

std::vector<std::string_view> pre_tokenize(std::string_view s, pre_tokenizer kind) {
  code_points t;
  t.cp.reserve(s.size());
  t.offset.reserve(s.size() + 1);
  for (size_t pos = 0; pos < s.size();) {
    t.offset.push_back(pos);
    t.cp.push_back(next_code_point(s, pos));
  }
  t.offset.push_back(s.size());

  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < t.cp.size();) {
    const size_t e =
        kind == pre_tokenizer::gpt2 ? match_gpt2(t, i) : match_llama3(t, i, kind == pre_tokenizer::qwen2 ? 1 : 3);
    pieces.push_back(s.substr(t.offset[i], t.offset[e] - t.offset[i]));
    i = e;
  }
  return pieces;
}

// ---------------------------------------------------------------------------------------------
// String helpers shared by the tokenizer and its loaders
// ---------------------------------------------------------------------------------------------

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

int byte_piece_value(std::string_view s) {
  if (s.size() != 6 || s.substr(0, 3) != "<0x" || s[5] != '>') return -1;
  const int hi = hex_value(s[3]), lo = hex_value(s[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, from.size(), from) == 0) {
      out += to;
      i += from.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

}  // namespace troupe::unicode
