// CoordinatorClient::stop() against a coordinator that accepts connections and never answers
// (a real listening socket on 127.0.0.1): the call on the wire is cut off at once, not after
// its timeout and retries, and later calls are not sent.

#include "narcache/coordinator/client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

namespace narcache::coordinator {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Accepts connections on 127.0.0.1 and keeps them open without reading or answering.
class SilentServer {
 public:
  SilentServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) {
          held_.push_back(c);
          ++accepted_;
        }
      }
    });
  }
  ~SilentServer() {
    stop_ = true;
    thread_.join();
    for (int c : held_) ::close(c);
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int accepted() const { return accepted_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> held_;  // accept thread only, then the destructor
  std::thread thread_;
};

TEST(CoordinatorClientStop, CutsOffARequestOnTheWireAndSendsNoMore) {
  SilentServer server;
  ClientOptions options;
  options.url = server.url();
  options.timeout = 20s;
  options.attempts = 5;
  auto client = CoordinatorClient::create(options);
  ASSERT_TRUE(client.has_value()) << client.error().message();
  auto call = std::async(std::launch::async, [&] { return (*client)->metrics(); });
  auto deadline = Clock::now() + 10s;
  while (server.accepted() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server.accepted(), 1);
  std::this_thread::sleep_for(100ms);  // the request is sent; its answer is awaited

  auto t0 = Clock::now();
  (*client)->stop();
  ASSERT_EQ(call.wait_for(5s), std::future_status::ready) << "stop() did not cut the call off";
  double took = std::chrono::duration<double>(Clock::now() - t0).count();
  auto result = call.get();
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(result.error().message().find("stopped"), std::string::npos)
      << result.error().message();
  EXPECT_LT(took, 1.0);

  auto later = (*client)->metrics();
  ASSERT_FALSE(later.has_value());
  EXPECT_NE(later.error().message().find("stopped"), std::string::npos);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(server.accepted(), 1) << "a call after stop() was sent";
}

}  // namespace
}  // namespace narcache::coordinator
