// Published GPU figures, one table for both readers: the roofline `troupe kernels bench`
// prints beside each CUDA variant (kernels/roofline.cpp) and the devices `troupe sim`
// simulates (sim/cluster.cpp). Units are the datasheets' own: GB/s and GB are 1e9 bytes,
// TFLOP/s 1e12 FLOP/s; a reader converts once where it needs another unit.
#pragma once
#include <span>
#include <string_view>

namespace troupe::kern {

struct gpu_datasheet {
  std::string_view match;    // a substring of the CUDA device name; the first row that matches wins
  std::string_view product;  // the product the figures are published for ("H100 SXM")
  std::string_view presets;  // the simulator's names for it, space-separated ("h100 h100-sxm"); empty: none
  double mem_gb_s;           // peak memory bandwidth, GB/s
  double fp16_tflop_s;       // dense FP16/BF16 tensor-core peak (no 2:4 sparsity), TFLOP/s
  double link_gb_s;          // GPU-to-GPU bandwidth per direction (NVLink, else PCIe), GB/s; 0 = not listed
  double memory_gb;          // device memory, GB
  // Not a datasheet figure: the simulator's cost of one all-reduce hop chain (launch and
  // sync), seconds, longer over PCIe than NVLink.
  double link_latency_s;
};

// Every row, the more specific names first ("H100 PCIe" before "H100", "L40" before "L4");
// the simulator lists its presets in this order.
std::span<const gpu_datasheet> gpu_datasheets();

// The first row whose `match` the device name contains ("NVIDIA H100 80GB HBM3"), or null.
const gpu_datasheet* find_gpu_by_device_name(std::string_view device_name);
// The row with `preset` among its presets (lower case), or null.
const gpu_datasheet* find_gpu_by_preset(std::string_view preset);

}  // namespace troupe::kern
