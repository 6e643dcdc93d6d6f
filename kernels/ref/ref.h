// The reference variants of every op (named "ref", backend CPU).
#pragma once
#include <vector>

#include "troupe/kernel_abi.h"

namespace troupe::kern::ref {
std::vector<troupe_kernel_variant> variants();
}
