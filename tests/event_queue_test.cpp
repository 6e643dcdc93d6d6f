#include <gtest/gtest.h>

#include <vector>

#include "sim/event_queue.h"

TEST(EventQueue, RunsInTimeOrderAndTiesInScheduleOrder) {
  troupe::sim::event_queue q;
  std::vector<int> order;
  q.at(2.0, [&] { order.push_back(3); });
  q.at(1.0, [&] { order.push_back(1); });
  q.at(1.0, [&] { order.push_back(2); });
  q.at(1.0, [&] { q.after(0.5, [&] { order.push_back(25); }); });
  while (q.run_one()) {
  }
  EXPECT_EQ(order, (std::vector<int>{1, 2, 25, 3}));
  EXPECT_DOUBLE_EQ(q.now(), 2.0);
}

TEST(EventQueue, RunUntilStopsAtTheBoundAndAdvancesTheClock) {
  troupe::sim::event_queue q;
  int ran = 0;
  for (int i = 0; i < 10; ++i) q.at(i, [&] { ++ran; });
  EXPECT_EQ(q.run_until(4.0), 5u);
  EXPECT_EQ(ran, 5);
  EXPECT_EQ(q.size(), 5u);
  q.run_until(100.0);
  EXPECT_DOUBLE_EQ(q.now(), 100.0);
}
