// Errors by kind, as in Cap'n Proto's KJ: the four kinds that cross the wire.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

namespace troupe {

enum class error_kind : unsigned char {
  failed,         // this job is wrong: bad input, unknown model
  overloaded,     // retry later
  disconnected,   // a peer went away
  unimplemented,  // asked for something not built
};

constexpr std::string_view to_string(error_kind k) {
  switch (k) {
    case error_kind::failed:
      return "failed";
    case error_kind::overloaded:
      return "overloaded";
    case error_kind::disconnected:
      return "disconnected";
    case error_kind::unimplemented:
      return "unimplemented";
  }
  return "unknown";
}

// Thrown for logistics (a file that cannot be loaded, a malformed frame); expected
// outcomes such as a full queue are return values, not exceptions.
class error : public std::runtime_error {
 public:
  error(error_kind kind, std::string message, std::string field = {})
      : std::runtime_error(std::move(message)), kind_(kind), field_(std::move(field)) {}
  error_kind kind() const noexcept { return kind_; }
  // The offending input field ("temperature", "tensor blk.0.attn_q.weight"), or empty.
  const std::string& field() const noexcept { return field_; }

 private:
  error_kind kind_;
  std::string field_;
};

}  // namespace troupe
