// RMSNorm kernel versions, in the style of llm.c's dev/cuda:
//   1. one thread per row (naive: uncoalesced, one thread does a whole row)
//   2. one block per row, scalar loads, shared-memory tree reduction
//   3. one block per row, float4 loads, warp-shuffle reduction (what kernels/cuda/rmsnorm.cu uses)
// Each version is checked against the CPU reference, then timed; a GB/s table is printed.
// usage: rmsnorm [kernel_num]   (no argument: all versions)
#include <cstdio>
#include <cstdlib>

#include "dev_common.cuh"

// ---- CPU reference --------------------------------------------------------------------
// out (rows, dim) = x / sqrt(mean(x^2) + eps) * w
void rmsnorm_cpu(float* out, const float* x, const float* w, int rows, int dim, float eps) {
  for (int r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int i = 0; i < dim; ++i) ss += (double)x[r * dim + i] * x[r * dim + i];
    const float s = 1.0f / std::sqrt((float)(ss / dim) + eps);
    for (int i = 0; i < dim; ++i) out[r * dim + i] = x[r * dim + i] * s * w[i];
  }
}

// ---- kernels ----------------------------------------------------------------------------

__global__ void rmsnorm_kernel1(float* out, const float* x, const float* w, int rows, int dim, float eps) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const float* xr = x + (size_t)r * dim;
  float ss = 0.0f;
  for (int i = 0; i < dim; ++i) ss += xr[i] * xr[i];
  const float s = rsqrtf(ss / dim + eps);
  for (int i = 0; i < dim; ++i) out[(size_t)r * dim + i] = xr[i] * s * w[i];
}

__global__ void rmsnorm_kernel2(float* out, const float* x, const float* w, int dim, float eps) {
  extern __shared__ float partial[];  // (blockDim.x)
  const float* xr = x + (size_t)blockIdx.x * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const float s = rsqrtf(partial[0] / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[(size_t)blockIdx.x * dim + i] = xr[i] * s * w[i];
}

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// dim % 4 == 0
__global__ void rmsnorm_kernel3(float* out, const float* x, const float* w, int dim, float eps) {
  __shared__ float warp_sums[32];
  const float4* x4 = reinterpret_cast<const float4*>(x + (size_t)blockIdx.x * dim);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4* o4 = reinterpret_cast<float4*>(out + (size_t)blockIdx.x * dim);
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
    const float4 v = x4[i];
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  const int lane = threadIdx.x % 32;
  ss = lane < (int)blockDim.x / 32 ? warp_sums[lane] : 0.0f;
  ss = warp_sum(ss);  // every warp reduces all the warp sums: no second barrier needed
  const float s = rsqrtf(ss / dim + eps);
  for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
    const float4 v = x4[i], g = w4[i];
    o4[i] = make_float4(v.x * s * g.x, v.y * s * g.y, v.z * s * g.z, v.w * s * g.w);
  }
}

// ---- launchers ----------------------------------------------------------------------------

void run(int kernel_num, float* out, const float* x, const float* w, int rows, int dim, float eps) {
  switch (kernel_num) {
    case 1:
      rmsnorm_kernel1<<<(rows + 127) / 128, 128>>>(out, x, w, rows, dim, eps);
      break;
    case 2:
      rmsnorm_kernel2<<<rows, 256, 256 * sizeof(float)>>>(out, x, w, dim, eps);
      break;
    case 3:
      rmsnorm_kernel3<<<rows, 256>>>(out, x, w, dim, eps);
      break;
    default:
      std::fprintf(stderr, "unknown kernel %d\n", kernel_num);
      std::exit(1);
  }
  DEV_CHECK(cudaGetLastError());
}

int main(int argc, char** argv) {
  dev::require_device();
  const int only = argc > 1 ? std::atoi(argv[1]) : 0;
  const int rows = 8192, dim = 4096;  // a prefill batch of a Llama-8B-sized model
  const float eps = 1e-5f;
  const auto x = dev::random_floats((size_t)rows * dim, 1, -2.0f, 2.0f);
  const auto w = dev::random_floats(dim, 2, 0.5f, 1.5f);
  std::vector<float> ref((size_t)rows * dim);
  rmsnorm_cpu(ref.data(), x.data(), w.data(), rows, dim, eps);
  float* dx = dev::to_device(x);
  float* dw = dev::to_device(w);
  float* dout = nullptr;
  DEV_CHECK(cudaMalloc(&dout, ref.size() * sizeof(float)));

  const double bytes = 2.0 * rows * dim * sizeof(float) + dim * sizeof(float);  // read x, write out, read w
  std::printf("rmsnorm rows %d dim %d\n", rows, dim);
  const bool all_ok = dev::check_and_time(
      only, 3, [&](int k) { run(k, dout, dx, dw, rows, dim, eps); }, dout, ref, 1e-5f, 1e-4f, bytes);
  DEV_CHECK(cudaFree(dx));
  DEV_CHECK(cudaFree(dw));
  DEV_CHECK(cudaFree(dout));
  return all_ok ? 0 : 1;
}
