#include "troupe/version.h"

#include <string>

#include "schema/troupe.capnp.h"

namespace troupe {

const char* version_string() {
  static const std::string s =
      std::string(TROUPE_VERSION) + " (protocol " + std::to_string(wire::PROTOCOL_VERSION) + ")";
  return s.c_str();
}

}  // namespace troupe
