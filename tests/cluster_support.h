// Helpers for the cluster's integration tests: free loopback ports, troupe processes started
// in the background with their output in a temp file, and `troupe generate` references.
#pragma once
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

namespace troupe::test {

inline std::string model_path() { return (models_dir() / "stories260K" / "stories260K.gguf").string(); }

// A port nobody listens on now (the kernel's pick for port 0).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

inline std::string tcp(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A troupe process in the background; killed (SIGKILL) when destroyed if still running.
class child_process {
 public:
  // Runs `troupe args...`; with `netns`, inside that network namespace (ip netns exec,
  // which execs the command in place: the pid is troupe's).
  child_process(const std::vector<std::string>& args, const std::filesystem::path& log, const std::string& netns = {})
      : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      std::string bin = troupe_bin();
      std::string ip = "ip", netns_word = "netns", exec_word = "exec", ns = netns;
      if (!netns.empty())
        for (auto* w : {&ip, &netns_word, &exec_word, &ns}) argv.push_back(w->data());
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      FILE* f = std::freopen(log.c_str(), "w", stdout);
      (void)f;
      ::dup2(STDOUT_FILENO, STDERR_FILENO);
      if (netns.empty())
        ::execv(bin.c_str(), argv.data());
      else
        ::execvp("ip", argv.data());
      ::_exit(127);
    }
  }
  ~child_process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  void signal(int sig) { ::kill(pid_, sig); }
  // Waits for the exit; returns the exit code (-1 on timeout or a signal).
  int wait(double timeout_s) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < end) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  // Waits until the log contains `text`; false after `timeout_s`.
  bool wait_for_log(const std::string& text, double timeout_s = 15) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < end) {
      if (log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  std::string log() const { return read_file(log_); }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
  bool exited_ = false;
};

// A fresh temp directory per test.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("troupe-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Greedy ids of `troupe generate` for a prompt (the reference every cluster answer must equal).
// extra: more flags for generate (" --kv-dtype f16").
inline std::vector<int32_t> generate_ids(const std::string& prompt, int max_tokens, const std::string& extra = "") {
  auto r = run_command(troupe_bin() + " --log-level off generate --json --model " + model_path() + " --prompt " +
                       shell_quote(prompt) + " --max-tokens " + std::to_string(max_tokens) + extra);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return nlohmann::json::parse(r.out).at("ids").get<std::vector<int32_t>>();
}

}  // namespace troupe::test
