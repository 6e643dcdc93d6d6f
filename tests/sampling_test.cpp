#include <gtest/gtest.h>

#include "troupe/sampling.h"

using troupe::sampling_params;
using troupe::validate;

TEST(SamplingParams, DefaultsAreValid) { EXPECT_EQ(validate(sampling_params{}), ""); }

TEST(SamplingParams, EachBadFieldIsNamed) {
  struct bad_case {
    const char* field;
    void (*mutate)(sampling_params&);
  };
  const bad_case cases[] = {
      {"temperature", [](sampling_params& p) { p.temperature = -0.5f; }},
      {"top_p", [](sampling_params& p) { p.top_p = 0.0f; }},
      {"top_p", [](sampling_params& p) { p.top_p = 1.5f; }},
      {"top_k", [](sampling_params& p) { p.top_k = -1; }},
      {"min_p", [](sampling_params& p) { p.min_p = 1.0f; }},
      {"max_tokens", [](sampling_params& p) { p.max_tokens = 0; }},
      {"repetition_penalty", [](sampling_params& p) { p.repetition_penalty = 0.0f; }},
      {"top_logprobs", [](sampling_params& p) { p.top_logprobs = 21; }},
      {"stop_strings[0]", [](sampling_params& p) { p.stop_strings = {""}; }},
  };
  for (const auto& c : cases) {
    sampling_params p;
    c.mutate(p);
    const std::string msg = validate(p);
    EXPECT_EQ(msg.rfind(c.field, 0), 0u) << "expected an error naming " << c.field << ", got '" << msg << "'";
  }
}
