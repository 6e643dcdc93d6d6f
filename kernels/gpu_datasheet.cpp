#include "kernels/gpu_datasheet.h"

namespace troupe::kern {

namespace {

// Vendors' datasheets. NVLink 4 (H100/H200 SXM) is 900 GB/s both ways, 450 per direction;
// NVLink 3 (A100 SXM) 600, 300 per direction; L4 has PCIe 4 x16 only, 32 GB/s.
constexpr gpu_datasheet k_gpus[] = {
    {"H100 PCIe", "H100 PCIe", "", 2000, 756, 0, 80, 10e-6},
    {"H100 NVL", "H100 NVL", "", 3900, 835, 0, 94, 10e-6},
    {"H100", "H100 SXM", "h100 h100-sxm", 3350, 989, 450, 80, 10e-6},  // "NVIDIA H100 80GB HBM3"
    {"H200 NVL", "H200 NVL", "", 4800, 835, 0, 141, 10e-6},
    {"H200", "H200 SXM", "h200 h200-sxm", 4800, 989, 450, 141, 10e-6},
    {"A100 80GB PCIe", "A100 80GB PCIe", "", 1935, 312, 0, 80, 10e-6},
    {"A100-SXM4-80GB", "A100 80GB SXM", "a100 a100-80gb", 2039, 312, 300, 80, 10e-6},
    {"A100-SXM4-40GB", "A100 40GB SXM", "", 1555, 312, 300, 40, 10e-6},
    {"A100-PCIE-40GB", "A100 40GB PCIe", "", 1555, 312, 0, 40, 10e-6},
    {"L40S", "L40S", "", 864, 362, 0, 48, 30e-6},
    {"L40", "L40", "", 864, 181, 0, 48, 30e-6},  // before "L4", which it contains
    {"L4", "L4", "l4", 300, 121, 32, 24, 30e-6},
};

bool has_word(std::string_view words, std::string_view w) {
  while (!words.empty()) {
    const size_t sp = words.find(' ');
    if (words.substr(0, sp) == w) return true;
    if (sp == std::string_view::npos) break;
    words.remove_prefix(sp + 1);
  }
  return false;
}

}  // namespace

std::span<const gpu_datasheet> gpu_datasheets() { return k_gpus; }

const gpu_datasheet* find_gpu_by_device_name(std::string_view device_name) {
  for (const gpu_datasheet& g : k_gpus)
    if (device_name.find(g.match) != std::string_view::npos) return &g;
  return nullptr;
}

const gpu_datasheet* find_gpu_by_preset(std::string_view preset) {
  for (const gpu_datasheet& g : k_gpus)
    if (!preset.empty() && has_word(g.presets, preset)) return &g;
  return nullptr;
}

}  // namespace troupe::kern
