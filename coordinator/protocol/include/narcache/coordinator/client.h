#pragma once
// CoordinatorClient: the HTTP client of the coordinator's API (see protocol.h for the endpoints),
// used by the `narcache build submit|list|...` and `narcache agent add|list` commands and by the
// agent loop. One method per endpoint.
//
// Every request is retried with exponential backoff (first_backoff, doubled, capped at
// max_backoff) on connection errors, 5xx, 408/429 and unparsable 2xx bodies (a truncated
// answer), up to `attempts` tries: every endpoint is idempotent by design (a fetch carries its
// request_id, a result or release for a closed allocation is acknowledged with accepted=false).
// Errors: Unavailable (network, 5xx, after the last try), PermissionDenied (401/403), NotFound
// (404), Conflict (409), InvalidArgument (other 4xx), each with the server's {"error"} message.
//
// Thread-safe: every request opens its own connection, so one client may be shared by threads.
// `stop()` ends every call with Unavailable ("stopped"): backoff waits return at once, requests
// on the wire are cut off, and later calls are not sent.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "narcache/coordinator/protocol.h"
#include "narcache/narinfo/error.h"

namespace narcache::coordinator {

struct ClientOptions {
  std::string url;    // http://host:port (a path prefix is kept)
  std::string token;  // Bearer token: the client token, or "<agent name>:<secret>" for agents
  int attempts = 5;
  std::chrono::milliseconds first_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::seconds timeout{30};  // connect, read and write timeout of one request
};

struct BuildQuery {
  std::optional<BuildState> state;
  std::vector<std::pair<std::string, std::string>> tags;  // all must match
  int limit = 0;                                          // 0: the server's default
  std::optional<std::uint64_t> after;                     // ids greater than this
};

class CoordinatorClient {
 public:
  // Checks the URL (http:// or https://).
  static Result<std::unique_ptr<CoordinatorClient>> create(ClientOptions options);
  ~CoordinatorClient();
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  const std::string& url() const;

  // Client API.
  Result<UnknownDerivationsResponse> unknownDerivations(const UnknownDerivationsRequest& request);
  Result<SubmitResponse> submit(const SubmitRequest& request);
  Result<BuildList> listBuilds(const BuildQuery& query);
  Result<BuildInfo> build(std::uint64_t id);
  Result<BuildInfo> cancel(std::uint64_t id);
  Result<BuildInfo> retry(std::uint64_t id);  // the new build
  Result<AddAgentResponse> addAgent(const AddAgentRequest& request);
  Result<AgentList> agents();

  // Agent API.
  Result<FetchResponse> fetch(const FetchRequest& request);
  Result<HeartbeatResponse> heartbeat(const HeartbeatRequest& request);
  Result<ResultAck> report(const ResultReport& request);
  Result<ResultAck> release(const ReleaseRequest& request);

  // GET /metrics (Prometheus text).
  Result<std::string> metrics();

  // For shutdown: ends pending and later calls (see above); the client stays stopped.
  void stop();

 private:
  struct Impl;
  explicit CoordinatorClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace narcache::coordinator
