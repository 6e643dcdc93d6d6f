// The roofline of a GPU: peak memory bandwidth and dense FP16 tensor-core throughput, the
// two ceilings `troupe kernels bench` prints beside each variant's GB/s and TFLOP/s. From the
// table of published figures (kernels/gpu_datasheet.h) keyed by the device's name, or derived from what the runtime
// reports (CUDA 13 dropped cudaDeviceProp::memoryClockRate; cudaDeviceGetAttribute still
// gives the clocks and the bus width). Plain C++: no CUDA header.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace troupe::kern {

struct roofline {
  double mem_gb_s = 0;      // peak memory bandwidth, GB/s (1e9 bytes); 0 = unknown
  double fp16_tflop_s = 0;  // dense FP16 tensor-core peak, TFLOP/s (no sparsity); 0 = unknown
  std::string source;       // where the figures come from, for the report
};

// The vendor's published figures for a device name as cudaGetDeviceProperties reports it
// ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L4"), or nullopt.
std::optional<roofline> published_roofline(std::string_view device_name);

// From the runtime's attributes: bandwidth = 2 (double data rate) x memory clock x bus
// width; FP16 = SMs x SM clock x dense FP16 FLOP per clock per SM of the architecture
// (1024 for sm_70..sm_89 but sm_80, 2048 for sm_80, 4096 for sm_90, 8192 for sm_100;
// 0 when the architecture is not in the table). Clocks in kHz as the runtime gives them.
roofline derived_roofline(int mem_clock_khz, int bus_width_bits, int sm_count, int sm_clock_khz, int cc_major,
                          int cc_minor);

// One line for the report: "3350 GB/s, 989 TFLOP/s dense FP16 (published figures for H100 SXM)";
// an unknown (zero) figure is left out.
std::string describe(const roofline& r);

}  // namespace troupe::kern
