// The CPU kernels compiled for one instruction set (flags in kernels/CMakeLists.txt).
#define TROUPE_ISA_NS generic
#define TROUPE_ISA_NAME "generic"
#include "kernels/cpu/ops_body.h"
