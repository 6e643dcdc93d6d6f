/* An example CPU kernel plugin: adds the variant "plugin.silu_mul" through the C ABI of
 * include/troupe/kernel_abi.h. Build it as a shared library (a CMake MODULE) and load it
 * with `troupe kernels check --plugin PATH` or kernel_registry::load_plugin.
 *
 * EXAMPLE_PLUGIN_ABI overrides the ABI version it claims: the tests build a second copy
 * with a wrong version to see it refused. EXAMPLE_PLUGIN_WRONG builds a copy whose variant
 * forgets the sigmoid (gate * up): valid to load, wrong to run, which `troupe kernels check`
 * must catch.
 *
 * It counts its calls and, when unloaded (dlclose or exit) after at least one, prints
 * "example_cpu_plugin: plugin.silu_mul ran N times" to stderr: how a test of a real
 * `troupe serve` process sees that this variant, and not a built-in one, ran. */
#include <math.h>
#include <stdio.h>

#include "troupe/kernel_abi.h"

#ifndef EXAMPLE_PLUGIN_ABI
#define EXAMPLE_PLUGIN_ABI TROUPE_KERNEL_ABI_VERSION
#endif

static long long g_calls; /* workers may call at once: updated atomically */

/* out(n) = silu(gate(n)) * up(n), one element at a time; out may alias gate. */
static void example_silu_mul(const troupe_kctx* ctx, float* out, const float* gate, const float* up, int64_t n) {
  (void)ctx; /* a plugin may split the work with ctx->parallel_for; this one does not */
  __atomic_fetch_add(&g_calls, 1, __ATOMIC_RELAXED);
#ifdef EXAMPLE_PLUGIN_WRONG
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * up[i];
#else
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
#endif
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

__attribute__((destructor)) static void report_calls(void) {
  const long long n = __atomic_load_n(&g_calls, __ATOMIC_RELAXED);
  if (n > 0) fprintf(stderr, "example_cpu_plugin: plugin.silu_mul ran %lld times\n", n);
}
