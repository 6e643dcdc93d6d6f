// RMSNorm: one block per row. The row is read once for the sum of squares and once for
// the output (the second read hits L2 for any realistic width). float4 accesses when the
// width and the pointers allow. The fused variant writes x + residual back while summing.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rmsnorm.cuh"

namespace troupe::kern::cuda {

namespace {

constexpr int k_threads = 256;

// residual == nullptr: plain RMSNorm. Otherwise x += residual first (x is written).
template <bool VEC4>
__global__ void rmsnorm_kernel(float* out, float* x, const float* __restrict__ residual, const float* __restrict__ w,
                               int64_t dim, float eps) {
  __shared__ float scratch[k_warp];
  const int64_t r = blockIdx.x;
  float* xr = x + r * dim;
  const float* rr = residual ? residual + r * dim : nullptr;
  float* orow = out + r * dim;
  float ss = 0.0f;
  if constexpr (VEC4) {
    float4* x4 = reinterpret_cast<float4*>(xr);
    const float4* r4 = reinterpret_cast<const float4*>(rr);
    for (int64_t i = threadIdx.x; i < dim / 4; i += blockDim.x) {
      float4 v = x4[i];
      if (rr) {
        const float4 a = r4[i];
        v.x += a.x, v.y += a.y, v.z += a.z, v.w += a.w;
        x4[i] = v;
      }
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      float v = xr[i];
      if (rr) {
        v += rr[i];
        xr[i] = v;
      }
      ss += v * v;
    }
  }
  ss = block_sum(ss, scratch);  // also a barrier: the fused writes to x are visible below
  const float scale = rsqrtf(ss / (float)dim + eps);
  if constexpr (VEC4) {
    const float4* x4 = reinterpret_cast<const float4*>(xr);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    float4* o4 = reinterpret_cast<float4*>(orow);
    for (int64_t i = threadIdx.x; i < dim / 4; i += blockDim.x) {
      const float4 v = x4[i], g = w4[i];
      o4[i] = make_float4(v.x * scale * g.x, v.y * scale * g.y, v.z * scale * g.z, v.w * scale * g.w);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = xr[i] * scale * w[i];
  }
}

void launch(float* out, float* x, const float* residual, const float* w, int64_t rows, int64_t dim, float eps,
            cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  const bool vec4 =
      dim % 4 == 0 && aligned16(out) && aligned16(x) && aligned16(w) && (!residual || aligned16(residual));
  if (vec4)
    rmsnorm_kernel<true><<<(unsigned)rows, k_threads, 0, stream>>>(out, x, residual, w, dim, eps);
  else
    rmsnorm_kernel<false><<<(unsigned)rows, k_threads, 0, stream>>>(out, x, residual, w, dim, eps);
  TROUPE_CUDA_CHECK_LAUNCH("rmsnorm");
}

}  // namespace

void invoke_rmsnorm(float* out, const float* x, const float* w, int64_t rows, int64_t dim, float eps,
                    cudaStream_t stream) {
  // x is only read when residual is null; the cast keeps one kernel for both forms.
  launch(out, const_cast<float*>(x), nullptr, w, rows, dim, eps, stream);
}

void invoke_add_rmsnorm(float* out, float* x, const float* residual, const float* w, int64_t rows, int64_t dim,
                        float eps, cudaStream_t stream) {
  launch(out, x, residual, w, rows, dim, eps, stream);
}

}  // namespace troupe::kern::cuda
