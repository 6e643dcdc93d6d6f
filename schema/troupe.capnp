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
  logitBias @14 :List(LogitBias);  # added to the logits before sampling
  minTokens @15 :Int32 = 0;        # endIds are never drawn before this many tokens
  endIds @16 :List(Int32);         # with minTokens: EOS and stop ids
}

struct LogitBias {
  id @0 :Int32;
  bias @1 :Float32;
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

# ---- client <-> gateway --------------------------------------------------------------

struct Cancel {
  clientRequestId @0 :Text;  # the job to cancel, as the client named it
}

# Every message a client sends the gateway.
struct ClientMessage {
  protocolVersion @0 :UInt32;
  union {
    submit @1 :Job;
    cancel @2 :Cancel;
  }
}

enum FinishReason {
  none @0;
  stop @1;       # end of sequence, a stop id or a stop string
  length @2;     # max tokens or the context reached
  cancelled @3;  # by the client, a disconnect or a shutdown
  error @4;
}

# The last message of a job that ran.
struct Done {
  jobId @0 :UInt64;
  clientRequestId @1 :Text;
  finishReason @2 :FinishReason;
  promptTokens @3 :UInt32;
  completionTokens @4 :UInt32;
  queueMs @5 :Float64;   # accepted by the gateway -> first scheduled
  ttftMs @6 :Float64;    # accepted by the gateway -> first token
  totalMs @7 :Float64;   # accepted by the gateway -> done
  reason @8 :Text;       # why, when cancelled by the server (shutdown deadline) or error
}

# The job failed (or never started): the last message of that job.
struct JobError {
  jobId @0 :UInt64;      # 0 when the job never got an id
  clientRequestId @1 :Text;
  error @2 :Error;
}

# Every message the gateway sends a client.
struct ServerMessage {
  protocolVersion @0 :UInt32;
  union {
    chunk @1 :TokenChunk;
    done @2 :Done;
    error @3 :JobError;
  }
}

# ---- between components (gateway, scheduler, workers) ----------------------------------

struct WorkerRegistration {
  node @0 :Text;
  device @1 :Text;
  model @2 :Text;
  kvBlocks @3 :Int64;     # KV capacity in blocks
  blockSize @4 :Int32;    # tokens per block
  maxBatch @5 :Int32;     # sequences per step
  hostBlocks @6 :Int64;   # host pool for preemption by swap, in blocks; 0 = none
  planDiffs @7 :Bool;     # caches sequences between plans: takes SeqWork diffs (older workers: false)
  maxStepTokens @8 :Int64;  # most tokens one step may carry; 0 = not reported (older workers)
}

struct Registered {
  replicaId @0 :UInt32;
}

# Workers and gateways send one every heartbeat interval; the scheduler answers each with
# one (gateway false) while it knows the sender, so both sides see the other's silence.
struct Heartbeat {
  seq @0 :UInt64;
  gateway @1 :Bool;   # sent by a gateway (which needs no registration)
  readyModels @2 :List(Text);  # the scheduler's answer to a gateway: models with a worker ready
}

struct SeqWork {
  seqId @0 :UInt64;
  tokens @1 :List(Int32);
  startPos @2 :Int32;
  blockTable @3 :List(Int32);
  sample @4 :Bool;
  sampling @5 :SamplingParams;
  history @6 :List(Int32);
  nPrompt @7 :Int32;
  feedLastSampled @8 :Bool;
  # Only what is new since this sequence's previous work on this worker: blockTable holds the
  # blocks appended since, and sampling, history and nPrompt are not set (the worker keeps
  # them from the sequence's full work, see include/troupe/step.h).
  diff @9 :Bool;
}

# A KV block copy done before the step's compute (preemption by swap). A worker that
# reports no host pool (hostBlocks 0) is never sent one, so older workers stay compatible.
struct BlockCopy {
  deviceBlock @0 :Int32;
  hostSlot @1 :Int32;
}

struct StepPlan {
  stepId @0 :UInt64;
  seqs @1 :List(SeqWork);
  swapOut @2 :List(BlockCopy);  # device -> host, first
  swapIn @3 :List(BlockCopy);   # host -> device, then
  released @4 :List(UInt64);    # seq ids whose cached state the worker drops, before the work
}

struct SeqOutput {
  seqId @0 :UInt64;
  token @1 :Int32;
  logprob @2 :Float32;
  top @3 :List(TokenLogprob);
}

struct StepResult {
  stepId @0 :UInt64;
  outputs @1 :List(SeqOutput);
  error @2 :Text;   # non-empty when the worker could not execute the plan
  rejected @3 :List(UInt64);  # with error: the sequences whose work caused it (the step ran
                              # none of its work); empty: the worker itself failed
}

# Worker -> scheduler: stop giving this replica new work, let its running sequences finish
# here, then send it Shutdown. Past the deadline its sequences move to other replicas
# (resuming from the tokens already generated) and it is shut down anyway.
struct Drain {
  deadlineS @0 :Float64;  # seconds from receipt; 0 = no deadline
}

struct Shutdown {
  reason @0 :Text;
}

# A validated, tokenized job, gateway -> scheduler.
struct Request {
  id @0 :UInt64;
  tenant @1 :Text;
  priority @2 :Int32;
  prompt @3 :List(Int32);
  sampling @4 :SamplingParams;
  eosIds @5 :List(Int32);
  model @6 :Text;        # only replicas serving this model run it; empty: any replica
}

struct CancelRequest {
  id @0 :UInt64;
}

struct RequestEvent {
  id @0 :UInt64;
  tokens @1 :List(TokenLogprob);
  top @2 :List(List(TokenLogprob));
  finished @3 :FinishReason;
  error @4 :Text;
  queueMs @5 :Float64;   # when first scheduled: ms since the scheduler admitted it; else -1
}

# scheduler -> gateway
struct RequestEvents {
  events @0 :List(RequestEvent);
}

# A request the scheduler refused at admission, scheduler -> gateway.
struct RequestRejected {
  id @0 :UInt64;
  error @1 :Error;
}

# Every message between components.
struct ControlMessage {
  protocolVersion @0 :UInt32;
  union {
    registration @1 :WorkerRegistration;
    registered @2 :Registered;
    heartbeat @3 :Heartbeat;
    stepPlan @4 :StepPlan;
    stepResult @5 :StepResult;
    drain @6 :Drain;
    shutdown @7 :Shutdown;
    request @8 :Request;
    cancelRequest @9 :CancelRequest;
    events @10 :RequestEvents;
    rejected @11 :RequestRejected;
    error @12 :Error;   # the peer's message could not be used (e.g. another protocol version)
  }
}
