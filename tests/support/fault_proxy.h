#pragma once
// FaultProxy: a TCP proxy on 127.0.0.1 (an ephemeral port) in front of a loopback server, which
// injects faults into a seeded random share of its connections: the connection is dropped
// before the request is forwarded, or after it was forwarded (the server did the work, the
// client never hears of it), the request is delayed, or the response is cut short. Faults are
// bounded (`max_faults`); past that, connections pass through untouched. Each connection is
// relayed by its own thread; stop() (or the destructor) closes everything and joins them.
// Thread-safe.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace narcache::test {

struct FaultOptions {
  int target_port = 0;  // on 127.0.0.1
  std::uint64_t seed = 1;
  // Probabilities per connection (at most one fault per connection).
  double drop_before = 0;  // close before forwarding the client's first bytes
  double drop_after = 0;   // forward the request, close the client before any response byte
  double truncate = 0;     // forward part of the response, then close both sides
  double delay = 0;        // wait up to max_delay before forwarding the request
  std::chrono::milliseconds max_delay{300};
  int max_faults = 200;
  // Not random: every request that starts with `slow_request` (e.g. "POST /api/v1/agent/fetch")
  // waits `slow_delay` (or until the proxy stops) before it is forwarded (counted as `slowed`,
  // not bounded by max_faults).
  std::string slow_request;
  std::chrono::milliseconds slow_delay{0};
};

struct FaultCounts {
  int connections = 0;
  int dropped_before = 0;
  int dropped_after = 0;
  int truncated = 0;
  int delayed = 0;
  int slowed = 0;
  int faults() const { return dropped_before + dropped_after + truncated + delayed; }
};

class FaultProxy {
 public:
  explicit FaultProxy(FaultOptions options);  // listens at once; fails the test if it cannot
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  FaultCounts counts() const;
  void stop();

 private:
  enum class Fault { kNone, kDropBefore, kDropAfter, kTruncate, kDelay };
  Fault decide();
  void acceptLoop();
  void relay(int client, Fault fault, std::uint64_t seed);

  FaultOptions options_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;  // guards the fields below
  std::uint64_t rng_;
  FaultCounts counts_;
  std::vector<std::thread> relays_;
  std::thread acceptor_;
};

}  // namespace narcache::test
