// The CPU kernels compiled for one instruction set (flags in kernels/CMakeLists.txt).
#define TROUPE_ISA_NS avx2
#define TROUPE_ISA_NAME "avx2"
#include "kernels/cpu/ops_body.h"
