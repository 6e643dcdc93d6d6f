// CAF 0.17 runs under C++20 in this build: spawn an actor and get its answer.
#include <gtest/gtest.h>

#include <caf/all.hpp>

#include "actors/actor_system.h"

TEST(ActorSystem, SpawnsAndAnswers) {
  troupe::actors::process_runtime rt({.worker_threads = 2});
  auto doubler = rt.system().spawn([]() -> caf::behavior { return {[](int x) { return x * 2; }}; });
  caf::scoped_actor self{rt.system()};
  int got = 0;
  self->request(doubler, std::chrono::seconds(5), 21)
      .receive([&](int r) { got = r; }, [&](caf::error& e) { FAIL() << to_string(e); });
  EXPECT_EQ(got, 42);
  self->send_exit(doubler, caf::exit_reason::user_shutdown);
}
