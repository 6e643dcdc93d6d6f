#include "src/engine/rope_frequencies.h"

#include <cmath>
#include <numbers>

namespace troupe {

// RoPE frequencies, with Llama 3's rope scaling: long wavelengths are stretched by `factor`,
// short ones kept, and the band between blended smoothly.
std::vector<float> rope_frequencies(const model_config& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> f(half);
  for (int64_t i = 0; i < half; ++i) {
    double freq = 1.0 / std::pow((double)c.rope_theta, (double)(2 * i) / (double)c.head_dim);
    if (c.scaling.enabled) {
      const rope_scaling& s = c.scaling;
      const double wavelen = 2.0 * std::numbers::pi / freq;
      const double low_wavelen = (double)s.original_max_position / s.low_freq_factor;
      const double high_wavelen = (double)s.original_max_position / s.high_freq_factor;
      if (wavelen > low_wavelen) {
        freq /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            ((double)s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        freq = (1.0 - smooth) * freq / s.factor + smooth * freq;
      }
    }
    f[i] = (float)freq;
  }
  return f;
}

}  // namespace troupe
