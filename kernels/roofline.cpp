#include "kernels/roofline.h"

#include <cstdio>

#include "kernels/gpu_datasheet.h"

namespace troupe::kern {

namespace {

std::string fixed0(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

std::optional<roofline> published_roofline(std::string_view device_name) {
  const gpu_datasheet* g = find_gpu_by_device_name(device_name);
  if (!g) return std::nullopt;
  return roofline{g->mem_gb_s, g->fp16_tflop_s, "published figures for " + std::string(g->product)};
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
