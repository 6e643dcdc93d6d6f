// The request-level value types every front end, the scheduler and the simulator share: a
// request as the scheduling policy takes it, what happened to it in one step, why it ended,
// and an error of a kind. Plain, copyable structs (std only).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "troupe/error.h"
#include "troupe/sampling.h"
#include "troupe/step.h"

namespace troupe {

enum class finish_reason : unsigned char { none, stop, length, cancelled, error };

constexpr const char* to_string(finish_reason r) {
  switch (r) {
    case finish_reason::none:
      return "none";
    case finish_reason::stop:
      return "stop";
    case finish_reason::length:
      return "length";
    case finish_reason::cancelled:
      return "cancelled";
    case finish_reason::error:
      return "error";
  }
  return "unknown";
}

// An error as a value: what crosses the wire or comes back from an admission decision.
// `field` names the offending input ("prompt", "max_tokens"), or is empty.
struct error_info {
  error_kind kind = error_kind::failed;
  std::string message;
  std::string field;

  static error_info of(const error& e) { return {e.kind(), e.what(), e.field()}; }
};

struct request {
  uint64_t id = 0;  // unique, given by the gateway
  std::string tenant = "default";
  // The model it is for: only replicas serving this model run it. Empty: any replica (the
  // simulator and older traces, which know one model).
  std::string model;
  int32_t priority = 0;  // higher runs first
  std::vector<int32_t> prompt;
  sampling_params sampling;
  std::vector<int32_t> eos_ids;  // the model's end-of-sequence ids (ignored with sampling.ignore_eos)
};

// What happened to a request in one step result (or outside a step: a cancel, a failure).
struct request_event {
  uint64_t id = 0;
  std::vector<token_logprob> tokens;            // new tokens, in order (logprob of each)
  std::vector<std::vector<token_logprob>> top;  // alternatives per new token, when asked
  finish_reason finished = finish_reason::none;
  std::string error;  // when finished == error
};

}  // namespace troupe
