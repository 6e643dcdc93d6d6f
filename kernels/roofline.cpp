#include "kernels/roofline.h"

#include <cstdio>

namespace troupe::kern {

namespace {

std::string fixed0(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

struct published {
  std::string_view match;  // a substring of the device name; the first match wins
  std::string_view model;  // the product the figures are published for
  double gb_s, tflop_s;
};

// Datasheet peaks (dense FP16 tensor core, no sparsity). Order matters: the more specific
// names first ("H100 PCIe" before "H100", "A100 80GB PCIe" before "A100").
constexpr published k_table[] = {
    {"H200 NVL", "H200 NVL", 4800, 835},
    {"H200", "H200 SXM", 4800, 989},
    {"H100 PCIe", "H100 PCIe", 2000, 756},
    {"H100 NVL", "H100 NVL", 3900, 835},
    {"H100", "H100 SXM", 3350, 989},  // "NVIDIA H100 80GB HBM3"
    {"A100 80GB PCIe", "A100 80GB PCIe", 1935, 312},
    {"A100-SXM4-80GB", "A100 80GB SXM", 2039, 312},
    {"A100-SXM4-40GB", "A100 40GB SXM", 1555, 312},
    {"A100-PCIE-40GB", "A100 40GB PCIe", 1555, 312},
    {"L40S", "L40S", 864, 362},
    {"L40", "L40", 864, 181},  // before "L4", which it contains
    {"L4", "L4", 300, 121},
};

}  // namespace

std::optional<roofline> published_roofline(std::string_view device_name) {
  for (const published& p : k_table)
    if (device_name.find(p.match) != std::string_view::npos)
      return roofline{p.gb_s, p.tflop_s, "published figures for " + std::string(p.model)};
  return std::nullopt;
}

roofline derived_roofline(int mem_clock_khz, int bus_width_bits, int sm_count, int sm_clock_khz, int cc_major,
                          int cc_minor) {
  roofline r;
  r.mem_gb_s = 2.0 * mem_clock_khz * 1e3 * (bus_width_bits / 8.0) / 1e9;
  const int cc = cc_major * 10 + cc_minor;
  const double flop_per_clock = cc == 80 ? 2048 : cc == 90 ? 4096 : cc == 100 ? 8192 : cc >= 70 && cc < 90 ? 1024 : 0;
  r.fp16_tflop_s = sm_count * (sm_clock_khz * 1e3) * flop_per_clock / 1e12;
  r.source = "derived from the runtime's attributes (memory clock x bus width; SMs x clock x " +
             (flop_per_clock > 0 ? fixed0(flop_per_clock) : std::string("unknown")) + " FP16 FLOP/clock/SM for sm_" +
             std::to_string(cc) + ")";
  return r;
}

std::string describe(const roofline& r) {
  std::string known;
  if (r.mem_gb_s > 0) known = fixed0(r.mem_gb_s) + " GB/s";
  if (r.fp16_tflop_s > 0) known += (known.empty() ? "" : ", ") + fixed0(r.fp16_tflop_s) + " TFLOP/s dense FP16";
  return (known.empty() ? std::string("no figures") : known) + " (" + r.source + ")";
}

}  // namespace troupe::kern
