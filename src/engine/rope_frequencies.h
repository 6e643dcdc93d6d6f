// RoPE frequencies of a model, shared by every backend so that all rotate alike.
#pragma once
#include <vector>

#include "troupe/model.h"

namespace troupe {

// (head_dim / 2) inverse frequencies theta^(-2i/head_dim), with Llama 3's rope scaling
// applied when the config enables it.
std::vector<float> rope_frequencies(const model_config& c);

}  // namespace troupe
