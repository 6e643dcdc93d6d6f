#include "src/cluster/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <type_traits>

#include "schema/troupe.capnp.h"
#include "src/cluster/overloaded.h"

namespace troupe::codec {

static_assert(proto::protocol_version == wire::PROTOCOL_VERSION,
              "src/cluster/protocol.h and schema/troupe.capnp disagree on the protocol version");

namespace {

// ---- small pieces both ways --------------------------------------------------------------

std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

template <class T, class L>
std::vector<T> to_vector(L list) {
  std::vector<T> v;
  v.reserve(list.size());
  for (auto x : list) v.push_back(static_cast<T>(x));
  return v;
}

template <class B, class V>
void set_list(B builder, const V& v) {
  for (unsigned i = 0; i < v.size(); ++i) builder.set(i, v[i]);
}

wire::ErrorKind to_wire(error_kind k) {
  switch (k) {
    case error_kind::failed:
      return wire::ErrorKind::FAILED;
    case error_kind::overloaded:
      return wire::ErrorKind::OVERLOADED;
    case error_kind::disconnected:
      return wire::ErrorKind::DISCONNECTED;
    case error_kind::unimplemented:
      return wire::ErrorKind::UNIMPLEMENTED;
  }
  return wire::ErrorKind::FAILED;
}

error_kind from_wire(wire::ErrorKind k) {
  switch (k) {
    case wire::ErrorKind::FAILED:
      return error_kind::failed;
    case wire::ErrorKind::OVERLOADED:
      return error_kind::overloaded;
    case wire::ErrorKind::DISCONNECTED:
      return error_kind::disconnected;
    case wire::ErrorKind::UNIMPLEMENTED:
      return error_kind::unimplemented;
  }
  return error_kind::failed;
}

wire::FinishReason to_wire(finish_reason r) {
  switch (r) {
    case finish_reason::none:
      return wire::FinishReason::NONE;
    case finish_reason::stop:
      return wire::FinishReason::STOP;
    case finish_reason::length:
      return wire::FinishReason::LENGTH;
    case finish_reason::cancelled:
      return wire::FinishReason::CANCELLED;
    case finish_reason::error:
      return wire::FinishReason::ERROR;
  }
  return wire::FinishReason::NONE;
}

finish_reason from_wire(wire::FinishReason r) {
  switch (r) {
    case wire::FinishReason::NONE:
      return finish_reason::none;
    case wire::FinishReason::STOP:
      return finish_reason::stop;
    case wire::FinishReason::LENGTH:
      return finish_reason::length;
    case wire::FinishReason::CANCELLED:
      return finish_reason::cancelled;
    case wire::FinishReason::ERROR:
      return finish_reason::error;
  }
  return finish_reason::none;
}

void put(wire::SamplingParams::Builder b, const sampling_params& p) {
  b.setTemperature(p.temperature);
  b.setTopK(p.top_k);
  b.setTopP(p.top_p);
  b.setMinP(p.min_p);
  b.setRepetitionPenalty(p.repetition_penalty);
  b.setRepeatWindow(p.repeat_window);
  b.setFrequencyPenalty(p.frequency_penalty);
  b.setPresencePenalty(p.presence_penalty);
  b.setSeed(p.seed);
  b.setMaxTokens(p.max_tokens);
  set_list(b.initStopIds(p.stop_ids.size()), p.stop_ids);
  auto ss = b.initStopStrings(p.stop_strings.size());
  for (unsigned i = 0; i < p.stop_strings.size(); ++i) ss.set(i, p.stop_strings[i]);
  b.setIgnoreEos(p.ignore_eos);
  b.setTopLogprobs(p.top_logprobs);
  auto lb = b.initLogitBias(static_cast<unsigned>(p.logit_bias.size()));
  for (unsigned i = 0; i < p.logit_bias.size(); ++i) {
    lb[i].setId(p.logit_bias[i].first);
    lb[i].setBias(p.logit_bias[i].second);
  }
  b.setMinTokens(p.min_tokens);
  set_list(b.initEndIds(p.end_ids.size()), p.end_ids);
}

sampling_params get(wire::SamplingParams::Reader r) {
  sampling_params p;
  p.temperature = r.getTemperature();
  p.top_k = r.getTopK();
  p.top_p = r.getTopP();
  p.min_p = r.getMinP();
  p.repetition_penalty = r.getRepetitionPenalty();
  p.repeat_window = r.getRepeatWindow();
  p.frequency_penalty = r.getFrequencyPenalty();
  p.presence_penalty = r.getPresencePenalty();
  p.seed = r.getSeed();
  p.max_tokens = r.getMaxTokens();
  p.stop_ids = to_vector<int32_t>(r.getStopIds());
  for (auto s : r.getStopStrings()) p.stop_strings.push_back(str(s));
  p.ignore_eos = r.getIgnoreEos();
  p.top_logprobs = r.getTopLogprobs();
  for (auto x : r.getLogitBias()) p.logit_bias.emplace_back(x.getId(), x.getBias());
  p.min_tokens = r.getMinTokens();
  p.end_ids = to_vector<int32_t>(r.getEndIds());
  return p;
}

void put(wire::Error::Builder b, const error_info& e) {
  b.setKind(to_wire(e.kind));
  b.setMessage(e.message);
  b.setField(e.field);
}

error_info get(wire::Error::Reader r) { return {from_wire(r.getKind()), str(r.getMessage()), str(r.getField())}; }

void put_logprobs(capnp::List<wire::TokenLogprob>::Builder b, const std::vector<token_logprob>& v) {
  for (unsigned i = 0; i < v.size(); ++i) {
    b[i].setId(v[i].id);
    b[i].setLogprob(v[i].logprob);
  }
}

std::vector<token_logprob> get_logprobs(capnp::List<wire::TokenLogprob>::Reader r) {
  std::vector<token_logprob> v;
  v.reserve(r.size());
  for (auto t : r) v.push_back({t.getId(), t.getLogprob()});
  return v;
}

void put_top(capnp::List<capnp::List<wire::TokenLogprob>>::Builder b,
             const std::vector<std::vector<token_logprob>>& v) {
  for (unsigned i = 0; i < v.size(); ++i) put_logprobs(b.init(i, v[i].size()), v[i]);
}

std::vector<std::vector<token_logprob>> get_top(capnp::List<capnp::List<wire::TokenLogprob>>::Reader r) {
  std::vector<std::vector<token_logprob>> v;
  for (auto inner : r) v.push_back(get_logprobs(inner));
  return v;
}

std::string to_bytes(capnp::MessageBuilder& b) {
  auto words = capnp::messageToFlatArray(b);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// ---- client messages ----------------------------------------------------------------------

void put(wire::Job::Builder b, const proto::job& j) {
  b.setProtocolVersion(proto::protocol_version);
  b.setClientRequestId(j.client_request_id);
  b.setModel(j.model);
  if (j.prompt_is_ids)
    set_list(b.getPrompt().initTokenIds(j.prompt_ids.size()), j.prompt_ids);
  else
    b.getPrompt().setText(j.prompt_text);
  put(b.initSampling(), j.sampling);
  b.setStream(j.stream);
  b.setPriority(j.priority);
  b.setApiKey(j.api_key);
}

proto::job get(wire::Job::Reader r) {
  proto::job j;
  j.client_request_id = str(r.getClientRequestId());
  j.model = str(r.getModel());
  if (r.getPrompt().isTokenIds()) {
    j.prompt_is_ids = true;
    j.prompt_ids = to_vector<int32_t>(r.getPrompt().getTokenIds());
  } else {
    j.prompt_text = str(r.getPrompt().getText());
  }
  j.sampling = get(r.getSampling());
  j.stream = r.getStream();
  j.priority = r.getPriority();
  j.api_key = str(r.getApiKey());
  return j;
}

// ---- the control plane ----------------------------------------------------------------------

void put(wire::StepPlan::Builder b, const step_plan& p) {
  b.setStepId(p.step_id);
  auto seqs = b.initSeqs(p.seqs.size());
  for (unsigned i = 0; i < p.seqs.size(); ++i) {
    const auto& w = p.seqs[i];
    auto s = seqs[i];
    s.setSeqId(w.seq_id);
    set_list(s.initTokens(w.tokens.size()), w.tokens);
    s.setStartPos(w.start_pos);
    set_list(s.initBlockTable(w.block_table.size()), w.block_table);
    s.setSample(w.sample);
    if (!w.diff) {  // a diff's sampling state is the worker's cached one
      put(s.initSampling(), w.sampling);
      set_list(s.initHistory(w.history.size()), w.history);
      s.setNPrompt(w.n_prompt);
    }
    s.setFeedLastSampled(w.feed_last_sampled);
    s.setDiff(w.diff);
  }
  if (!p.released.empty()) set_list(b.initReleased(p.released.size()), p.released);
  auto copies = [](auto list, const std::vector<block_copy>& v) {
    for (unsigned i = 0; i < v.size(); ++i) {
      list[i].setDeviceBlock(v[i].device_block);
      list[i].setHostSlot(v[i].host_slot);
    }
  };
  copies(b.initSwapOut(p.swap_out.size()), p.swap_out);
  copies(b.initSwapIn(p.swap_in.size()), p.swap_in);
}

std::vector<block_copy> get(capnp::List<wire::BlockCopy>::Reader list) {
  std::vector<block_copy> v;
  v.reserve(list.size());
  for (auto c : list) v.push_back({c.getDeviceBlock(), c.getHostSlot()});
  return v;
}

step_plan get(wire::StepPlan::Reader r) {
  step_plan p;
  p.step_id = r.getStepId();
  for (auto s : r.getSeqs()) {
    seq_work w;
    w.seq_id = s.getSeqId();
    w.tokens = to_vector<int32_t>(s.getTokens());
    w.start_pos = s.getStartPos();
    w.block_table = to_vector<int32_t>(s.getBlockTable());
    w.sample = s.getSample();
    w.diff = s.getDiff();
    if (!w.diff) {
      w.sampling = get(s.getSampling());
      w.history = to_vector<int32_t>(s.getHistory());
      w.n_prompt = s.getNPrompt();
    }
    w.feed_last_sampled = s.getFeedLastSampled();
    p.seqs.push_back(std::move(w));
  }
  p.released = to_vector<uint64_t>(r.getReleased());
  p.swap_out = get(r.getSwapOut());
  p.swap_in = get(r.getSwapIn());
  return p;
}

void put(wire::StepResult::Builder b, const proto::step_outcome& o) {
  b.setStepId(o.result.step_id);
  auto outs = b.initOutputs(o.result.outputs.size());
  for (unsigned i = 0; i < o.result.outputs.size(); ++i) {
    const auto& x = o.result.outputs[i];
    outs[i].setSeqId(x.seq_id);
    outs[i].setToken(x.token);
    outs[i].setLogprob(x.logprob);
    put_logprobs(outs[i].initTop(x.top.size()), x.top);
  }
  b.setError(o.error);
  set_list(b.initRejected(o.rejected.size()), o.rejected);
}

proto::step_outcome get(wire::StepResult::Reader r) {
  proto::step_outcome o;
  o.result.step_id = r.getStepId();
  for (auto x : r.getOutputs())
    o.result.outputs.push_back({x.getSeqId(), x.getToken(), x.getLogprob(), get_logprobs(x.getTop())});
  o.error = str(r.getError());
  o.rejected = to_vector<uint64_t>(r.getRejected());
  return o;
}

void put(wire::Request::Builder b, const request& q) {
  b.setId(q.id);
  b.setTenant(q.tenant);
  b.setModel(q.model);
  b.setPriority(q.priority);
  set_list(b.initPrompt(q.prompt.size()), q.prompt);
  put(b.initSampling(), q.sampling);
  set_list(b.initEosIds(q.eos_ids.size()), q.eos_ids);
}

request get(wire::Request::Reader r) {
  request q;
  q.id = r.getId();
  q.tenant = str(r.getTenant());
  q.model = str(r.getModel());
  q.priority = r.getPriority();
  q.prompt = to_vector<int32_t>(r.getPrompt());
  q.sampling = get(r.getSampling());
  q.eos_ids = to_vector<int32_t>(r.getEosIds());
  return q;
}

void put(wire::RequestEvents::Builder b, const proto::request_events& m) {
  auto evs = b.initEvents(m.events.size());
  for (unsigned i = 0; i < m.events.size(); ++i) {
    const auto& e = m.events[i].event;
    auto w = evs[i];
    w.setId(e.id);
    put_logprobs(w.initTokens(e.tokens.size()), e.tokens);
    put_top(w.initTop(e.top.size()), e.top);
    w.setFinished(to_wire(e.finished));
    w.setError(e.error);
    w.setQueueMs(m.events[i].queue_ms);
  }
}

proto::request_events get(wire::RequestEvents::Reader r) {
  proto::request_events m;
  for (auto w : r.getEvents()) {
    proto::job_event je;
    je.event.id = w.getId();
    je.event.tokens = get_logprobs(w.getTokens());
    je.event.top = get_top(w.getTop());
    je.event.finished = from_wire(w.getFinished());
    je.event.error = str(w.getError());
    je.queue_ms = w.getQueueMs();
    m.events.push_back(std::move(je));
  }
  return m;
}

// ---- decoding: bounds, alignment and the version check ----------------------------------------

// Copies `bytes` into word-aligned memory (a ZeroMQ frame need not be aligned) and
// hands a bounded reader of it to `fn`. Turns every Cap'n Proto complaint into
// troupe::error so that a bad frame fails one request, never the process.
template <class Root, class Fn>
auto read_message(std::string_view bytes, const limits& lim, Fn&& fn) {
  if (bytes.size() > lim.max_message_bytes)
    throw error(error_kind::failed,
                "message of " + std::to_string(bytes.size()) + " bytes exceeds the limit of " +
                    std::to_string(lim.max_message_bytes) + " bytes",
                "message");
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0)
    throw error(error_kind::failed,
                "not a Cap'n Proto message: " + std::to_string(bytes.size()) + " bytes is not a positive multiple of 8",
                "message");
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = 2 * words.size() + 64;  // a message cannot make us read it twice over
  opts.nestingLimit = lim.nesting_limit;
  try {
    capnp::FlatArrayMessageReader reader(words.asPtr(), opts);
    auto root = reader.getRoot<Root>();
    const uint32_t v = root.getProtocolVersion();
    if (v != proto::protocol_version)
      throw error(error_kind::failed,
                  "protocol version mismatch: the peer speaks version " + std::to_string(v) +
                      ", this build speaks version " + std::to_string(proto::protocol_version),
                  "protocolVersion");
    return fn(root);
  } catch (const kj::Exception& e) {
    throw error(error_kind::failed, std::string("not a valid Cap'n Proto message: ") + e.getDescription().cStr(),
                "message");
  }
}

[[noreturn]] void unknown_kind(const char* what) {
  throw error(error_kind::unimplemented, std::string("unknown ") + what + " kind (a newer peer?)", "message");
}

}  // namespace

// ---- public entry points ----------------------------------------------------------------------

std::string encode_with_version(const proto::client_message& m, uint32_t version) {
  capnp::MallocMessageBuilder b;
  auto root = b.initRoot<wire::ClientMessage>();
  root.setProtocolVersion(version);
  std::visit(overloaded{[&](const proto::job& j) { put(root.initSubmit(), j); },
                        [&](const proto::cancel_job& c) { root.initCancel().setClientRequestId(c.client_request_id); }},
             m);
  return to_bytes(b);
}

std::string encode(const proto::client_message& m) { return encode_with_version(m, proto::protocol_version); }

std::string encode(const proto::server_message& m) {
  capnp::MallocMessageBuilder b;
  auto root = b.initRoot<wire::ServerMessage>();
  root.setProtocolVersion(proto::protocol_version);
  std::visit(overloaded{[&](const proto::token_chunk& c) {
                          auto w = root.initChunk();
                          w.setJobId(c.job_id);
                          w.setClientRequestId(c.client_request_id);
                          w.setIndex(c.index);
                          set_list(w.initIds(c.ids.size()), c.ids);
                          w.setTextDelta(c.text_delta);
                          set_list(w.initLogprobs(c.logprobs.size()), c.logprobs);
                          put_top(w.initTopLogprobs(c.top.size()), c.top);
                        },
                        [&](const proto::job_done& d) {
                          auto w = root.initDone();
                          w.setJobId(d.job_id);
                          w.setClientRequestId(d.client_request_id);
                          w.setFinishReason(to_wire(d.reason));
                          w.setPromptTokens(d.prompt_tokens);
                          w.setCompletionTokens(d.completion_tokens);
                          w.setQueueMs(d.queue_ms);
                          w.setTtftMs(d.ttft_ms);
                          w.setTotalMs(d.total_ms);
                          w.setReason(d.detail);
                        },
                        [&](const proto::job_error& e) {
                          auto w = root.initError();
                          w.setJobId(e.job_id);
                          w.setClientRequestId(e.client_request_id);
                          put(w.initError(), e.error);
                        }},
             m);
  return to_bytes(b);
}

std::string encode(const proto::control_message& m) { return encode_with_version(m, proto::protocol_version); }

std::string encode_with_version(const proto::control_message& m, uint32_t version) {
  capnp::MallocMessageBuilder b;
  auto root = b.initRoot<wire::ControlMessage>();
  root.setProtocolVersion(version);
  std::visit(overloaded{[&](const proto::worker_registration& r) {
                          auto w = root.initRegistration();
                          w.setNode(r.node);
                          w.setDevice(r.device);
                          w.setModel(r.model);
                          w.setKvBlocks(r.kv_blocks);
                          w.setBlockSize(r.block_size);
                          w.setMaxBatch(r.max_batch);
                          w.setHostBlocks(r.host_blocks);
                          w.setPlanDiffs(r.plan_diffs);
                          w.setMaxStepTokens(r.max_step_tokens);
                        },
                        [&](const proto::registered& r) { root.initRegistered().setReplicaId(r.replica_id); },
                        [&](const proto::heartbeat& h) {
                          auto w = root.initHeartbeat();
                          w.setSeq(h.seq);
                          w.setGateway(h.gateway);
                          auto models = w.initReadyModels(static_cast<unsigned>(h.ready_models.size()));
                          for (unsigned i = 0; i < h.ready_models.size(); ++i) models.set(i, h.ready_models[i]);
                        },
                        [&](const step_plan& p) { put(root.initStepPlan(), p); },
                        [&](const proto::step_outcome& o) { put(root.initStepResult(), o); },
                        [&](const proto::drain& d) { root.initDrain().setDeadlineS(d.deadline_s); },
                        [&](const proto::shutdown& s) { root.initShutdown().setReason(s.reason); },
                        [&](const request& q) { put(root.initRequest(), q); },
                        [&](const proto::cancel_request& c) { root.initCancelRequest().setId(c.id); },
                        [&](const proto::request_events& e) { put(root.initEvents(), e); },
                        [&](const proto::request_rejected& r) {
                          auto w = root.initRejected();
                          w.setId(r.id);
                          put(w.initError(), r.error);
                        },
                        [&](const proto::peer_error& e) { put(root.initError(), e.error); }},
             m);
  return to_bytes(b);
}

proto::client_message decode_client(std::string_view bytes, const limits& lim) {
  return read_message<wire::ClientMessage>(bytes, lim, [](wire::ClientMessage::Reader r) -> proto::client_message {
    switch (r.which()) {
      case wire::ClientMessage::SUBMIT:
        return get(r.getSubmit());
      case wire::ClientMessage::CANCEL:
        return proto::cancel_job{str(r.getCancel().getClientRequestId())};
    }
    unknown_kind("client message");
  });
}

proto::server_message decode_server(std::string_view bytes, const limits& lim) {
  return read_message<wire::ServerMessage>(bytes, lim, [](wire::ServerMessage::Reader r) -> proto::server_message {
    switch (r.which()) {
      case wire::ServerMessage::CHUNK: {
        auto w = r.getChunk();
        proto::token_chunk c;
        c.job_id = w.getJobId();
        c.client_request_id = str(w.getClientRequestId());
        c.index = w.getIndex();
        c.ids = to_vector<int32_t>(w.getIds());
        c.text_delta = str(w.getTextDelta());
        c.logprobs = to_vector<float>(w.getLogprobs());
        c.top = get_top(w.getTopLogprobs());
        return c;
      }
      case wire::ServerMessage::DONE: {
        auto w = r.getDone();
        proto::job_done d;
        d.job_id = w.getJobId();
        d.client_request_id = str(w.getClientRequestId());
        d.reason = from_wire(w.getFinishReason());
        d.prompt_tokens = w.getPromptTokens();
        d.completion_tokens = w.getCompletionTokens();
        d.queue_ms = w.getQueueMs();
        d.ttft_ms = w.getTtftMs();
        d.total_ms = w.getTotalMs();
        d.detail = str(w.getReason());
        return d;
      }
      case wire::ServerMessage::ERROR: {
        auto w = r.getError();
        return proto::job_error{w.getJobId(), str(w.getClientRequestId()), get(w.getError())};
      }
    }
    unknown_kind("server message");
  });
}

proto::control_message decode_control(std::string_view bytes, const limits& lim) {
  return read_message<wire::ControlMessage>(bytes, lim, [](wire::ControlMessage::Reader r) -> proto::control_message {
    switch (r.which()) {
      case wire::ControlMessage::REGISTRATION: {
        auto w = r.getRegistration();
        return proto::worker_registration{str(w.getNode()),  str(w.getDevice()), str(w.getModel()),
                                          w.getKvBlocks(),   w.getBlockSize(),   w.getMaxBatch(),
                                          w.getHostBlocks(), w.getPlanDiffs(),   w.getMaxStepTokens()};
      }
      case wire::ControlMessage::REGISTERED:
        return proto::registered{r.getRegistered().getReplicaId()};
      case wire::ControlMessage::HEARTBEAT: {
        auto h = r.getHeartbeat();
        proto::heartbeat out{h.getSeq(), h.getGateway(), {}};
        for (auto m : h.getReadyModels()) out.ready_models.push_back(str(m));
        return out;
      }
      case wire::ControlMessage::STEP_PLAN:
        return get(r.getStepPlan());
      case wire::ControlMessage::STEP_RESULT:
        return get(r.getStepResult());
      case wire::ControlMessage::DRAIN:
        return proto::drain{r.getDrain().getDeadlineS()};
      case wire::ControlMessage::SHUTDOWN:
        return proto::shutdown{str(r.getShutdown().getReason())};
      case wire::ControlMessage::REQUEST:
        return get(r.getRequest());
      case wire::ControlMessage::CANCEL_REQUEST:
        return proto::cancel_request{r.getCancelRequest().getId()};
      case wire::ControlMessage::EVENTS:
        return get(r.getEvents());
      case wire::ControlMessage::REJECTED: {
        auto w = r.getRejected();
        return proto::request_rejected{w.getId(), get(w.getError())};
      }
      case wire::ControlMessage::ERROR: {
        return proto::peer_error{get(r.getError())};
      }
    }
    unknown_kind("control message");
  });
}

}  // namespace troupe::codec
