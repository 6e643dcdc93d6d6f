@0xc4a1f3e8b2d95a17;
# Troupe's wire protocol: every message between client, gateway, scheduler and worker.
# Bump protocolVersion on any incompatible change; peers reject a mismatch with a clear error.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("troupe::wire");

const protocolVersion :UInt32 = 1;

enum ErrorKind {
  failed @0;         # this job is wrong: bad input, unknown model
  overloaded @1;     # retry later
  disconnected @2;   # a peer went away
  unimplemented @3;  # not built
}

struct Error {
  kind @0 :ErrorKind;
  message @1 :Text;
  field @2 :Text;    # the offending input field, or empty
}

struct SamplingParams {
  temperature @0 :Float32 = 0;
  topK @1 :Int32 = 0;
  topP @2 :Float32 = 1;
  minP @3 :Float32 = 0;
  repetitionPenalty @4 :Float32 = 1;
  repeatWindow @5 :Int32 = 64;
  frequencyPenalty @6 :Float32 = 0;
  presencePenalty @7 :Float32 = 0;
  seed @8 :UInt64 = 0;
  maxTokens @9 :Int32 = 256;
  stopIds @10 :List(Int32);
  stopStrings @11 :List(Text);
  ignoreEos @12 :Bool = false;
  topLogprobs @13 :Int32 = 0;
}

# A generation job, as a client submits it.
struct Job {
  protocolVersion @0 :UInt32;
  clientRequestId @1 :Text;
  model @2 :Text;
  prompt :union {
    text @3 :Text;
    tokenIds @4 :List(Int32);
  }
  sampling @5 :SamplingParams;
  stream @6 :Bool = true;
  priority @7 :Int32 = 0;
  apiKey @8 :Text;
}

struct TokenLogprob {
  id @0 :Int32;
  logprob @1 :Float32;
}

# Some newly generated tokens of one job.
struct TokenChunk {
  jobId @0 :UInt64;
  clientRequestId @1 :Text;
  index @2 :UInt32;          # index of the first token of this chunk in the output
  ids @3 :List(Int32);
  textDelta @4 :Text;        # never splits a UTF-8 character
  logprobs @5 :List(Float32);
  topLogprobs @6 :List(List(TokenLogprob));
}
