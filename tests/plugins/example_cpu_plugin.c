/* An example CPU kernel plugin: adds the variant "plugin.silu_mul" through the C ABI of
 * include/troupe/kernel_abi.h. Build it as a shared library (a CMake MODULE) and load it
 * with `troupe kernels check --plugin PATH` or kernel_registry::load_plugin.
 *
 * EXAMPLE_PLUGIN_ABI overrides the ABI version it claims: the tests build a second copy
 * with a wrong version to see it refused. */
#include <math.h>

#include "troupe/kernel_abi.h"

#ifndef EXAMPLE_PLUGIN_ABI
#define EXAMPLE_PLUGIN_ABI TROUPE_KERNEL_ABI_VERSION
#endif

/* out(n) = silu(gate(n)) * up(n), one element at a time; out may alias gate. */
static void example_silu_mul(const troupe_kctx* ctx, float* out, const float* gate, const float* up, int64_t n) {
  (void)ctx; /* a plugin may split the work with ctx->parallel_for; this one does not */
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static const troupe_kernel_variant k_variants[] = {
    {TROUPE_OP_SILU_MUL, TROUPE_BACKEND_CPU, "plugin.silu_mul", (void (*)(void))example_silu_mul},
};

static const troupe_kernel_plugin k_plugin = {
    EXAMPLE_PLUGIN_ABI,
    "example_cpu_plugin",
    sizeof k_variants / sizeof k_variants[0],
    k_variants,
};

__attribute__((visibility("default"))) const troupe_kernel_plugin* troupe_kernel_plugin_v1(void) { return &k_plugin; }
