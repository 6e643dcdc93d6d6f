#include "src/model/text_stream.h"

#include <algorithm>

namespace troupe {

namespace {

bool is_continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

text_stream::text_stream(const tokenizer& tok, std::vector<std::string> stop_strings)
    : detok_(tok), stops_(std::move(stop_strings)) {
  // An empty one would match at once; validate() rejects them, this keeps feed() safe.
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
  for (const auto& s : stops_) hold_ = std::max(hold_, s.size() - 1);
}

bool text_stream::feed(int32_t id) {
  if (stopped_ || finished_) return stopped_;
  const size_t before = text_.size();
  text_ += detok_.feed(id);
  if (text_.size() == before) return false;
  // The earliest match wins; a new one ends in the new bytes, so it starts at most
  // stop.size() - 1 bytes before them (earlier ones were ruled out by previous feeds).
  size_t cut = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t from = before >= stop.size() - 1 ? before - (stop.size() - 1) : 0;
    cut = std::min(cut, text_.find(stop, from));
  }
  if (cut == std::string::npos) return false;
  text_.resize(cut);
  stopped_ = true;
  return true;
}

void text_stream::finish() {
  if (finished_) return;
  if (!stopped_) text_ += detok_.flush();
  finished_ = true;
}

std::string_view text_stream::take() {
  size_t safe = text_.size();
  if (!stopped_ && !finished_ && hold_ > 0) {
    safe = text_.size() >= hold_ ? text_.size() - hold_ : 0;
    while (safe > taken_ && safe < text_.size() && is_continuation_byte(text_[safe])) --safe;
  }
  if (safe <= taken_) return {};
  const std::string_view out = std::string_view(text_).substr(taken_, safe - taken_);
  taken_ = safe;
  return out;
}

}  // namespace troupe
