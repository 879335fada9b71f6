// CoordinatorClient: see client.h. cpp-httplib stays in this file.

#include "narcache/coordinator/client.h"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <set>

#include "http_support.h"

namespace narcache::coordinator {
namespace {

std::string percentEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// The server's {"error": ...} message, or the start of the body.
std::string serverMessage(const std::string& body) {
  auto parsed = parse<ErrorBody>(body);
  if (parsed) return parsed->error;
  std::string text = body.substr(0, 200);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

struct CoordinatorClient::Impl {
  ClientOptions options;
  http::HttpUrl endpoint;
  std::mutex mutex;
  std::condition_variable wake;
  std::atomic<bool> stopped{false};
  std::set<std::shared_ptr<httplib::Client>> on_wire;  // requests in progress, for stop()

  // Sleeps `delay` unless stopped; returns false when stopped.
  bool sleep(std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex);
    return !wake.wait_for(lock, delay, [&] { return stopped.load(); });
  }

  // Sends one request (a new connection) and returns the raw result; Canceled once stopped.
  httplib::Result send(const std::string& method, const std::string& path,
                       const std::string& body) {
    auto client = std::make_shared<httplib::Client>(endpoint.origin);
    auto t = static_cast<time_t>(options.timeout.count());
    client->set_connection_timeout(t, 0);
    client->set_read_timeout(t, 0);
    client->set_write_timeout(t, 0);
    client->set_keep_alive(false);
    client->set_tcp_nodelay(true);
    httplib::Headers headers;
    if (!options.token.empty()) headers.emplace("Authorization", "Bearer " + options.token);
    std::string full = endpoint.prefix + path;
    {
      std::lock_guard lock(mutex);
      if (stopped) return httplib::Result(nullptr, httplib::Error::Canceled);
      on_wire.insert(client);
    }
    httplib::Result res = method == "GET" ? client->Get(full, headers)
                                          : client->Post(full, headers, body, "application/json");
    std::lock_guard lock(mutex);
    on_wire.erase(client);
    return res;
  }

  // Runs the request until it gives a parsable 2xx answer, fails for good, or attempts run
  // out (see client.h for what is retried).
  template <typename T, typename Parse>
  Result<T> call(const std::string& method, const std::string& path, const std::string& body,
                 Parse parse_body) {
    std::string what = method + " " + options.url + path;
    auto backoff = options.first_backoff;
    int attempts = std::max(1, options.attempts);
    Error last(ErrorCode::kUnavailable, what + ": not tried");
    for (int attempt = 1; attempt <= attempts; ++attempt) {
      if (stopped) return fail(ErrorCode::kUnavailable, what + ": stopped");
      httplib::Result res = send(method, path, body);
      bool retry = false;
      if (!res && stopped) return fail(ErrorCode::kUnavailable, what + ": stopped");
      if (!res) {
        retry = true;
        last = Error(ErrorCode::kUnavailable, what + ": " + http::transportErrorText(res.error()));
      } else if (res->status >= 200 && res->status < 300) {
        Result<T> value = parse_body(res->body);
        if (value) return value;
        retry = true;  // a truncated or garbled answer: asking again is safe
        last = Error(ErrorCode::kUnavailable, what + ": bad answer: " + value.error().message());
      } else {
        int status = res->status;
        std::string message =
            what + ": HTTP " + std::to_string(status) + ": " + serverMessage(res->body);
        if (status == 401 || status == 403) {
          return fail(ErrorCode::kPermissionDenied, message);
        } else if (status == 404) {
          return fail(ErrorCode::kNotFound, message);
        } else if (status == 409) {
          return fail(ErrorCode::kConflict, message);
        } else if (status >= 500 || status == 408 || status == 429) {
          retry = true;
          last = Error(ErrorCode::kUnavailable, message);
        } else {
          return fail(ErrorCode::kInvalidArgument, message);
        }
      }
      if (!retry) break;
      if (attempt < attempts) {
        if (!sleep(backoff)) return fail(ErrorCode::kUnavailable, what + ": stopped");
        backoff = std::min(backoff * 2, options.max_backoff);
      }
    }
    if (attempts > 1) {
      return fail(Error(last.code(),
                        last.message() + " (after " + std::to_string(attempts) + " attempts)"));
    }
    return fail(last);
  }

  template <typename T>
  Result<T> json(const std::string& method, const std::string& path, const std::string& body) {
    return call<T>(method, path, body, [](const std::string& text) { return parse<T>(text); });
  }
};

CoordinatorClient::CoordinatorClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CoordinatorClient::~CoordinatorClient() = default;

Result<std::unique_ptr<CoordinatorClient>> CoordinatorClient::create(ClientOptions options) {
  auto endpoint = http::parseHttpUrl(options.url, "coordinator URL");
  if (!endpoint) return fail(endpoint.error());
  auto impl = std::make_unique<Impl>();
  impl->endpoint = std::move(*endpoint);
  impl->options = std::move(options);
  return std::unique_ptr<CoordinatorClient>(new CoordinatorClient(std::move(impl)));
}

const std::string& CoordinatorClient::url() const {
  return impl_->options.url;
}

void CoordinatorClient::stop() {
  std::vector<std::shared_ptr<httplib::Client>> on_wire;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopped = true;
    on_wire.assign(impl_->on_wire.begin(), impl_->on_wire.end());
  }
  impl_->wake.notify_all();
  // Shuts their sockets down, so that their reads and writes fail now. cpp-httplib holds its
  // socket lock while connecting: this waits for a connect in progress (bounded by the timeout).
  for (const auto& client : on_wire) client->stop();
}

Result<UnknownDerivationsResponse> CoordinatorClient::unknownDerivations(
    const UnknownDerivationsRequest& request) {
  return impl_->json<UnknownDerivationsResponse>("POST", "/api/v1/derivations/unknown",
                                                 toJson(request));
}

Result<SubmitResponse> CoordinatorClient::submit(const SubmitRequest& request) {
  return impl_->json<SubmitResponse>("POST", "/api/v1/builds", toJson(request));
}

Result<BuildList> CoordinatorClient::listBuilds(const BuildQuery& query) {
  std::string q;
  auto add = [&](std::string_view key, std::string_view value) {
    q += q.empty() ? "?" : "&";
    q += std::string(key) + "=" + percentEncode(value);
  };
  if (query.state) add("state", buildStateName(*query.state));
  for (const auto& [k, v] : query.tags) add("tag", k + "=" + v);
  if (query.limit > 0) add("limit", std::to_string(query.limit));
  if (query.after) add("after", std::to_string(*query.after));
  return impl_->json<BuildList>("GET", "/api/v1/builds" + q, "");
}

Result<BuildInfo> CoordinatorClient::build(std::uint64_t id) {
  return impl_->json<BuildInfo>("GET", "/api/v1/builds/" + std::to_string(id), "");
}

Result<BuildInfo> CoordinatorClient::cancel(std::uint64_t id) {
  return impl_->json<BuildInfo>("POST", "/api/v1/builds/" + std::to_string(id) + "/cancel", "{}");
}

Result<BuildInfo> CoordinatorClient::retry(std::uint64_t id) {
  return impl_->json<BuildInfo>("POST", "/api/v1/builds/" + std::to_string(id) + "/retry", "{}");
}

Result<AddAgentResponse> CoordinatorClient::addAgent(const AddAgentRequest& request) {
  return impl_->json<AddAgentResponse>("POST", "/api/v1/agents", toJson(request));
}

Result<AgentList> CoordinatorClient::agents() {
  return impl_->json<AgentList>("GET", "/api/v1/agents", "");
}

Result<FetchResponse> CoordinatorClient::fetch(const FetchRequest& request) {
  return impl_->json<FetchResponse>("POST", "/api/v1/agent/fetch", toJson(request));
}

Result<HeartbeatResponse> CoordinatorClient::heartbeat(const HeartbeatRequest& request) {
  return impl_->json<HeartbeatResponse>("POST", "/api/v1/agent/heartbeat", toJson(request));
}

Result<ResultAck> CoordinatorClient::report(const ResultReport& request) {
  return impl_->json<ResultAck>("POST", "/api/v1/agent/result", toJson(request));
}

Result<ResultAck> CoordinatorClient::release(const ReleaseRequest& request) {
  return impl_->json<ResultAck>("POST", "/api/v1/agent/release", toJson(request));
}

Result<std::string> CoordinatorClient::metrics() {
  return impl_->call<std::string>(
      "GET", "/metrics", "", [](const std::string& text) { return Result<std::string>(text); });
}

}  // namespace narcache::coordinator
