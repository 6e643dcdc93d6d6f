// The policy driver on literal timestamps: it keeps each replica at most max_inflight_steps
// steps ahead, feeds results in plan order and drops stale ones, and routes events with the
// replica that produced them (or none, for cancels and removals).
#include <gtest/gtest.h>

#include <deque>
#include <map>

#include "src/sched/driver.h"
#include "tests/sched_test_support.h"

namespace troupe::sched::test {
namespace {

replica_info replica(uint32_t id, int64_t blocks = 64) {
  replica_info r;
  r.id = id;
  r.kv_blocks = blocks;
  r.block_size = 16;
  return r;
}

// Records what the driver hands over: plans per replica (oldest first) and events.
struct recording_sink final : driver_sink {
  std::map<uint32_t, std::deque<planned_step>> plans;
  struct routed {
    request_event event;
    std::optional<uint32_t> from;
  };
  std::vector<routed> events;
  fake_worker worker;

  void on_plan(uint32_t r, step_plan&& plan, double) override { plans[r].push_back({r, std::move(plan)}); }
  void on_events(std::vector<request_event>& evs, std::optional<uint32_t> from, double) override {
    worker.record(evs);
    for (auto& e : evs) events.push_back({std::move(e), from});
  }
  // Runs the replica's oldest plan on the fake worker.
  step_result run_oldest(uint32_t r) {
    auto ps = std::move(plans.at(r).front());
    plans.at(r).pop_front();
    return worker.run(ps);
  }
};

policy_config config(int32_t inflight) {
  policy_config cfg;
  cfg.max_inflight_steps = inflight;
  cfg.kv_watermark = 0;
  return cfg;
}

TEST(SchedDriver, PumpKeepsEachReplicaAtItsInflightLimit) {
  driver d(config(2));
  EXPECT_EQ(d.max_inflight_steps(), 2);
  d.add_replica(replica(0), 0.0);
  d.add_replica(replica(1), 0.0);
  recording_sink sink;
  for (uint64_t id = 1; id <= 4; ++id) ASSERT_TRUE(d.submit(make_request(id, 5, 8), 0.0).accepted);
  EXPECT_EQ(d.pump(0.0, sink), 4u);  // two steps ahead on each replica
  EXPECT_EQ(d.in_flight(0), 2u);
  EXPECT_EQ(d.in_flight(1), 2u);
  EXPECT_EQ(d.in_flight(), 4u);
  EXPECT_EQ(d.pump(0.0, sink), 0u);  // at the limit: nothing more
  EXPECT_FALSE(d.schedule(0, 0.0, sink));

  // One result frees one slot on that replica only.
  ASSERT_TRUE(d.on_result(0, sink.run_oldest(0), 0.1, sink));
  EXPECT_EQ(d.in_flight(0), 1u);
  EXPECT_EQ(d.pump(0.1, sink), 1u);
  EXPECT_EQ(d.in_flight(0), 2u);
  EXPECT_EQ(d.in_flight(1), 2u);
  EXPECT_EQ(d.policy().check_invariants(), "");
}

TEST(SchedDriver, RunsEveryRequestToItsEndWithOneStepInFlight) {
  driver d(config(1));
  d.add_replica(replica(0), 0.0);
  recording_sink sink;
  ASSERT_TRUE(d.submit(make_request(1, 20, 6), 0.0).accepted);
  ASSERT_TRUE(d.submit(make_request(2, 3, 4), 0.0).accepted);
  double t = 0;
  for (int i = 0; i < 100 && sink.worker.finished.size() < 2; ++i) {
    t += 0.01;
    d.pump(t, sink);
    ASSERT_EQ(d.in_flight(0), 1u) << "step " << i;
    ASSERT_TRUE(d.on_result(0, sink.run_oldest(0), t, sink));
  }
  EXPECT_EQ(sink.worker.streamed[1], expected_stream(1, 20, 6));
  EXPECT_EQ(sink.worker.streamed[2], expected_stream(2, 3, 4));
  EXPECT_EQ(sink.worker.finished[1], finish_reason::length);
  for (const auto& r : sink.events) EXPECT_EQ(r.from, std::optional<uint32_t>(0u));  // all from a step on 0
  EXPECT_EQ(d.pump(t, sink), 0u);
  EXPECT_EQ(d.in_flight(), 0u);
}

TEST(SchedDriver, StaleAndOutOfOrderResultsAreIgnored) {
  driver d(config(2));
  d.add_replica(replica(0), 0.0);
  recording_sink sink;
  ASSERT_TRUE(d.submit(make_request(1, 5, 8), 0.0).accepted);
  ASSERT_EQ(d.pump(0.0, sink), 2u);
  const step_result first = sink.run_oldest(0);
  const step_result second = sink.run_oldest(0);
  EXPECT_FALSE(d.on_result(0, second, 0.1, sink));  // not the oldest in flight
  EXPECT_FALSE(d.on_result(7, first, 0.1, sink));   // no such replica
  EXPECT_EQ(d.in_flight(0), 2u);
  EXPECT_TRUE(sink.events.empty());
  EXPECT_TRUE(d.on_result(0, first, 0.1, sink));
  EXPECT_TRUE(d.on_result(0, second, 0.2, sink));
  EXPECT_EQ(sink.worker.streamed[1], expected_stream(1, 5, 2));
  EXPECT_EQ(d.policy().check_invariants(), "");
}

TEST(SchedDriver, AMalformedResultChangesNothing) {
  driver d(config(1));
  d.add_replica(replica(0), 0.0);
  recording_sink sink;
  ASSERT_TRUE(d.submit(make_request(1, 5, 8), 0.0).accepted);
  ASSERT_EQ(d.pump(0.0, sink), 1u);
  step_result good = sink.run_oldest(0);
  step_result bad = good;
  bad.outputs.clear();
  EXPECT_THROW(d.on_result(0, bad, 0.1, sink), error);
  EXPECT_EQ(d.in_flight(0), 1u);  // still waiting for that step
  EXPECT_TRUE(d.on_result(0, good, 0.1, sink));
  EXPECT_EQ(d.in_flight(0), 0u);
}

TEST(SchedDriver, AFailedStepStopsCountingAndRemovalReroutesItsRequests) {
  driver d(config(1));
  d.add_replica(replica(0), 0.0);
  d.add_replica(replica(1), 0.0);
  recording_sink sink;
  ASSERT_TRUE(d.submit(make_request(1, 5, 3), 0.0).accepted);
  ASSERT_EQ(d.pump(0.0, sink), 1u);
  const uint32_t r = sink.plans.count(0) && !sink.plans[0].empty() ? 0 : 1;
  const uint64_t step = sink.plans[r].front().plan.step_id;
  EXPECT_FALSE(d.on_step_failed(r, step + 1));  // stale
  EXPECT_TRUE(d.on_step_failed(r, step));
  EXPECT_EQ(d.in_flight(r), 0u);
  sink.plans[r].clear();
  d.remove_replica(r, 0.1, sink);
  EXPECT_EQ(d.in_flight(r), 0u);
  EXPECT_FALSE(d.schedule(r, 0.1, sink));  // gone
  // The request is planned again on the replica left, from its prompt.
  ASSERT_EQ(d.pump(0.1, sink), 1u);
  const uint32_t other = 1 - r;
  ASSERT_EQ(sink.plans[other].size(), 1u);
  EXPECT_EQ(sink.plans[other].front().plan.seqs.at(0).seq_id, 1u);
  EXPECT_EQ(sink.plans[other].front().plan.seqs.at(0).start_pos, 0);
}

TEST(SchedDriver, EventsOutsideAStepComeFromNoReplica) {
  driver d(config(1));
  d.add_replica(replica(0), 0.0);
  d.add_replica(replica(1, 1), 0.0);  // one block: holds no request below
  recording_sink sink;
  ASSERT_TRUE(d.submit(make_request(1, 5, 40), 0.0).accepted);
  ASSERT_TRUE(d.submit(make_request(2, 5, 40), 0.0).accepted);
  ASSERT_EQ(d.pump(0.0, sink), 1u);
  ASSERT_EQ(sink.plans[0].size(), 1u);
  d.cancel(2, 0.05, sink);
  ASSERT_EQ(sink.events.size(), 1u);
  EXPECT_EQ(sink.events[0].event.id, 2u);
  EXPECT_EQ(sink.events[0].event.finished, finish_reason::cancelled);
  EXPECT_EQ(sink.events[0].from, std::nullopt);
  // Replica 0 goes away with request 1 in flight: nothing left can hold it, so it fails.
  d.remove_replica(0, 0.1, sink);
  ASSERT_EQ(sink.events.size(), 2u);
  EXPECT_EQ(sink.events[1].event.id, 1u);
  EXPECT_EQ(sink.events[1].event.finished, finish_reason::error);
  EXPECT_EQ(sink.events[1].from, std::nullopt);
  EXPECT_EQ(d.in_flight(), 0u);
  EXPECT_FALSE(d.on_result(0, sink.run_oldest(0), 0.2, sink));  // its answer comes too late
  EXPECT_EQ(sink.events.size(), 2u);
}

}  // namespace
}  // namespace troupe::sched::test
