// The control plane's negotiated limits and heartbeats, on the cores without actors or
// sockets (literal timestamps): a scheduler plans within each worker's own step budget, a
// plan a worker rejects fails only the sequences it names, limits it cannot honour refuse
// the worker, and the gateway and scheduler each notice the other's silence.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>

#include "src/cluster/gateway_core.h"
#include "src/cluster/scheduler_core.h"
#include "src/cluster/worker_core.h"
#include "src/model/tokenizer.h"
#include "scheduler_outbox.h"

using namespace troupe;
using troupe::test::find_all;

namespace {

// fixed_token_backend holding at most `budget` tokens per step, as a CPU backend built with
// --max-batch-tokens does.
class budget_backend : public fixed_token_backend {
 public:
  explicit budget_backend(int64_t budget) : fixed_token_backend(7), budget_(budget) {}
  int64_t max_step_tokens() const override { return budget_; }

 private:
  int64_t budget_;
};

sched::request prompt_of(uint64_t id, int32_t n_prompt, int32_t max_tokens) {
  sched::request q;
  q.id = id;
  for (int32_t i = 0; i < n_prompt; ++i)  // a prompt of its own: no prefix-cache hits between them
    q.prompt.push_back(static_cast<int32_t>((id * 131 + static_cast<uint64_t>(i) * 7) % 250 + 1));
  q.sampling.max_tokens = max_tokens;
  q.sampling.ignore_eos = true;
  return q;
}

scheduler_options with_step_tokens(int32_t n) {
  scheduler_options o;
  o.policy.max_step_tokens = n;
  o.policy.max_inflight_steps = 2;  // as troupe scheduler runs
  return o;
}

struct run_log {
  std::map<uint64_t, size_t> tokens;
  std::map<uint64_t, sched::finish_reason> finished;
  std::map<uint64_t, std::string> errors;
  std::vector<proto::step_outcome> outcomes;
  int64_t most_tokens_in_a_step = 0;
};

// Runs every plan the scheduler sends worker "w" on `worker`, in order, feeding the results
// back, until nothing is left to run.
run_log run_to_end(scheduler_core& s, worker_core& worker, scheduler_core::outbox out, double t) {
  run_log log;
  std::deque<step_plan> queued;
  auto take = [&](const scheduler_core::outbox& o) {
    for (auto& [peer, p] : find_all<step_plan>(o)) queued.push_back(p);
    for (auto& [peer, evs] : find_all<proto::request_events>(o))
      for (const auto& je : evs.events) {
        log.tokens[je.event.id] += je.event.tokens.size();
        if (je.event.finished != sched::finish_reason::none) {
          log.finished[je.event.id] = je.event.finished;
          if (!je.event.error.empty()) log.errors[je.event.id] = je.event.error;
        }
      }
  };
  take(out);
  for (int guard = 0; !queued.empty() && guard < 10000; ++guard) {
    step_plan p = std::move(queued.front());
    queued.pop_front();
    int64_t n = 0;
    for (const auto& w : p.seqs) n += static_cast<int64_t>(w.tokens.size());
    log.most_tokens_in_a_step = std::max(log.most_tokens_in_a_step, n);
    auto o = worker.step(p);
    log.outcomes.push_back(o);
    take(s.on_message("w", o, t += 0.001));
  }
  return log;
}

}  // namespace

// The mismatch: `troupe scheduler --max-step-tokens 2048` with a default worker (512)
// and six 200-token prompts. The worker reports its budget; every step fits it.
TEST(ControlPlane, TheSchedulerPlansWithinTheWorkersOwnStepBudget) {
  scheduler_core s(with_step_tokens(2048));
  worker_core worker(std::make_unique<budget_backend>(512), {"n", "m", 64});
  const auto reg = worker.registration();
  EXPECT_EQ(reg.max_step_tokens, 512);
  auto out = s.on_message("w", reg, 0.0);
  for (uint64_t id = 1; id <= 6; ++id) {
    auto more = s.on_message("gw", prompt_of(id, 200, 4), 0.01);
    out.insert(out.end(), more.begin(), more.end());
  }
  const auto log = run_to_end(s, worker, std::move(out), 0.02);
  EXPECT_LE(log.most_tokens_in_a_step, 512);
  for (const auto& o : log.outcomes) EXPECT_TRUE(o.error.empty()) << o.error;
  for (uint64_t id = 1; id <= 6; ++id) {
    EXPECT_EQ(log.finished.at(id), sched::finish_reason::length) << "request " << id;
    EXPECT_EQ(log.tokens.at(id), 4u) << "request " << id;
  }
  EXPECT_EQ(s.replicas(), 1u);
}

// A worker that reports no budget (an older one) but holds 512: the scheduler's first plan
// is over it. The worker rejects it naming the sequences past 512; only those fail, the
// replica stays and the other requests finish on it with all their tokens.
TEST(ControlPlane, APlanTheWorkerRejectsFailsOnlyTheSequencesItNames) {
  scheduler_core s(with_step_tokens(2048));
  worker_core worker(std::make_unique<budget_backend>(512), {"n", "m", 64});
  auto reg = worker.registration();
  reg.max_step_tokens = 0;  // not reported
  auto out = s.on_message("w", reg, 0.0);
  for (uint64_t id = 1; id <= 6; ++id) {
    auto more = s.on_message("gw", prompt_of(id, 200, 4), 0.01);
    out.insert(out.end(), more.begin(), more.end());
  }
  const auto log = run_to_end(s, worker, std::move(out), 0.02);
  auto failed = std::find_if(log.outcomes.begin(), log.outcomes.end(), [](const auto& o) { return !o.error.empty(); });
  ASSERT_NE(failed, log.outcomes.end()) << "no plan went over the worker's budget; most " << log.most_tokens_in_a_step;
  const auto& first = *failed;
  EXPECT_NE(first.error.find("more than this worker's step budget of 512"), std::string::npos) << first.error;
  ASSERT_FALSE(first.rejected.empty());
  // The scheduler knows no better than the policy's budget, so later plans may go over too:
  // each rejection names its own sequences.
  std::set<uint64_t> blamed;
  for (const auto& o : log.outcomes) blamed.insert(o.rejected.begin(), o.rejected.end());
  EXPECT_LT(blamed.size(), 6u) << "the sequences within the budget are not at fault";
  for (uint64_t id = 1; id <= 6; ++id) {
    if (blamed.count(id)) {
      EXPECT_EQ(log.finished.at(id), sched::finish_reason::error) << "request " << id;
      EXPECT_NE(log.errors.at(id).find("rejected this request's work"), std::string::npos) << log.errors.at(id);
    } else {
      EXPECT_EQ(log.finished.at(id), sched::finish_reason::length) << "request " << id;
      EXPECT_EQ(log.tokens.at(id), 4u) << "request " << id;
    }
  }
  EXPECT_EQ(s.replicas(), 1u) << "the replica was removed for a plan it rejected";
  // New work still runs there.
  const auto later = run_to_end(s, worker, s.on_message("gw", prompt_of(7, 100, 3), 1.0), 1.01);
  EXPECT_EQ(later.finished.at(7), sched::finish_reason::length);
  EXPECT_EQ(later.tokens.at(7), 3u);
}

TEST(ControlPlane, AWorkerWithLimitsTheSchedulerCannotHonourIsRefusedSayingWhich) {
  scheduler_core s({});
  auto out = s.on_message("w", proto::worker_registration{"n", "cpu", "m", 64, 16, 8, 0, true, -5}, 0.0);
  const auto errors = find_all<proto::peer_error>(out);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].second.error.field, "limits");
  EXPECT_NE(errors[0].second.error.message.find("max_step_tokens -5"), std::string::npos)
      << errors[0].second.error.message;
  EXPECT_EQ(s.replicas(), 0u);
  out = s.on_message("w2", proto::worker_registration{"n", "cpu", "m", 0, 16, 8}, 0.0);
  ASSERT_EQ(find_all<proto::peer_error>(out).size(), 1u);
  EXPECT_NE(find_all<proto::peer_error>(out)[0].second.error.message.find("kv_blocks 0"), std::string::npos);
}

TEST(ControlPlane, TheSchedulerAnswersHeartbeatsOfWhomItKnows) {
  scheduler_core s({});
  // A gateway needs no registration.
  auto out = s.on_message("front#1", proto::heartbeat{1, true}, 0.0);
  ASSERT_EQ(find_all<proto::heartbeat>(out).size(), 1u);
  EXPECT_FALSE(find_all<proto::heartbeat>(out)[0].second.gateway);
  // A worker it does not know is asked to register.
  out = s.on_message("w", proto::heartbeat{1, false}, 0.0);
  ASSERT_EQ(find_all<proto::peer_error>(out).size(), 1u);
  EXPECT_EQ(find_all<proto::peer_error>(out)[0].second.error.field, "registration");
  s.on_message("w", proto::worker_registration{"n", "cpu", "m", 64, 16, 8}, 0.0);
  out = s.on_message("w", proto::heartbeat{2, false}, 0.1);
  ASSERT_EQ(find_all<proto::heartbeat>(out).size(), 1u);
  EXPECT_EQ(find_all<proto::heartbeat>(out)[0].second.seq, 2u);
  // A second gateway with the same id is refused on its heartbeat already.
  out = s.on_message("front#2", proto::heartbeat{1, true}, 0.1);
  ASSERT_EQ(find_all<proto::peer_error>(out).size(), 1u);
  EXPECT_EQ(find_all<proto::peer_error>(out)[0].second.error.field, "gateway_id");
}

TEST(ControlPlane, AGatewayThatFallsSilentHasItsRequestsCancelled) {
  scheduler_options o;
  o.gateway_timeout_s = 2.0;
  o.heartbeat_timeout_s = 100;  // the worker below sends none
  scheduler_core s(o);
  s.on_message("w", proto::worker_registration{"n", "cpu", "m", 64, 16, 8}, 0.0);
  s.on_message("front#1", proto::heartbeat{1, true}, 0.0);
  s.on_message("front#1", prompt_of(1, 10, 100), 0.1);
  s.on_message("other#1", prompt_of(1, 10, 100), 0.1);  // sends no heartbeats: never timed out
  EXPECT_EQ(s.requests_of("front#1"), 1u);
  s.on_tick(1.5);
  EXPECT_EQ(s.requests_of("front#1"), 1u);
  s.on_tick(2.2);  // 2.2 s after its last heartbeat
  EXPECT_EQ(s.requests_of("front#1"), 0u);
  EXPECT_EQ(s.requests_of("other#1"), 1u);
  // It comes back (it was only stopped): its id is its own again.
  auto out = s.on_message("front#1", proto::heartbeat{2, true}, 3.0);
  EXPECT_EQ(find_all<proto::heartbeat>(out).size(), 1u);
}

TEST(ControlPlane, TheGatewayEndsItsJobsWhenTheSchedulerFallsSilentAndResumesWhenItAnswers) {
  const tokenizer tok(byte_vocabulary());
  gateway_options go;
  go.scheduler_timeout_s = 2.0;
  gateway_core g(go, {{"m", &tok, 0}});
  auto out = g.on_tick(0.0);
  ASSERT_EQ(out.to_scheduler.size(), 1u);
  const auto* hb = std::get_if<proto::heartbeat>(&out.to_scheduler[0]);
  ASSERT_NE(hb, nullptr);
  EXPECT_TRUE(hb->gateway);
  proto::job j;
  j.client_request_id = "a";
  j.prompt_text = "hello";
  out = g.on_client_message("c1", j, 0.1);
  ASSERT_EQ(out.to_scheduler.size(), 1u);
  EXPECT_EQ(g.in_flight(), 1u);
  g.on_scheduler(proto::heartbeat{1, false}, 0.5);
  EXPECT_TRUE(g.on_tick(2.4).to_clients.empty());  // 1.9 s since the scheduler's last word

  out = g.on_tick(2.6);
  EXPECT_FALSE(g.scheduler_reachable());
  EXPECT_EQ(g.in_flight(), 0u);
  ASSERT_EQ(out.to_clients.size(), 1u);
  const auto* err = std::get_if<proto::job_error>(&out.to_clients[0].message);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(err->client_request_id, "a");
  EXPECT_EQ(err->error.kind, error_kind::disconnected);
  EXPECT_EQ(err->error.field, "scheduler");
  EXPECT_NE(err->error.message.find("scheduler stopped answering"), std::string::npos) << err->error.message;

  // New jobs get overloaded at once while it is silent.
  j.client_request_id = "b";
  out = g.on_client_message("c1", j, 2.7);
  EXPECT_TRUE(out.to_scheduler.empty());
  ASSERT_EQ(out.to_clients.size(), 1u);
  err = std::get_if<proto::job_error>(&out.to_clients[0].message);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(err->error.kind, error_kind::overloaded);
  EXPECT_EQ(err->error.field, "scheduler");

  // It answers again (a restarted scheduler too: a gateway needs no registration): jobs flow.
  g.on_scheduler(proto::heartbeat{9, false}, 5.0);
  EXPECT_TRUE(g.scheduler_reachable());
  j.client_request_id = "c";
  out = g.on_client_message("c1", j, 5.1);
  EXPECT_EQ(out.to_scheduler.size(), 1u);
  EXPECT_EQ(g.in_flight(), 1u);
}

TEST(ControlPlane, APlanOverTheBackendsLimitsNamesTheSequencesAtFault) {
  worker_core worker(std::make_unique<budget_backend>(10), {"n", "m", 64});
  step_plan p;
  p.step_id = 3;
  for (uint64_t id = 1; id <= 3; ++id) {
    seq_work w;
    w.seq_id = id;
    w.tokens.assign(4, 1);
    w.block_table = {0};
    p.seqs.push_back(w);
  }
  const auto o = worker.step(p);
  EXPECT_NE(o.error.find("step 3: 12 tokens"), std::string::npos) << o.error;
  EXPECT_EQ(o.rejected, (std::vector<uint64_t>{3}));  // 4 + 4 fit, the third crosses 10
}
