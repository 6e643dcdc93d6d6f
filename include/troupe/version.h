#pragma once

namespace troupe {
const char* version_string();  // "0.1.0 (protocol 1)"
}
