// The value types of Troupe's wire protocol (schema/troupe.capnp), one struct per schema
// message. Plain, copyable structs; src/cluster/codec.h turns them into bytes and back.
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "troupe/error.h"
#include "troupe/request.h"
#include "troupe/sampling.h"
#include "troupe/step.h"

namespace troupe::proto {

// Must equal schema/troupe.capnp's protocolVersion (checked in codec.cpp).
inline constexpr uint32_t protocol_version = 1;

// ---- client <-> gateway ------------------------------------------------------------------

struct job {
  std::string client_request_id;
  std::string model;  // empty = the gateway's default model
  bool prompt_is_ids = false;
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  sampling_params sampling;
  bool stream = true;
  int32_t priority = 0;
  std::string api_key;
};

struct cancel_job {
  std::string client_request_id;
};

using client_message = std::variant<job, cancel_job>;

struct token_chunk {
  uint64_t job_id = 0;
  std::string client_request_id;
  uint32_t index = 0;  // index of ids[0] in the job's output
  std::vector<int32_t> ids;
  std::string text_delta;  // never splits a UTF-8 character
  std::vector<float> logprobs;
  std::vector<std::vector<token_logprob>> top;
};

struct job_done {
  uint64_t job_id = 0;
  std::string client_request_id;
  finish_reason reason = finish_reason::none;
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  double queue_ms = 0, ttft_ms = 0, total_ms = 0;
  std::string detail;  // why the server cancelled it, or the error
};

struct job_error {
  uint64_t job_id = 0;  // 0 when the job never got an id
  std::string client_request_id;
  error_info error;
};

using server_message = std::variant<token_chunk, job_done, job_error>;

// ---- between components --------------------------------------------------------------------

struct worker_registration {
  std::string node;
  std::string device;
  std::string model;
  int64_t kv_blocks = 0;
  int32_t block_size = 16;
  int32_t max_batch = 64;
  int64_t host_blocks = 0;      // host pool for preemption by swap; 0 = none
  bool plan_diffs = false;      // caches sequences between plans (seq_cache): it takes diffs
  int64_t max_step_tokens = 0;  // most tokens one step may carry; 0 = not reported
};

struct registered {
  uint32_t replica_id = 0;
};

// Workers and gateways send these; the scheduler answers each while it knows the sender.
struct heartbeat {
  uint64_t seq = 0;
  bool gateway = false;                   // from a gateway
  std::vector<std::string> ready_models;  // the scheduler's answer to a gateway: models a worker serves
};

// step_result plus the worker's failure to run the plan, if any.
struct step_outcome {
  step_result result;
  std::string error;
  // With an error: the sequences whose work made the worker reject the plan (it ran none of
  // it); the scheduler fails those and re-plans the rest. Empty: the worker failed by itself.
  std::vector<uint64_t> rejected;
};

// Worker -> scheduler: finish my running sequences, admit nothing new here, then send me
// shutdown; after `deadline_s` (0: none) my sequences move to other replicas.
struct drain {
  double deadline_s = 0;
};

struct shutdown {
  std::string reason;
};

struct cancel_request {
  uint64_t id = 0;
};

struct job_event {
  request_event event;
  double queue_ms = -1;  // >= 0 on the first event after the request was first scheduled
};

struct request_events {
  std::vector<job_event> events;
};

struct request_rejected {
  uint64_t id = 0;
  error_info error;
};

struct peer_error {
  error_info error;
};

using control_message = std::variant<worker_registration, registered, heartbeat, step_plan, step_outcome, drain,
                                     shutdown, request, cancel_request, request_events, request_rejected, peer_error>;

}  // namespace troupe::proto
