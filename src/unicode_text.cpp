// Unicode helpers for the tokenizers. See unicode_text.h for the approximation of \p{L}/\p{N}.
#include "src/unicode_text.h"

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

constexpr range k_letters[] = {
    {0x41, 0x5A},       {0x61, 0x7A},       {0xAA, 0xAA},       {0xB5, 0xB5},       {0xBA, 0xBA},     {0xC0, 0xD6},
    {0xD8, 0xF6},       {0xF8, 0x2C1},      {0x2C6, 0x2D1},     {0x2E0, 0x2E4},     {0x2EC, 0x2EC},   {0x2EE, 0x2EE},
    {0x370, 0x374},     {0x376, 0x377},     {0x37A, 0x37D},     {0x37F, 0x37F},     {0x386, 0x386},   {0x388, 0x38A},
    {0x38C, 0x38C},     {0x38E, 0x3A1},     {0x3A3, 0x3F5},     {0x3F7, 0x481},     {0x48A, 0x52F},   {0x531, 0x556},
    {0x559, 0x559},     {0x560, 0x588},     {0x5D0, 0x5EA},     {0x5EF, 0x5F2},     {0x620, 0x64A},   {0x66E, 0x66F},
    {0x671, 0x6D3},     {0x6D5, 0x6D5},     {0x6E5, 0x6E6},     {0x6EE, 0x6EF},     {0x6FA, 0x6FC},   {0x6FF, 0x6FF},
    {0x904, 0x939},     {0x93D, 0x93D},     {0x950, 0x950},     {0x958, 0x961},     {0x971, 0x980},   {0xE01, 0xE30},
    {0xE32, 0xE33},     {0xE40, 0xE46},     {0x1100, 0x11FF},   {0x1E00, 0x1F15},   {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F59},   {0x1F5B, 0x1F5B},   {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D},
    {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},   {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},   {0x2071, 0x2071}, {0x207F, 0x207F},
    {0x2090, 0x209C},   {0x2C60, 0x2C7F},   {0x3005, 0x3006},   {0x3031, 0x3035},   {0x303B, 0x303C}, {0x3041, 0x3096},
    {0x309D, 0x309F},   {0x30A1, 0x30FA},   {0x30FC, 0x30FF},   {0x3105, 0x312F},   {0x3131, 0x318E}, {0x31A0, 0x31BF},
    {0x31F0, 0x31FF},   {0x3400, 0x4DBF},   {0x4E00, 0x9FFF},   {0xA000, 0xA48C},   {0xA722, 0xA788}, {0xA78B, 0xA7CA},
    {0xAC00, 0xD7A3},   {0xF900, 0xFA6D},   {0xFA70, 0xFAD9},   {0xFF21, 0xFF3A},   {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE},
    {0x20000, 0x2A6DF}, {0x2A700, 0x2EBE0}, {0x2F800, 0x2FA1D}, {0x30000, 0x3134A},
};

constexpr range k_numbers[] = {
    {0x30, 0x39},     {0xB2, 0xB3},     {0xB9, 0xB9},     {0xBC, 0xBE},     {0x660, 0x669},
    {0x6F0, 0x6F9},   {0x966, 0x96F},   {0xE50, 0xE59},   {0x2070, 0x2070}, {0x2074, 0x2079},
    {0x2080, 0x2089}, {0x2150, 0x2189}, {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793},
    {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229},
    {0x3248, 0x324F}, {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xFF10, 0xFF19},
};

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

size_t match_llama3(const code_points& t, size_t i) {
  const char32_t c = t.cp[i];
  if (size_t e = match_contraction(t, i, true); e != i) return e;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t j = i;
  if (!t.letter(j) && c != '\r' && c != '\n' && !t.number(j) && t.letter(j + 1)) ++j;
  if (t.letter(j)) {
    while (t.letter(j)) ++j;
    return j;
  }
  // \p{N}{1,3}
  if (t.number(i)) {
    j = i + 1;
    while (j < i + 3 && t.number(j)) ++j;
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
    const size_t e = kind == pre_tokenizer::llama3 ? match_llama3(t, i) : match_gpt2(t, i);
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
