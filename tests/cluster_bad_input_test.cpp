// Bad input over real sockets: each bad message gets a clear error to its sender only, and
// the server keeps serving everyone else. Also the bounded queue (overloaded at once) and a
// client's cancel. One in-process cluster (gateway, scheduler, one CPU worker) per test.
#include <gtest/gtest.h>

#include <zmq.hpp>

#include "actors/client.h"
#include "actors/components.h"
#include "kernels/ref/ref.h"
#include "src/cluster/codec.h"
#include "src/engine/cpu_backend.h"
#include "test_support.h"

using namespace troupe;

namespace {

class BadInput : public ::testing::Test {
 protected:
  void start(size_t max_queue = 64, int32_t max_batch = 64) {
    model_ = open_model((test::models_dir() / "stories260K" / "stories260K.gguf").string());
    tok_ = std::make_unique<tokenizer>(model_->tokenizer());
    for (const auto& v : kern::ref::variants()) registry_.add(v);
    actors::transport_options t;
    t.max_message_bytes = 64 << 10;
    node_ = std::make_unique<actors::node>(actors::actor_system_options{.worker_threads = 2}, t);
    node_->add_scheduler("inproc://bad-input", {});
    cpu_backend_options bo;
    bo.kv_bytes = 8 << 20;
    actors::worker_options wo;
    wo.identity = {"test", "stories260K", max_batch};
    node_->add_worker("inproc://bad-input", "w0", std::make_unique<cpu_backend>(*model_, registry_, bo), wo);
    gateway_options go;
    go.max_queue = max_queue;
    go.limits.max_message_bytes = t.max_message_bytes;
    endpoint_ = node_->add_gateway("tcp://127.0.0.1:*", "inproc://bad-input", go,
                                   {{"stories260K", tok_.get(), model_->config().max_seq_len}});
  }
  void TearDown() override { node_.reset(); }

  static proto::job good_job(const std::string& id = "good") {
    proto::job j;
    j.client_request_id = id;
    j.prompt_text = "Once upon a time";
    j.sampling.max_tokens = 8;
    return j;
  }

  // The answer to one frame: must be an error; returns it.
  proto::job_error expect_error(actors::gateway_client& c) {
    auto m = c.receive(10000);
    EXPECT_TRUE(m.has_value()) << "no answer";
    if (!m) return {};
    EXPECT_TRUE(std::holds_alternative<proto::job_error>(*m)) << "expected an error";
    return std::holds_alternative<proto::job_error>(*m) ? std::get<proto::job_error>(*m) : proto::job_error{};
  }

  // Another client is still served, and so is the offending one.
  void expect_still_serving(actors::gateway_client& offender) {
    actors::gateway_client other(endpoint_);
    auto r = actors::run_job(other, good_job(), 10000);
    EXPECT_TRUE(r.ok) << r.error.message;
    EXPECT_EQ(r.ids.size(), 8u);
    auto again = actors::run_job(offender, good_job("again"), 10000);
    EXPECT_TRUE(again.ok) << again.error.message;
  }

  proto::job_error submit_bad(const proto::job& j) {
    actors::gateway_client c(endpoint_);
    c.submit(j);
    auto e = expect_error(c);
    EXPECT_EQ(e.client_request_id, j.client_request_id);
    expect_still_serving(c);
    return e;
  }

  std::unique_ptr<model_file> model_;
  std::unique_ptr<tokenizer> tok_;
  kernel_registry registry_;
  std::unique_ptr<actors::node> node_;
  std::string endpoint_;
};

}  // namespace

TEST_F(BadInput, MalformedFrame) {
  TROUPE_REQUIRE_MODELS();
  start();
  actors::gateway_client c(endpoint_);
  c.send_frames({"one", "two", "three"});
  auto e = expect_error(c);
  EXPECT_EQ(e.error.kind, error_kind::failed);
  EXPECT_NE(e.error.message.find("malformed"), std::string::npos) << e.error.message;
  expect_still_serving(c);
}

TEST_F(BadInput, BytesThatAreNotCapnProto) {
  TROUPE_REQUIRE_MODELS();
  start();
  actors::gateway_client c(endpoint_);
  c.send_frames({"GET / HTTP/1.1\r\n\r\n"});
  auto e = expect_error(c);
  EXPECT_NE(e.error.message.find("not a"), std::string::npos) << e.error.message;
  EXPECT_EQ(e.error.field, "message");
  c.send_frames({std::string(64, '\xee')});
  e = expect_error(c);
  EXPECT_NE(e.error.message.find("Cap'n Proto"), std::string::npos) << e.error.message;
  expect_still_serving(c);
}

TEST_F(BadInput, WrongProtocolVersion) {
  TROUPE_REQUIRE_MODELS();
  start();
  actors::gateway_client c(endpoint_);
  c.send_frames({codec::encode_with_version(proto::client_message{good_job()}, 7)});
  auto e = expect_error(c);
  EXPECT_EQ(e.error.kind, error_kind::failed);
  EXPECT_EQ(e.error.field, "protocolVersion");
  EXPECT_NE(e.error.message.find("version 7"), std::string::npos) << e.error.message;
  EXPECT_NE(e.error.message.find("version 1"), std::string::npos) << e.error.message;
  expect_still_serving(c);
}

TEST_F(BadInput, UnknownModel) {
  TROUPE_REQUIRE_MODELS();
  start();
  auto j = good_job("m");
  j.model = "gpt-17";
  auto e = submit_bad(j);
  EXPECT_EQ(e.error.field, "model");
  EXPECT_NE(e.error.message.find("gpt-17"), std::string::npos) << e.error.message;
}

TEST_F(BadInput, PromptLongerThanTheContext) {
  TROUPE_REQUIRE_MODELS();
  start();
  auto j = good_job("long");
  j.prompt_text.clear();
  for (int i = 0; i < 100; ++i) j.prompt_text += "Once upon a time ";
  auto e = submit_bad(j);
  EXPECT_EQ(e.error.field, "prompt");
  EXPECT_NE(e.error.message.find("context"), std::string::npos) << e.error.message;
}

TEST_F(BadInput, MaxTokensNotPositive) {
  TROUPE_REQUIRE_MODELS();
  start();
  for (int n : {0, -5}) {
    auto j = good_job("mt");
    j.sampling.max_tokens = n;
    EXPECT_EQ(submit_bad(j).error.field, "max_tokens");
  }
}

TEST_F(BadInput, NegativeTemperature) {
  TROUPE_REQUIRE_MODELS();
  start();
  auto j = good_job("t");
  j.sampling.temperature = -0.5f;
  EXPECT_EQ(submit_bad(j).error.field, "temperature");
}

TEST_F(BadInput, TopPOutsideZeroOne) {
  TROUPE_REQUIRE_MODELS();
  start();
  for (float p : {0.0f, 1.5f, -1.0f}) {
    auto j = good_job("p");
    j.sampling.top_p = p;
    EXPECT_EQ(submit_bad(j).error.field, "top_p") << p;
  }
}

TEST_F(BadInput, OversizedMessage) {
  TROUPE_REQUIRE_MODELS();
  start();
  actors::gateway_client c(endpoint_);
  auto j = good_job("big");
  j.prompt_text = std::string(200 << 10, 'a');  // over the 64 KiB limit set above
  c.submit(j);
  auto e = expect_error(c);
  EXPECT_NE(e.error.message.find("exceeds the limit"), std::string::npos) << e.error.message;
  expect_still_serving(c);
}

TEST_F(BadInput, FullQueueIsOverloadedAtOnce) {
  TROUPE_REQUIRE_MODELS();
  start(/*max_queue=*/2, /*max_batch=*/1);
  actors::gateway_client c(endpoint_);
  for (int i = 0; i < 3; ++i) {
    auto j = good_job("q" + std::to_string(i));
    j.sampling.max_tokens = 100;
    j.sampling.ignore_eos = true;
    c.submit(j);
  }
  std::map<std::string, actors::job_result> results;
  while (results.size() < 3 || !results["q0"].ok || !results["q1"].ok) {
    auto m = c.receive(10000);
    ASSERT_TRUE(m.has_value());
    const std::string id = std::visit([](const auto& x) { return x.client_request_id; }, *m);
    actors::apply_message(results[id], *m);
  }
  EXPECT_FALSE(results["q2"].ok);
  EXPECT_EQ(results["q2"].error.kind, error_kind::overloaded);
  EXPECT_EQ(results["q2"].error.field, "queue");
  EXPECT_TRUE(results["q0"].ok);
  EXPECT_TRUE(results["q1"].ok);
}

TEST_F(BadInput, ClientCancelEndsTheJobAsCancelled) {
  TROUPE_REQUIRE_MODELS();
  start();
  actors::gateway_client c(endpoint_);
  auto j = good_job("c");
  j.sampling.max_tokens = 120;
  j.sampling.ignore_eos = true;
  c.submit(j);
  actors::job_result r;
  auto first = c.receive(10000);
  ASSERT_TRUE(first.has_value());
  actors::apply_message(r, *first);
  c.cancel("c");
  for (;;) {
    auto m = c.receive(10000);
    ASSERT_TRUE(m.has_value());
    if (actors::apply_message(r, *m)) break;
  }
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.done.reason, sched::finish_reason::cancelled);
  EXPECT_LT(r.ids.size(), 120u);
  expect_still_serving(c);
}

TEST(ControlPlane, AWorkerOfAnotherProtocolVersionIsToldBothVersions) {
  actors::node n({.worker_threads = 1}, {});
  const std::string endpoint = n.add_scheduler("tcp://127.0.0.1:*", {});
  zmq::context_t ctx;
  zmq::socket_t worker(ctx, zmq::socket_type::dealer);
  worker.set(zmq::sockopt::routing_id, "old-worker");
  worker.connect(endpoint);
  const auto bytes = codec::encode_with_version(proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 2);
  worker.send(zmq::buffer(bytes));
  zmq::pollitem_t item{worker.handle(), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(10000)), 1);
  zmq::message_t reply;
  ASSERT_TRUE(worker.recv(reply));
  auto m = codec::decode_control(std::string_view(static_cast<const char*>(reply.data()), reply.size()));
  ASSERT_TRUE(std::holds_alternative<proto::peer_error>(m));
  const auto& e = std::get<proto::peer_error>(m);
  EXPECT_EQ(e.error.kind, error_kind::failed);
  EXPECT_EQ(e.error.field, "protocolVersion");
  EXPECT_NE(e.error.message.find("version 2"), std::string::npos) << e.error.message;
  EXPECT_NE(e.error.message.find("version 1"), std::string::npos) << e.error.message;
}
