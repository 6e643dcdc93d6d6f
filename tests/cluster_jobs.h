// Greedy jobs against a real gateway, for the cluster's integration tests: one client
// (socket) and thread per job, and the check that every answer equals `troupe generate`.
#pragma once
#include <atomic>
#include <map>
#include <thread>

#include "actors/client.h"
#include "cluster_support.h"

namespace troupe::test {

inline const char* const base_prompts[] = {"Once upon a time", "The cat sat", "Lily and Ben went to the park",
                                           "One day, a little dog"};

inline std::string prompt_number(int i) {
  return std::string(base_prompts[i % 4]) + (i < 4 ? "" : " " + std::string(1, static_cast<char>('a' + i)));
}

inline troupe::proto::job greedy_job(const std::string& prompt, int max_tokens, const std::string& id) {
  troupe::proto::job j;
  j.client_request_id = id;
  j.prompt_text = prompt;
  j.sampling.max_tokens = max_tokens;
  return j;
}

// Runs `n` jobs, one client (socket) and one thread each; returns their results.
inline std::vector<troupe::actors::job_result> run_clients(const std::string& gateway, int n, int max_tokens,
                                                           std::atomic<int>* chunks = nullptr) {
  std::vector<troupe::actors::job_result> results(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      try {
        troupe::actors::gateway_client c(gateway);
        results[i] =
            troupe::actors::run_job(c, greedy_job(prompt_number(i % 8), max_tokens, "job-" + std::to_string(i)), 30000,
                                    [&](const troupe::proto::token_chunk&) {
                                      if (chunks) ++*chunks;
                                    });
      } catch (const std::exception& e) {
        results[i].error.message = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return results;
}

inline void expect_like_generate(const std::vector<troupe::actors::job_result>& results, int max_tokens,
                                 const std::string& generate_flags = "") {
  std::map<int, std::vector<int32_t>> reference;
  for (size_t i = 0; i < results.size(); ++i) {
    const int p = static_cast<int>(i % 8);
    if (!reference.count(p)) reference[p] = generate_ids(prompt_number(p), max_tokens, generate_flags);
    ASSERT_TRUE(results[i].ok) << "job " << i << ": " << results[i].error.message;
    EXPECT_FALSE(results[i].index_gap) << "job " << i << ": a token was lost or duplicated";
    EXPECT_EQ(results[i].ids, reference[p]) << "job " << i << " (" << prompt_number(p) << ")";
    EXPECT_EQ(results[i].done.completion_tokens, results[i].ids.size());
  }
}

}  // namespace troupe::test
