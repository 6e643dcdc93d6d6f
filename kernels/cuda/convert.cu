// Conversions: grid-stride loops, one element per thread step. Quantized weights are
// decoded element by element (block = i / 32) so one kernel serves any row length.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/convert.cuh"
#include "troupe/error.h"

namespace troupe::kern::cuda {

namespace {

constexpr int k_threads = 256;

template <typename O>
__global__ void f32_to_half_kernel(O* __restrict__ out, const float* __restrict__ in, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = from_f32<O>(in[i]);
}

template <typename I>
__global__ void to_f32_kernel(float* __restrict__ out, const I* __restrict__ in, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = to_f32(in[i]);
}

// w_type is a runtime switch inside the loop: conversions are one-off (upload) or
// bandwidth-bound (prefill dequant), and one instantiation per output type keeps nvcc fast.
template <typename O>
__global__ void dequantize_kernel(O* __restrict__ out, const void* __restrict__ w, int w_type, int64_t n, int64_t k) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float v;
    switch (w_type) {
      case TROUPE_F32:
        v = static_cast<const float*>(w)[i];
        break;
      case TROUPE_F16:
        v = __half2float(static_cast<const __half*>(w)[i]);
        break;
      case TROUPE_BF16:
        v = __bfloat162float(static_cast<const __nv_bfloat16*>(w)[i]);
        break;
      case TROUPE_Q8_0: {
        const int64_t r = i / k, c = i % k;
        const block_q8_0_dev& b = static_cast<const block_q8_0_dev*>(w)[r * (k / k_qk) + c / k_qk];
        v = __half2float(b.d) * (float)b.qs[c % k_qk];
        break;
      }
      default: {  // TROUPE_Q4_0
        const int64_t r = i / k, c = i % k;
        const block_q4_0_dev& b = static_cast<const block_q4_0_dev*>(w)[r * (k / k_qk) + c / k_qk];
        const int j = (int)(c % k_qk);
        const int q = j < k_qk / 2 ? (b.qs[j] & 0x0f) : (b.qs[j - k_qk / 2] >> 4);
        v = __half2float(b.d) * (float)(q - 8);
        break;
      }
    }
    out[i] = from_f32<O>(v);
  }
}

void check_half(troupe_dtype t, const char* what) {
  if (t != TROUPE_F16 && t != TROUPE_BF16)
    throw error(error_kind::failed, std::string("cuda ") + what + ": output type must be f16 or bf16");
}

}  // namespace

void invoke_f32_to_half(void* out, troupe_dtype out_type, const float* in, int64_t n, cudaStream_t stream) {
  check_half(out_type, "f32_to_half");
  if (n <= 0) return;
  if (out_type == TROUPE_F16)
    f32_to_half_kernel<<<grid_for(n, k_threads), k_threads, 0, stream>>>(static_cast<__half*>(out), in, n);
  else
    f32_to_half_kernel<<<grid_for(n, k_threads), k_threads, 0, stream>>>(static_cast<__nv_bfloat16*>(out), in, n);
  TROUPE_CUDA_CHECK_LAUNCH("f32_to_half");
}

void invoke_dequantize(void* out, troupe_dtype out_type, const void* w, troupe_dtype w_type, int64_t rows, int64_t k,
                       cudaStream_t stream) {
  check_half(out_type, "dequantize");
  if (w_type != TROUPE_F32 && w_type != TROUPE_F16 && w_type != TROUPE_BF16 && w_type != TROUPE_Q8_0 &&
      w_type != TROUPE_Q4_0)
    throw error(error_kind::unimplemented, "cuda dequantize: unsupported weight type " + std::to_string((int)w_type));
  if ((w_type == TROUPE_Q8_0 || w_type == TROUPE_Q4_0) && k % k_qk)
    throw error(error_kind::failed, "cuda dequantize: quantized row length must be a multiple of 32");
  const int64_t n = rows * k;
  if (n <= 0) return;
  if (out_type == TROUPE_F16)
    dequantize_kernel<<<grid_for(n, k_threads), k_threads, 0, stream>>>(static_cast<__half*>(out), w, (int)w_type, n,
                                                                        k);
  else
    dequantize_kernel<<<grid_for(n, k_threads), k_threads, 0, stream>>>(static_cast<__nv_bfloat16*>(out), w,
                                                                        (int)w_type, n, k);
  TROUPE_CUDA_CHECK_LAUNCH("dequantize");
}

void invoke_to_f32(float* out, const void* in, troupe_dtype in_type, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  switch (in_type) {
    case TROUPE_F32:
      TROUPE_CUDA_CHECK(cudaMemcpyAsync(out, in, n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
      return;
    case TROUPE_F16:
      to_f32_kernel<<<grid_for(n, k_threads), k_threads, 0, stream>>>(out, static_cast<const __half*>(in), n);
      break;
    case TROUPE_BF16:
      to_f32_kernel<<<grid_for(n, k_threads), k_threads, 0, stream>>>(out, static_cast<const __nv_bfloat16*>(in), n);
      break;
    default:
      throw error(error_kind::unimplemented, "cuda to_f32: unsupported type " + std::to_string((int)in_type));
  }
  TROUPE_CUDA_CHECK_LAUNCH("to_f32");
}

}  // namespace troupe::kern::cuda
