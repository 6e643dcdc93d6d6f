// The one place a kernel registry is built (`troupe generate`, serve, worker, kernels, bench
// and the benchmark programs): the reference of every op, then the backends asked for, then
// plugins, then the per-op choices. main() still owns the registry; nothing registers
// itself.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "troupe/kernel_registry.h"

namespace troupe::kern {

struct kernel_registry_options {
  bool cpu = true;                   // the SIMD CPU variants this machine runs (the best becomes the default)
  bool cuda = false;                 // the built-in CUDA variants; ignored in a build without CUDA
  std::vector<std::string> plugins;  // shared libraries exporting troupe_kernel_plugin_v1, in order
  std::vector<std::string> kernels;  // "OP=VARIANT" choices, applied after every variant is in
};

// Throws troupe::error(failed) naming the flag's text: a plugin that does not load (with the
// loader's reason), an unknown op (listing the known ones) or an unknown variant (listing
// the op's variants).
std::unique_ptr<kernel_registry> make_kernel_registry(const kernel_registry_options& o);

// "--kernel OP=VARIANT": chooses a registered variant for one op (throws as above).
void select_kernel(kernel_registry& registry, const std::string& spec);

}  // namespace troupe::kern
