// Unicode helpers for the tokenizers: UTF-8 decoding, a compact letter/number/space
// classification, GPT-2's byte-to-unicode mapping and the byte-level BPE pre-tokenizers.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::unicode {

// Length in bytes of the UTF-8 sequence starting with lead byte `b` (1 for an invalid lead,
// so a scan always advances).
int utf8_length(unsigned char b);

// Decodes the code point at s[pos] and advances pos; an invalid or truncated sequence yields
// one byte as U+FFFD.
char32_t next_code_point(std::string_view s, size_t& pos);

void append_utf8(std::string& out, char32_t cp);

// Splits `s` into complete valid UTF-8 characters: returns the bytes that form complete
// characters (an invalid sequence becomes U+FFFD) and leaves in `rest_begin` where an
// incomplete trailing sequence, which more bytes could still complete, begins.
std::string valid_prefix(std::string_view s, size_t& rest_begin);

// \p{L}, \p{N} and \s (White_Space). \p{L}/\p{N} come from tables generated from the Python
// `regex` module (src/model/unicode_tables.py): exact for every script as of that module's Unicode
// version; code points assigned later count as neither (they then pre-tokenize like
// punctuation, which changes how a rare word is split, never the bytes).
bool is_letter(char32_t cp);
bool is_number(char32_t cp);
bool is_space(char32_t cp);

// GPT-2's reversible mapping of the 256 byte values onto printable code points.
char32_t byte_to_code_point(unsigned char b);
// The byte a mapped code point stands for, or -1 when `cp` is not in the mapping.
int code_point_to_byte(char32_t cp);

enum class pre_tokenizer { llama3, qwen2, gpt2 };

// Splits text into the pieces the pre-tokenizer regex would match, as byte ranges of `s`
// (pieces are contiguous and cover `s`). Implemented by hand over code points:
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:  llama3's with \p{N} for \p{N}{1,3} (digits one by one)
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::vector<std::string_view> pre_tokenize(std::string_view s, pre_tokenizer kind);

// "<0x0A>" (a SentencePiece byte-fallback token) -> 10, else -1.
int byte_piece_value(std::string_view s);

std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

}  // namespace troupe::unicode
