// The CPU kernels compiled for one instruction set (flags in kernels/CMakeLists.txt).
#define TROUPE_ISA_NS avx512
#define TROUPE_ISA_NAME "avx512"
#include "kernels/cpu/ops_body.h"
