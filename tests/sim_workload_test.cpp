#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "sim/workload.h"
#include "troupe/error.h"

using namespace troupe::sim;

namespace {

std::filesystem::path temp_file(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("troupe_sim_wl_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir / name;
}

struct moments {
  double mean = 0, cv = 0;
};

moments of(const std::vector<double>& v) {
  double s = 0, s2 = 0;
  for (double x : v) s += x;
  const double m = s / v.size();
  for (double x : v) s2 += (x - m) * (x - m);
  return {m, std::sqrt(s2 / (v.size() - 1)) / m};
}

std::vector<double> gaps(const workload& w) {
  std::vector<double> out;
  double prev = 0;
  for (const auto& r : w.requests) {
    out.push_back(r.arrival - prev);
    prev = r.arrival;
  }
  return out;
}

}  // namespace

TEST(SimWorkload, PoissonMeanInterArrivalWithinFivePercent) {
  workload_spec s;
  s.arrivals.rate = 8.0;
  s.n_requests = 20000;
  const auto m = of(gaps(generate(s)));
  EXPECT_NEAR(m.mean, 1.0 / 8.0, 0.05 / 8.0);
  EXPECT_NEAR(m.cv, 1.0, 0.05);  // exponential gaps
}

TEST(SimWorkload, GammaHasTheAskedCoefficientOfVariation) {
  for (double cv : {0.5, 2.0}) {
    workload_spec s;
    s.arrivals.type = arrival_spec::kind::gamma;
    s.arrivals.rate = 3.0;
    s.arrivals.cv = cv;
    s.n_requests = 20000;
    s.seed = 11;
    const auto m = of(gaps(generate(s)));
    EXPECT_NEAR(m.mean, 1.0 / 3.0, 0.05 / 3.0) << "cv " << cv;
    EXPECT_NEAR(m.cv, cv, 0.05 * cv) << "cv " << cv;
  }
}

TEST(SimWorkload, LengthDistributionsHaveTheirMeansAndBounds) {
  std::mt19937_64 rng(5);
  const auto ln = parse_length_dist("lognormal:300:0.5", "prompt-len");
  std::vector<double> v;
  for (int i = 0; i < 20000; ++i) v.push_back(ln.sample(rng));
  EXPECT_NEAR(of(v).mean, 300, 0.05 * 300);
  const auto u = parse_length_dist("uniform:10:20", "prompt-len");
  for (int i = 0; i < 1000; ++i) {
    const int32_t x = u.sample(rng);
    ASSERT_GE(x, 10);
    ASSERT_LE(x, 20);
  }
  EXPECT_EQ(parse_length_dist("77", "output-len").sample(rng), 77);
  EXPECT_EQ(parse_length_dist("fixed:5", "output-len").mean(), 5);

  const auto path = temp_file("lengths.txt");
  {
    std::ofstream out(path);
    out << "# lengths\n3\n3\n9\n";
  }
  const auto e = parse_length_dist("empirical:" + path.string(), "prompt-len");
  EXPECT_DOUBLE_EQ(e.mean(), 5.0);
  for (int i = 0; i < 100; ++i) {
    const int32_t x = e.sample(rng);
    ASSERT_TRUE(x == 3 || x == 9);
  }
  try {
    parse_length_dist("lognormal:300", "prompt-len");
    FAIL();
  } catch (const troupe::error& err) {
    EXPECT_EQ(err.field(), "prompt-len");
  }
  EXPECT_THROW(parse_length_dist("zipf:3", "prompt-len"), troupe::error);
}

TEST(SimWorkload, TenantsShareArrivalsByWeight) {
  workload_spec s;
  s.tenants = parse_tenants("gold:3:2,free:1");
  ASSERT_EQ(s.tenants.size(), 2u);
  EXPECT_EQ(s.tenants[0].priority, 2);
  EXPECT_EQ(s.tenants[1].priority, 0);
  s.n_requests = 20000;
  const auto w = generate(s);
  double gold = 0;
  for (const auto& r : w.requests) gold += r.tenant == 0;
  EXPECT_NEAR(gold / 20000, 0.75, 0.02);
  EXPECT_THROW(parse_tenants("a:x"), troupe::error);
}

TEST(SimWorkload, SameSeedSameRequestsAndBoundsHold) {
  workload_spec s;
  s.prompt = parse_length_dist("lognormal:200:1", "p");
  s.n_requests = 0;
  s.duration = 50;
  s.arrivals.rate = 10;
  const auto a = generate(s), b = generate(s);
  ASSERT_EQ(a.requests.size(), b.requests.size());
  for (size_t i = 0; i < a.requests.size(); ++i) {
    ASSERT_EQ(a.requests[i].arrival, b.requests[i].arrival);
    ASSERT_EQ(a.requests[i].prompt_tokens, b.requests[i].prompt_tokens);
    ASSERT_EQ(a.requests[i].id, i);
  }
  EXPECT_LE(a.requests.back().arrival, 50.0);
  s.seed = 2;
  EXPECT_NE(generate(s).requests[0].arrival, a.requests[0].arrival);
  // Changing the lengths leaves the arrival times alone.
  s.seed = 1;
  s.prompt = parse_length_dist("fixed:10", "p");
  EXPECT_EQ(generate(s).requests[3].arrival, a.requests[3].arrival);
  s.arrivals.rate = 0;
  EXPECT_THROW(generate(s), troupe::error);
}

TEST(SimWorkload, BurstsArriveTogether) {
  workload_spec s;
  s.arrivals.rate = 1;
  s.arrivals.burst_period = 10;
  s.arrivals.burst_size = 50;
  s.duration = 35;
  s.n_requests = 0;
  const auto w = generate(s);
  int at_burst = 0;
  for (const auto& r : w.requests) at_burst += r.arrival == 10.0 || r.arrival == 20.0 || r.arrival == 30.0;
  EXPECT_EQ(at_burst, 150);
  for (size_t i = 1; i < w.requests.size(); ++i) ASSERT_LE(w.requests[i - 1].arrival, w.requests[i].arrival);
}

TEST(SimWorkload, TracesRoundTripAndReplaySorted) {
  workload_spec s;
  s.tenants = parse_tenants("a:1:1,b:1");
  s.n_requests = 100;
  const auto w = generate(s);
  for (const char* name : {"trace.csv", "trace.jsonl"}) {
    const auto path = temp_file(name);
    write_trace(path.string(), w);
    const auto back = read_trace(path.string());
    ASSERT_EQ(back.requests.size(), 100u) << name;
    EXPECT_NEAR(back.requests[42].arrival, w.requests[42].arrival, 1e-6);
    EXPECT_EQ(back.requests[42].output_tokens, w.requests[42].output_tokens);
    EXPECT_EQ(back.tenants[back.requests[42].tenant].name, w.tenants[w.requests[42].tenant].name);
  }
  const auto path = temp_file("unsorted.csv");
  {
    std::ofstream out(path);
    out << "tenant,arrival_s,prompt_tokens,output_tokens\nx,2.5,10,5\ny,0.5,20,6\n";
  }
  const auto t = read_trace(path.string());
  EXPECT_EQ(t.requests[0].prompt_tokens, 20);
  EXPECT_EQ(t.requests[0].id, 0u);
  EXPECT_EQ(t.tenants[t.requests[1].tenant].name, "x");
}
