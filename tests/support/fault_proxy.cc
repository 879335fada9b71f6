#include "support/fault_proxy.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

#include "support/support.h"

namespace narcache::test {
namespace {

// splitmix64: small, seeded, good enough for picking faults.
std::uint64_t next(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
double uniform(std::uint64_t& state) {
  return static_cast<double>(next(state) >> 11) / 9007199254740992.0;
}

bool sendAll(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

FaultProxy::FaultProxy(FaultOptions options) : options_(options), rng_(options.seed) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
      << std::strerror(errno);
  EXPECT_EQ(::listen(listen_fd_, 128), 0);
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { acceptLoop(); });
}

FaultProxy::~FaultProxy() {
  stop();
}

FaultCounts FaultProxy::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

void FaultProxy::stop() {
  if (stopping_.exchange(true)) return;
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> relays;
  {
    std::lock_guard lock(mutex_);
    relays.swap(relays_);
  }
  for (auto& t : relays) t.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

FaultProxy::Fault FaultProxy::decide() {
  // mutex_ held
  ++counts_.connections;
  if (counts_.faults() >= options_.max_faults) return Fault::kNone;
  double r = uniform(rng_);
  auto pick = [&](double p, Fault f, int& count) -> Fault {
    if (r < p) {
      ++count;
      return f;
    }
    r -= p;
    return Fault::kNone;
  };
  Fault f = pick(options_.drop_before, Fault::kDropBefore, counts_.dropped_before);
  if (f == Fault::kNone) f = pick(options_.drop_after, Fault::kDropAfter, counts_.dropped_after);
  if (f == Fault::kNone) f = pick(options_.truncate, Fault::kTruncate, counts_.truncated);
  if (f == Fault::kNone) f = pick(options_.delay, Fault::kDelay, counts_.delayed);
  return f;
}

void FaultProxy::acceptLoop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    std::lock_guard lock(mutex_);
    Fault fault = decide();
    std::uint64_t seed = next(rng_);
    relays_.emplace_back([this, client, fault, seed] { relay(client, fault, seed); });
  }
}

void FaultProxy::relay(int client, Fault fault, std::uint64_t seed) {
  int server = -1;
  char buf[64 * 1024];
  bool got_request = false;
  bool answered = false;
  auto idle_since = std::chrono::steady_clock::now();
  if (fault == Fault::kDropBefore) {
    // Wait for the request to start, then hang up without forwarding it.
    pollfd p{client, POLLIN, 0};
    ::poll(&p, 1, 2000);
    goto done;
  }
  server = connectLoopback(options_.target_port);
  if (server < 0) goto done;
  for (;;) {
    if (stopping_) break;
    if (std::chrono::steady_clock::now() - idle_since > std::chrono::seconds(60)) break;
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    int n = ::poll(fds, 2, 100);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    idle_since = std::chrono::steady_clock::now();
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t got = ::recv(client, buf, sizeof buf, 0);
      if (got <= 0) break;
      if (!options_.slow_request.empty() &&
          std::string_view(buf, static_cast<std::size_t>(got)).starts_with(options_.slow_request)) {
        {
          std::lock_guard lock(mutex_);
          ++counts_.slowed;
        }
        auto until = std::chrono::steady_clock::now() + options_.slow_delay;
        while (!stopping_ && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
      if (!got_request && fault == Fault::kDelay) {
        auto ms =
            static_cast<long>(uniform(seed) * static_cast<double>(options_.max_delay.count()));
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      }
      got_request = true;
      if (!sendAll(server, buf, static_cast<std::size_t>(got))) break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t got = ::recv(server, buf, sizeof buf, 0);
      if (got <= 0) break;
      if (fault == Fault::kDropAfter && !answered) break;  // the server did it; nobody hears
      if (fault == Fault::kTruncate && !answered) {
        auto keep = static_cast<std::size_t>(uniform(seed) * static_cast<double>(got));
        sendAll(client, buf, keep);
        break;
      }
      answered = true;
      if (!sendAll(client, buf, static_cast<std::size_t>(got))) break;
    }
  }
done:
  if (server >= 0) ::close(server);
  ::shutdown(client, SHUT_RDWR);
  ::close(client);
}

}  // namespace narcache::test
