// Every wire message round-trips through src/cluster/codec.h, and bad bytes fail with a clear error.
#include <gtest/gtest.h>

#include "src/cluster/codec.h"

using namespace troupe;

namespace {

sampling_params some_sampling() {
  sampling_params s;
  s.temperature = 0.7f;
  s.top_k = 40;
  s.top_p = 0.9f;
  s.seed = 1234567890123ull;
  s.max_tokens = 17;
  s.stop_ids = {5, 6};
  s.stop_strings = {"The end", "\n\n"};
  s.top_logprobs = 2;
  return s;
}

}  // namespace

TEST(Codec, JobRoundTrips) {
  proto::job j;
  j.client_request_id = "req-1";
  j.model = "stories260K";
  j.prompt_text = "Once upon a time";
  j.sampling = some_sampling();
  j.stream = false;
  j.priority = 3;
  j.api_key = "k";
  auto got = std::get<proto::job>(codec::decode_client(codec::encode(proto::client_message{j})));
  EXPECT_EQ(got.client_request_id, "req-1");
  EXPECT_EQ(got.model, "stories260K");
  EXPECT_FALSE(got.prompt_is_ids);
  EXPECT_EQ(got.prompt_text, "Once upon a time");
  EXPECT_EQ(got.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(got.sampling.top_p, 0.9f);
  EXPECT_EQ(got.sampling.seed, 1234567890123ull);
  EXPECT_EQ(got.sampling.stop_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(got.sampling.stop_strings, (std::vector<std::string>{"The end", "\n\n"}));
  EXPECT_FALSE(got.stream);
  EXPECT_EQ(got.priority, 3);
  EXPECT_EQ(got.api_key, "k");

  j.prompt_is_ids = true;
  j.prompt_ids = {1, 2, 3};
  got = std::get<proto::job>(codec::decode_client(codec::encode(proto::client_message{j})));
  EXPECT_TRUE(got.prompt_is_ids);
  EXPECT_EQ(got.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
}

TEST(Codec, CancelRoundTrips) {
  auto got = codec::decode_client(codec::encode(proto::client_message{proto::cancel_job{"abc"}}));
  EXPECT_EQ(std::get<proto::cancel_job>(got).client_request_id, "abc");
}

TEST(Codec, ServerMessagesRoundTrip) {
  proto::token_chunk c{7, "r", 3, {10, 11}, "hi", {-0.5f, -1.5f}, {{{1, -0.1f}}, {{2, -0.2f}, {3, -0.3f}}}};
  auto c2 = std::get<proto::token_chunk>(codec::decode_server(codec::encode(proto::server_message{c})));
  EXPECT_EQ(c2.job_id, 7u);
  EXPECT_EQ(c2.index, 3u);
  EXPECT_EQ(c2.ids, c.ids);
  EXPECT_EQ(c2.text_delta, "hi");
  EXPECT_EQ(c2.logprobs, c.logprobs);
  ASSERT_EQ(c2.top.size(), 2u);
  EXPECT_EQ(c2.top[1][1].id, 3);

  proto::job_done d{7, "r", finish_reason::length, 4, 16, 1.5, 2.5, 9.5, "why"};
  auto d2 = std::get<proto::job_done>(codec::decode_server(codec::encode(proto::server_message{d})));
  EXPECT_EQ(d2.reason, finish_reason::length);
  EXPECT_EQ(d2.prompt_tokens, 4u);
  EXPECT_EQ(d2.completion_tokens, 16u);
  EXPECT_DOUBLE_EQ(d2.ttft_ms, 2.5);
  EXPECT_DOUBLE_EQ(d2.total_ms, 9.5);
  EXPECT_EQ(d2.detail, "why");

  proto::job_error e{0, "r", {error_kind::overloaded, "queue full", "queue"}};
  auto e2 = std::get<proto::job_error>(codec::decode_server(codec::encode(proto::server_message{e})));
  EXPECT_EQ(e2.error.kind, error_kind::overloaded);
  EXPECT_EQ(e2.error.message, "queue full");
  EXPECT_EQ(e2.error.field, "queue");
}

TEST(Codec, ControlMessagesRoundTrip) {
  auto rt = [](const proto::control_message& m) { return codec::decode_control(codec::encode(m)); };
  auto reg = std::get<proto::worker_registration>(rt(proto::worker_registration{"n1", "cpu", "m", 100, 16, 8}));
  EXPECT_EQ(reg.node, "n1");
  EXPECT_EQ(reg.kv_blocks, 100);
  EXPECT_EQ(reg.max_batch, 8);
  EXPECT_EQ(std::get<proto::registered>(rt(proto::registered{5})).replica_id, 5u);
  EXPECT_EQ(std::get<proto::heartbeat>(rt(proto::heartbeat{9})).seq, 9u);
  EXPECT_TRUE(std::holds_alternative<proto::drain>(rt(proto::drain{})));
  EXPECT_EQ(std::get<proto::drain>(rt(proto::drain{12.5})).deadline_s, 12.5);
  EXPECT_EQ(std::get<proto::shutdown>(rt(proto::shutdown{"bye"})).reason, "bye");

  step_plan p;
  p.step_id = 42;
  seq_work w;
  w.seq_id = 3;
  w.tokens = {1, 2};
  w.start_pos = 5;
  w.block_table = {0, 7};
  w.sample = false;
  w.sampling = some_sampling();
  w.history = {9, 9, 9};
  w.n_prompt = 2;
  p.seqs = {w, w};
  auto p2 = std::get<step_plan>(rt(p));
  EXPECT_EQ(p2.step_id, 42u);
  ASSERT_EQ(p2.seqs.size(), 2u);
  EXPECT_EQ(p2.seqs[1].tokens, w.tokens);
  EXPECT_EQ(p2.seqs[1].start_pos, 5);
  EXPECT_EQ(p2.seqs[1].block_table, w.block_table);
  EXPECT_FALSE(p2.seqs[1].sample);
  EXPECT_EQ(p2.seqs[1].history, w.history);
  EXPECT_EQ(p2.seqs[1].n_prompt, 2);
  EXPECT_EQ(p2.seqs[1].sampling.stop_strings, w.sampling.stop_strings);
  EXPECT_TRUE(p2.swap_out.empty());
  EXPECT_TRUE(p2.swap_in.empty());

  p.swap_out = {{7, 0}, {3, 12}};
  p.swap_in = {{5, 12}};
  p2 = std::get<step_plan>(rt(p));
  ASSERT_EQ(p2.swap_out.size(), 2u);
  EXPECT_EQ(p2.swap_out[1].device_block, 3);
  EXPECT_EQ(p2.swap_out[1].host_slot, 12);
  ASSERT_EQ(p2.swap_in.size(), 1u);
  EXPECT_EQ(p2.swap_in[0].device_block, 5);
  EXPECT_EQ(p2.swap_in[0].host_slot, 12);
  proto::worker_registration with_host{"n1", "cpu", "m", 100, 16, 8};
  with_host.host_blocks = 300;
  EXPECT_EQ(std::get<proto::worker_registration>(rt(with_host)).host_blocks, 300);
  EXPECT_EQ(reg.host_blocks, 0);

  proto::step_outcome o;
  o.result.step_id = 42;
  o.result.outputs = {{3, 17, -0.25f, {{17, -0.25f}}}};
  o.error = "";
  auto o2 = std::get<proto::step_outcome>(rt(o));
  ASSERT_EQ(o2.result.outputs.size(), 1u);
  EXPECT_EQ(o2.result.outputs[0].token, 17);
  EXPECT_EQ(o2.result.outputs[0].top[0].id, 17);

  request q;
  q.id = 11;
  q.tenant = "t";
  q.model = "stories260K";
  q.priority = -1;
  q.prompt = {1, 5, 6};
  q.sampling = some_sampling();
  q.eos_ids = {2};
  auto q2 = std::get<request>(rt(q));
  EXPECT_EQ(q2.id, 11u);
  EXPECT_EQ(q2.tenant, "t");
  EXPECT_EQ(q2.model, "stories260K");
  EXPECT_EQ(q2.prompt, q.prompt);
  EXPECT_EQ(q2.eos_ids, q.eos_ids);
  EXPECT_EQ(std::get<proto::cancel_request>(rt(proto::cancel_request{11})).id, 11u);

  proto::request_events ev;
  proto::job_event je;
  je.event.id = 11;
  je.event.tokens = {{4, -0.1f}, {5, -0.2f}};
  je.event.finished = finish_reason::stop;
  je.queue_ms = 3.0;
  ev.events = {je};
  auto ev2 = std::get<proto::request_events>(rt(ev));
  ASSERT_EQ(ev2.events.size(), 1u);
  EXPECT_EQ(ev2.events[0].event.tokens.size(), 2u);
  EXPECT_EQ(ev2.events[0].event.finished, finish_reason::stop);
  EXPECT_DOUBLE_EQ(ev2.events[0].queue_ms, 3.0);

  auto rj = std::get<proto::request_rejected>(rt(proto::request_rejected{11, {error_kind::overloaded, "full", "q"}}));
  EXPECT_EQ(rj.error.kind, error_kind::overloaded);
  EXPECT_EQ(rj.error.message, "full");
  auto pe = std::get<proto::peer_error>(rt(proto::peer_error{{error_kind::failed, "bad", "protocolVersion"}}));
  EXPECT_EQ(pe.error.field, "protocolVersion");
}

// Plans as diffs: a diff carries no sampling state, history or n_prompt, whatever the struct
// holds; the released ids and the registration's planDiffs cross intact.
TEST(Codec, DiffWorkAndReleasedIdsRoundTrip) {
  auto rt = [](const proto::control_message& m) { return codec::decode_control(codec::encode(m)); };
  step_plan p;
  p.step_id = 8;
  p.released = {4, 1ull << 40};
  seq_work w;
  w.seq_id = 3;
  w.tokens = {11};
  w.start_pos = 40;
  w.block_table = {9};
  w.sampling = some_sampling();
  w.history = {1, 2, 3};
  w.n_prompt = 2;
  w.diff = true;
  p.seqs = {w};
  const std::string bytes = codec::encode(proto::control_message{p});
  auto p2 = std::get<step_plan>(codec::decode_control(bytes));
  EXPECT_EQ(p2.released, p.released);
  ASSERT_EQ(p2.seqs.size(), 1u);
  EXPECT_TRUE(p2.seqs[0].diff);
  EXPECT_EQ(p2.seqs[0].tokens, w.tokens);
  EXPECT_EQ(p2.seqs[0].block_table, w.block_table);
  EXPECT_TRUE(p2.seqs[0].history.empty());
  EXPECT_EQ(p2.seqs[0].n_prompt, 0);
  EXPECT_EQ(p2.seqs[0].sampling.stop_strings, sampling_params{}.stop_strings);
  w.diff = false;
  p.seqs = {w};
  EXPECT_GT(codec::encode(proto::control_message{p}).size(), bytes.size());
  EXPECT_FALSE(std::get<step_plan>(rt(p)).seqs[0].diff);

  proto::worker_registration reg{"n1", "cpu", "m", 100, 16, 8};
  EXPECT_FALSE(std::get<proto::worker_registration>(rt(reg)).plan_diffs);  // as from an older worker
  reg.plan_diffs = true;
  EXPECT_TRUE(std::get<proto::worker_registration>(rt(reg)).plan_diffs);
}

TEST(Codec, WrongVersionNamesBothVersions) {
  auto bytes = codec::encode_with_version(proto::client_message{proto::cancel_job{"x"}}, 99);
  try {
    codec::decode_client(bytes);
    FAIL() << "accepted version 99";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::failed);
    EXPECT_EQ(e.field(), "protocolVersion");
    EXPECT_NE(std::string(e.what()).find("99"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("version 1"), std::string::npos) << e.what();
  }
}

TEST(Codec, GarbageIsRejectedWithAnError) {
  for (std::string bad : {std::string(), std::string("hello"), std::string("0123456789abcdef"), std::string(64, '\xff'),
                          std::string(8, '\0')}) {
    EXPECT_THROW(codec::decode_client(bad), error) << bad.size();
  }
}

TEST(Codec, OversizedMessageIsRejected) {
  proto::job j;
  j.prompt_text = std::string(4096, 'a');
  auto bytes = codec::encode(proto::client_message{j});
  codec::limits lim;
  lim.max_message_bytes = 1024;
  try {
    codec::decode_client(bytes, lim);
    FAIL();
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the limit"), std::string::npos) << e.what();
  }
}
