// The scheduler and gateway cores without actors or sockets, on literal timestamps:
// cancellation frees the batch slot by the next step, a lost worker's sequences resume on
// another, stop strings end a job by text and cancel it at the scheduler.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <set>

#include "src/cluster/codec.h"
#include "src/cluster/gateway_core.h"
#include "src/cluster/scheduler_core.h"
#include "src/cluster/worker_core.h"
#include "test_support.h"
#include "scheduler_outbox.h"

using namespace troupe;
using troupe::test::find_all;

namespace {

sched::request long_request(uint64_t id) {
  sched::request q;
  q.id = id;
  q.prompt = {1, 2, 3};
  q.sampling.max_tokens = 100;
  q.sampling.ignore_eos = true;
  return q;
}

proto::control_message outcome(worker_backend& b, const step_plan& p) { return proto::step_outcome{b.step(p), ""}; }

}  // namespace

TEST(SchedulerCore, CancelFreesTheBatchSlotByTheNextStep) {
  scheduler_core s({});
  fixed_token_backend be(7);
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, /*max_batch=*/1}, 0.0);
  auto out = s.on_message("gw", long_request(1), 0.1);
  auto plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].second.seqs.at(0).seq_id, 1u);
  out = s.on_message("w1", outcome(be, plans[0].second), 0.2);
  plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  auto events = find_all<proto::request_events>(out);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].first, "gw");
  EXPECT_GE(events[0].second.events.at(0).queue_ms, 0.0);  // the first event reports the queue time

  EXPECT_TRUE(find_all<step_plan>(s.on_message("gw", long_request(2), 0.25)).empty());  // the slot is taken
  out = s.on_message("gw", proto::cancel_request{1}, 0.3);
  events = find_all<proto::request_events>(out);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].second.events.at(0).event.finished, sched::finish_reason::cancelled);
  // The step in flight (planned before the cancel) returns; the next one runs request 2.
  out = s.on_message("w1", outcome(be, plans[0].second), 0.4);
  plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  ASSERT_EQ(plans[0].second.seqs.size(), 1u);
  EXPECT_EQ(plans[0].second.seqs[0].seq_id, 2u);
}

TEST(SchedulerCore, LostWorkerSequencesResumeElsewhereWithoutRepeatingTokens) {
  scheduler_core s({});
  fixed_token_backend be(7);
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  s.on_message("w2", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  auto plans = find_all<step_plan>(s.on_message("gw", long_request(1), 0.1));
  ASSERT_EQ(plans.size(), 1u);
  const std::string first = plans[0].first;
  size_t tokens = 0;
  for (int step = 0; step < 3; ++step) {
    auto out = s.on_message(first, outcome(be, plans[0].second), 0.2 + step * 0.01);
    for (const auto& [peer, ev] : find_all<proto::request_events>(out)) tokens += ev.events.at(0).event.tokens.size();
    plans = find_all<step_plan>(out);
    ASSERT_EQ(plans.size(), 1u);
  }
  EXPECT_EQ(tokens, 3u);
  // The worker stops answering: after the heartbeat timeout it is removed and request 1
  // goes to the other worker with the 3 generated tokens in its history.
  const std::string other = first == "w1" ? "w2" : "w1";
  s.on_message(other, proto::heartbeat{1}, 2.5);
  auto out = s.on_tick(2.6);
  plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].first, other);
  const auto& w = plans[0].second.seqs.at(0);
  EXPECT_EQ(w.seq_id, 1u);
  EXPECT_EQ(w.start_pos + static_cast<int32_t>(w.tokens.size()), 3 + 3);  // prompt + generated, recomputed
  out = s.on_message(other, outcome(be, plans[0].second), 2.7);
  auto events = find_all<proto::request_events>(out);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].second.events.at(0).event.tokens.size(), 1u);  // only the new token
  EXPECT_EQ(s.replicas(), 1u);
}

// Two workers of two models: each request runs only on a worker of its model, and when the
// last worker of a model goes away its requests end with an error while the others run on.
TEST(SchedulerCore, RequestsRunOnWorkersOfTheirModelAndFailWhenTheLastOneGoes) {
  scheduler_core s({});
  fixed_token_backend be(7);
  s.on_message("w-llama", proto::worker_registration{"n", "cpu", "llama", 64, 16, 4}, 0.0);
  s.on_message("w-mistral", proto::worker_registration{"n", "cpu", "mistral", 64, 16, 4}, 0.0);
  std::map<std::string, std::set<uint64_t>> ran;  // worker -> request ids in its plans
  std::map<std::string, step_plan> in_flight;
  auto take = [&](const scheduler_core::outbox& out) {
    for (auto& [peer, plan] : find_all<step_plan>(out)) {
      for (const auto& w : plan.seqs) ran[peer].insert(w.seq_id);
      in_flight[peer] = plan;
    }
  };
  for (uint64_t id = 1; id <= 4; ++id) {
    auto q = long_request(id);
    q.model = id % 2 ? "llama" : "mistral";
    take(s.on_message("gw", q, 0.1));
  }
  for (int step = 0; step < 3; ++step)
    for (const std::string w : {"w-llama", "w-mistral"}) take(s.on_message(w, outcome(be, in_flight.at(w)), 0.2));
  EXPECT_EQ(ran["w-llama"], (std::set<uint64_t>{1, 3}));
  EXPECT_EQ(ran["w-mistral"], (std::set<uint64_t>{2, 4}));

  auto out = s.on_peer_gone("w-mistral", 0.5);
  std::set<uint64_t> failed;
  for (const auto& [peer, ev] : find_all<proto::request_events>(out))
    for (const auto& je : ev.events) {
      EXPECT_EQ(je.event.finished, sched::finish_reason::error);
      EXPECT_NE(je.event.error.find("mistral"), std::string::npos) << je.event.error;
      failed.insert(je.event.id);
    }
  EXPECT_EQ(failed, (std::set<uint64_t>{2, 4}));
  EXPECT_TRUE(find_all<step_plan>(out).empty()) << "nothing of mistral's moves to the llama worker";
  out = s.on_message("w-llama", outcome(be, in_flight.at("w-llama")), 0.6);
  auto plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].second.seqs.size(), 2u);  // 1 and 3 run on
  EXPECT_EQ(s.running() + s.queued(), 2u);
}

TEST(SchedulerCore, DisconnectedWorkerIsRemovedAtOnce) {
  scheduler_core s({});
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  EXPECT_EQ(s.replicas(), 1u);
  s.on_peer_gone("w1", 0.1);
  EXPECT_EQ(s.replicas(), 0u);
  auto out = s.on_message("w1", proto::heartbeat{3}, 0.2);
  ASSERT_EQ(find_all<proto::peer_error>(out).size(), 1u);  // told to register again
}

TEST(SchedulerCore, DrainedWorkerFinishesItsJobsThenGetsShutdown) {
  scheduler_core s({});
  fixed_token_backend be(7);
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  auto q = long_request(1);
  q.sampling.max_tokens = 3;
  auto plans = find_all<step_plan>(s.on_message("gw", q, 0.1));
  ASSERT_EQ(plans.size(), 1u);
  s.on_message("w2", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.15);
  // w1 asks to drain with its step in flight: no shutdown yet, and a new job goes to w2.
  auto out = s.on_message("w1", proto::drain{30.0}, 0.2);
  EXPECT_TRUE(find_all<proto::shutdown>(out).empty());
  auto q2 = long_request(2);
  q2.sampling.max_tokens = 3;
  out = s.on_message("gw", q2, 0.25);
  auto other = find_all<step_plan>(out);
  ASSERT_EQ(other.size(), 1u);
  EXPECT_EQ(other[0].first, "w2");
  // Job 1 runs to its end on w1, then w1 is told to shut down and removed.
  size_t tokens = 0;
  for (int step = 0; step < 5 && !plans.empty(); ++step) {
    out = s.on_message("w1", outcome(be, plans[0].second), 0.3 + 0.01 * step);
    for (const auto& [peer, ev] : find_all<proto::request_events>(out))
      for (const auto& e : ev.events)
        if (e.event.id == 1) tokens += e.event.tokens.size();
    plans = find_all<step_plan>(out);
    for (const auto& [peer, p] : plans) EXPECT_EQ(peer, "w1");
  }
  EXPECT_EQ(tokens, 3u);
  const auto down = find_all<proto::shutdown>(out);
  ASSERT_EQ(down.size(), 1u);
  EXPECT_EQ(down[0].first, "w1");
  EXPECT_EQ(s.replicas(), 1u);
}

TEST(SchedulerCore, DrainDeadlineMovesTheJobsElsewhere) {
  scheduler_core s({});
  fixed_token_backend be(7);
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  auto plans = find_all<step_plan>(s.on_message("gw", long_request(1), 0.1));
  ASSERT_EQ(plans.size(), 1u);
  s.on_message("w1", outcome(be, plans[0].second), 0.2);  // one token generated on w1
  s.on_message("w2", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.3);
  s.on_message("w1", proto::drain{1.0}, 0.4);
  EXPECT_TRUE(find_all<proto::shutdown>(s.on_tick(1.0)).empty());  // before the deadline
  s.on_message("w2", proto::heartbeat{1}, 1.4);
  auto out = s.on_tick(1.5);
  const auto down = find_all<proto::shutdown>(out);
  ASSERT_EQ(down.size(), 1u);
  EXPECT_EQ(down[0].first, "w1");
  plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].first, "w2");
  const auto& w = plans[0].second.seqs.at(0);
  EXPECT_EQ(w.start_pos + static_cast<int32_t>(w.tokens.size()), 3 + 1);  // resumes after its generated token
  EXPECT_EQ(s.replicas(), 1u);
}

TEST(SchedulerCore, DrainingTheLastWorkerQueuesNewJobsForTheNextOne) {
  scheduler_core s({});
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  auto out = s.on_message("w1", proto::drain{0.0}, 0.1);  // idle: shut down at once
  ASSERT_EQ(find_all<proto::shutdown>(out).size(), 1u);
  EXPECT_EQ(s.replicas(), 0u);
  // A job arriving while no worker is there waits (a restart is under way), not fails.
  out = s.on_message("gw", long_request(1), 0.2);
  EXPECT_TRUE(find_all<proto::request_events>(out).empty());
  EXPECT_EQ(s.queued(), 1u);
  out = s.on_message("w1b", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.3);
  const auto plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].first, "w1b");
}

namespace {

class GatewayCore : public ::testing::Test {
 protected:
  void SetUp() override {
    TROUPE_REQUIRE_MODELS();
    model_ = open_model((test::models_dir() / "stories260K" / "stories260K.gguf").string());
    tok_ = std::make_unique<tokenizer>(model_->tokenizer());
  }
  std::unique_ptr<model_file> model_;
  std::unique_ptr<tokenizer> tok_;
};

proto::server_message decode(const client_reply& r) { return r.message; }

}  // namespace

TEST_F(GatewayCore, StopStringEndsTheJobByTextAndCancelsItAtTheScheduler) {
  gateway_core g({}, {{"stories260K", tok_.get(), 128}});
  proto::job j;
  j.client_request_id = "s";
  j.prompt_text = "Once";
  j.sampling.stop_strings = {" there"};
  auto out = g.on_client_message("c1", j, 0.0);
  ASSERT_EQ(out.to_scheduler.size(), 1u);
  const auto q = std::get<sched::request>(out.to_scheduler[0]);
  EXPECT_EQ(q.eos_ids, std::vector<int32_t>{tok_->eos()});

  const auto ids = tok_->encode(" upon a time there was a cat", false);
  proto::request_events ev;
  for (int32_t id : ids) {
    proto::job_event je;
    je.event.id = q.id;
    je.event.tokens = {{id, -0.5f}};
    ev.events.push_back(je);
  }
  out = g.on_scheduler(ev, 0.5);
  std::string text;
  bool done = false;
  for (const auto& r : out.to_clients) {
    auto m = decode(r);
    if (auto* c = std::get_if<proto::token_chunk>(&m)) text += c->text_delta;
    if (auto* d = std::get_if<proto::job_done>(&m)) {
      done = true;
      EXPECT_EQ(d->reason, sched::finish_reason::stop);
    }
  }
  EXPECT_TRUE(done);
  incremental_detokenizer detok(*tok_);
  std::string full;
  for (int32_t id : ids) full += detok.feed(id);
  ASSERT_NE(full.find(" there"), std::string::npos) << full;
  EXPECT_EQ(text, full.substr(0, full.find(" there")));  // the stop string and what follows are never sent
  ASSERT_EQ(out.to_scheduler.size(), 1u);
  EXPECT_EQ(std::get<proto::cancel_request>(out.to_scheduler[0]).id, q.id);
  EXPECT_EQ(g.in_flight(), 0u);
}

TEST_F(GatewayCore, MaxTokensIsCutToTheContextAsGenerateDoes) {
  gateway_core g({}, {{"stories260K", tok_.get(), 128}});
  proto::job j;
  j.prompt_text = "Once upon a time";
  j.sampling.max_tokens = 1000;
  auto out = g.on_client_message("c1", j, 0.0);
  ASSERT_EQ(out.to_scheduler.size(), 1u);
  const auto q = std::get<sched::request>(out.to_scheduler[0]);
  EXPECT_EQ(q.sampling.max_tokens + static_cast<int32_t>(q.prompt.size()), 128);
}

TEST_F(GatewayCore, TheRequestNamesItsModel) {
  gateway_core g({}, {{"first", tok_.get(), 128}, {"second", tok_.get(), 128}});
  proto::job j;
  j.prompt_text = "Once";
  auto out = g.on_client_message("c1", j, 0.0);
  ASSERT_EQ(out.to_scheduler.size(), 1u);
  EXPECT_EQ(std::get<sched::request>(out.to_scheduler[0]).model, "first");  // the default
  j.model = "second";
  out = g.on_client_message("c1", j, 0.0);
  ASSERT_EQ(out.to_scheduler.size(), 1u);
  EXPECT_EQ(std::get<sched::request>(out.to_scheduler[0]).model, "second");
}

TEST_F(GatewayCore, ClientGoneCancelsItsJobsOnly) {
  gateway_core g({}, {{"stories260K", tok_.get(), 128}});
  proto::job j;
  j.prompt_text = "Once upon a time";
  g.on_client_message("c1", j, 0.0);
  g.on_client_message("c2", j, 0.0);
  auto out = g.on_client_gone("c1", 1.0);
  ASSERT_EQ(out.to_scheduler.size(), 1u);
  EXPECT_TRUE(out.to_clients.empty());
  EXPECT_EQ(g.in_flight(), 1u);
}

TEST(SchedulerCore, DisconnectedGatewayHasItsRequestsCancelled) {
  scheduler_core s({});
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 1}, 0.0);
  s.on_message("gw", long_request(1), 0.1);
  s.on_message("gw", long_request(2), 0.1);
  EXPECT_EQ(s.running() + s.queued(), 2u);
  auto out = s.on_peer_gone("gw", 0.2);
  EXPECT_TRUE(find_all<proto::request_events>(out).empty());
  EXPECT_EQ(s.running() + s.queued(), 0u);
}

// Several gateways on one scheduler each number their requests from 1: the scheduler scopes
// the ids by gateway, so two requests "1" run as two sequences and each gateway gets the
// tokens of its own under its own id.
TEST(SchedulerCore, TwoGatewaysWithTheSameRequestIdGetEachTheirOwnTokens) {
  scheduler_core s({});
  fixed_token_backend be(7);
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  auto request = [](int32_t max_tokens) {
    auto q = long_request(1);
    q.sampling.max_tokens = max_tokens;
    return q;
  };
  std::deque<step_plan> plans;
  auto take = [&](const scheduler_core::outbox& out) {
    for (auto& [peer, p] : find_all<step_plan>(out)) plans.push_back(p);
    return out;
  };
  std::map<std::string, std::vector<proto::job_event>> events;
  auto collect = [&](const scheduler_core::outbox& out) {
    for (auto& [peer, m] : find_all<proto::request_events>(out))
      for (auto& e : m.events) events[peer].push_back(e);
  };
  collect(take(s.on_message("gw-a#1", request(3), 0.1)));
  collect(take(s.on_message("gw-b#2", request(5), 0.1)));
  // The same id again from one gateway while it runs is refused; from the other it is not.
  auto dup = find_all<proto::request_rejected>(s.on_message("gw-a#1", request(3), 0.1));
  ASSERT_EQ(dup.size(), 1u);
  EXPECT_EQ(dup[0].second.id, 1u);
  EXPECT_EQ(s.running() + s.queued(), 2u);
  std::set<uint64_t> seqs;
  for (int step = 0; step < 20 && !plans.empty(); ++step) {
    step_plan p = plans.front();
    plans.pop_front();
    for (const auto& w : p.seqs) seqs.insert(w.seq_id);
    collect(take(s.on_message("w1", outcome(be, p), 0.2 + step * 0.01)));
  }
  EXPECT_EQ(seqs.size(), 2u);  // two sequences, not one request seen twice
  for (const auto& [peer, max_tokens] : std::map<std::string, size_t>{{"gw-a#1", 3}, {"gw-b#2", 5}}) {
    SCOPED_TRACE(peer);
    size_t tokens = 0;
    bool finished = false;
    for (const auto& e : events[peer]) {
      EXPECT_EQ(e.event.id, 1u);  // under the gateway's own id
      tokens += e.event.tokens.size();
      finished = finished || e.event.finished == sched::finish_reason::length;
    }
    EXPECT_EQ(tokens, max_tokens);
    EXPECT_TRUE(finished);
    EXPECT_EQ(s.requests_of(peer), 0u);
  }
  EXPECT_EQ(events.size(), 2u);  // nothing went to a worker or elsewhere
}

// A cancel is looked up under its sender: it ends that gateway's request of that id, never
// another gateway's request that happens to carry the same number, and one matching none
// of the sender's requests is ignored.
TEST(SchedulerCore, ACancelEndsOnlyTheSendersOwnRequest) {
  scheduler_core s({});
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  s.on_message("gw-a#1", long_request(1), 0.1);
  s.on_message("gw-a#1", long_request(2), 0.1);
  s.on_message("gw-b#2", long_request(1), 0.1);
  ASSERT_EQ(s.running() + s.queued(), 3u);

  auto out = s.on_message("gw-b#2", proto::cancel_request{1}, 0.2);
  auto events = find_all<proto::request_events>(out);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].first, "gw-b#2");
  ASSERT_EQ(events[0].second.events.size(), 1u);
  EXPECT_EQ(events[0].second.events[0].event.id, 1u);
  EXPECT_EQ(events[0].second.events[0].event.finished, sched::finish_reason::cancelled);
  EXPECT_EQ(s.requests_of("gw-b#2"), 0u);
  EXPECT_EQ(s.requests_of("gw-a#1"), 2u);

  // Request 2 exists only at gateway a: gateway b's cancel for it does nothing.
  out = s.on_message("gw-b#2", proto::cancel_request{2}, 0.3);
  EXPECT_TRUE(find_all<proto::request_events>(out).empty());
  EXPECT_EQ(s.requests_of("gw-a#1"), 2u);
  EXPECT_EQ(s.running() + s.queued(), 2u);
}

// Two gateways started with one --gateway-id: the second is refused with an error naming
// the field, instead of ZeroMQ dropping it without a word; once the first is gone the id
// is free again.
TEST(SchedulerCore, ASecondGatewayWithTheSameIdIsRefused) {
  EXPECT_EQ(scheduler_core::gateway_id_of("front#00ab"), "front");
  EXPECT_EQ(scheduler_core::gateway_id_of("a#b#c"), "a#b");
  EXPECT_EQ(scheduler_core::gateway_id_of("plain"), "plain");
  scheduler_core s({});
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 64, 16, 4}, 0.0);
  EXPECT_TRUE(find_all<proto::request_rejected>(s.on_message("front#aaaa", long_request(1), 0.1)).empty());
  auto refused = find_all<proto::request_rejected>(s.on_message("front#bbbb", long_request(1), 0.1));
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].first, "front#bbbb");
  EXPECT_EQ(refused[0].second.id, 1u);
  EXPECT_EQ(refused[0].second.error.field, "gateway_id");
  EXPECT_NE(refused[0].second.error.message.find("'front'"), std::string::npos) << refused[0].second.error.message;
  EXPECT_EQ(s.requests_of("front#bbbb"), 0u);
  EXPECT_EQ(s.requests_of("front#aaaa"), 1u);

  s.on_peer_gone("front#aaaa", 0.2);
  EXPECT_TRUE(find_all<proto::request_rejected>(s.on_message("front#bbbb", long_request(1), 0.3)).empty());
  EXPECT_EQ(s.requests_of("front#bbbb"), 1u);
}

TEST_F(GatewayCore, ApiKeyIsCheckedWhenConfigured) {
  gateway_options opts;
  opts.api_keys = {"secret"};
  gateway_core g(opts, {{"stories260K", tok_.get(), 128}});
  proto::job j;
  j.prompt_text = "Once";
  auto out = g.on_client_message("c1", j, 0.0);
  ASSERT_EQ(out.to_clients.size(), 1u);
  EXPECT_EQ(std::get<proto::job_error>(decode(out.to_clients[0])).error.field, "api_key");
  j.api_key = "secret";
  out = g.on_client_message("c1", j, 0.0);
  EXPECT_TRUE(out.to_clients.empty());
  EXPECT_EQ(out.to_scheduler.size(), 1u);
}

TEST_F(GatewayCore, ApiKeyNamesTheTenant) {
  proto::job j;
  j.prompt_text = "Once";
  auto tenant_of = [&](gateway_core& g, const std::string& key) {
    j.api_key = key;
    auto out = g.on_client_message("c1", j, 0.0);
    EXPECT_EQ(out.to_scheduler.size(), 1u) << key;
    return out.to_scheduler.empty() ? std::string("?") : std::get<sched::request>(out.to_scheduler[0]).tenant;
  };
  gateway_core open({}, {{"stories260K", tok_.get(), 128}});
  EXPECT_EQ(tenant_of(open, ""), "default");
  EXPECT_EQ(tenant_of(open, "team-a"), "team-a");
  gateway_options opts;
  opts.api_keys = {"k1=acme", "k2"};
  gateway_core closed(opts, {{"stories260K", tok_.get(), 128}});
  EXPECT_EQ(tenant_of(closed, "k1"), "acme");
  EXPECT_EQ(tenant_of(closed, "k2"), "k2");
}

TEST(SchedulerCore, CancelFreesTheKvBlocksByTheNextStep) {
  scheduler_core s({});
  fixed_token_backend be(7);
  // 8 blocks of 16 tokens: room for one 90-token prompt (6 blocks), not two.
  s.on_message("w1", proto::worker_registration{"n", "cpu", "m", 8, 16, 4}, 0.0);
  auto a = long_request(1), b = long_request(2);
  a.prompt.assign(90, 5);
  b.prompt.assign(90, 6);
  a.sampling.max_tokens = b.sampling.max_tokens = 20;
  auto plans = find_all<step_plan>(s.on_message("gw", a, 0.1));
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_TRUE(find_all<step_plan>(s.on_message("gw", b, 0.11)).empty());  // a step is in flight
  auto out = s.on_message("w1", outcome(be, plans[0].second), 0.2);
  plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  for (const auto& w : plans[0].second.seqs) EXPECT_EQ(w.seq_id, 1u) << "request 2 has no KV room yet";
  s.on_message("gw", proto::cancel_request{1}, 0.3);
  out = s.on_message("w1", outcome(be, plans[0].second), 0.4);
  plans = find_all<step_plan>(out);
  ASSERT_EQ(plans.size(), 1u);
  ASSERT_EQ(plans[0].second.seqs.size(), 1u);
  EXPECT_EQ(plans[0].second.seqs[0].seq_id, 2u);
}

// Async scheduling: the scheduler keeps two steps in flight on a worker; the worker core
// resolves each placeholder from its previous step; no token goes past max_tokens.
TEST(SchedulerCore, AsyncSchedulingKeepsTwoStepsInFlight) {
  scheduler_options o;
  o.policy.max_inflight_steps = 2;
  scheduler_core s(o);
  worker_core w(std::make_unique<fixed_token_backend>(7), {"n", "m", 4});
  s.on_message("w1", w.registration(), 0.0);
  auto q = long_request(1);
  q.sampling.max_tokens = 5;
  auto plans = find_all<step_plan>(s.on_message("gw", q, 0.1));
  ASSERT_EQ(plans.size(), 2u);  // the prompt, and a decode of the token it samples
  EXPECT_FALSE(plans[0].second.seqs.at(0).feed_last_sampled);
  EXPECT_TRUE(plans[1].second.seqs.at(0).feed_last_sampled);
  std::deque<step_plan> sent;
  for (auto& [peer, p] : plans) sent.push_back(p);
  std::vector<int32_t> tokens;
  bool done = false;
  double t = 0.2;
  while (!sent.empty()) {
    auto outcome = w.step(sent.front());  // in the order sent, as a worker's mailbox runs them
    sent.pop_front();
    ASSERT_TRUE(outcome.error.empty()) << outcome.error;
    auto out = s.on_message("w1", outcome, t += 0.01);
    for (const auto& [peer, ev] : find_all<proto::request_events>(out))
      for (const auto& je : ev.events) {
        EXPECT_FALSE(done) << "a token after the end";
        for (const auto& tok : je.event.tokens) tokens.push_back(tok.id);
        done = done || je.event.finished != sched::finish_reason::none;
      }
    for (auto& [peer, p] : find_all<step_plan>(out)) sent.push_back(p);
    ASSERT_LE(sent.size(), 2u);
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(tokens, std::vector<int32_t>(5, 7));
  EXPECT_EQ(s.running(), 0u);
}
