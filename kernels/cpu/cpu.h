// The fast CPU kernels: one set of variants per instruction set ("cpu.generic",
// "cpu.avx2", "cpu.avx512"), chosen at run time from what this CPU supports. The default
// build runs on any x86-64; the per-ISA code lives in translation units compiled with
// their own flags and is only called after __builtin_cpu_supports said yes.
#pragma once
#include <string>
#include <vector>

#include "troupe/kernel_abi.h"

namespace troupe {
class kernel_registry;
}

namespace troupe::kern::cpu {

enum class isa { generic, avx2, avx512 };

const char* isa_name(isa i);  // "generic", "avx2", "avx512"
// What this CPU (and OS) can run: avx2 needs AVX2+FMA+F16C; avx512 needs F, BW, DQ, VL
// and VNNI.
bool isa_supported(isa i);
isa best_isa();

// The variants of one instruction set (empty if this CPU cannot run it).
std::vector<troupe_kernel_variant> variants(isa i);

// Adds the cpu.* variants this machine supports, generic first and the best last (the
// registry's default for a backend is the last added). The reference variants are not
// included: add kern::ref::variants() first.
void register_all(kernel_registry& reg);

// "avx512, 2 threads"
std::string describe(int n_threads);
std::string describe();  // with the number of hardware threads

}  // namespace troupe::kern::cpu
