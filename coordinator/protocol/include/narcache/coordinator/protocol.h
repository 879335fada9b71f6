#pragma once
// The coordinator's wire protocol: the value types exchanged over HTTP+JSON between the
// coordinator and its clients (`narcache build ...`, `narcache agent ...` commands) and agents,
// with their JSON forms. This is the only part of the coordinator an agent links
// (target narcache_coordinator_protocol); docs/coordinator.md describes the same protocol for
// people. Values only: no I/O, no threads. Parsers return InvalidArgument naming the field.
//
// Endpoints (all JSON; errors are {"error": "..."} with a 4xx/5xx status):
//   Client API — "Authorization: Bearer <client token>" when the coordinator has one:
//     POST /api/v1/derivations/unknown  UnknownDerivationsRequest -> UnknownDerivationsResponse
//     POST /api/v1/builds               SubmitRequest -> SubmitResponse
//     GET  /api/v1/builds?state=S&tag=K=V&limit=N&after=ID   -> BuildList
//     GET  /api/v1/builds/<id>          -> BuildInfo
//     POST /api/v1/builds/<id>/cancel   -> BuildInfo
//     POST /api/v1/builds/<id>/retry    -> BuildInfo (the new build)
//     POST /api/v1/agents               AddAgentRequest -> AddAgentResponse (secret shown once)
//     GET  /api/v1/agents               -> AgentList
//   Agent API — "Authorization: Bearer <agent name>:<agent secret>":
//     POST /api/v1/agent/fetch          FetchRequest -> FetchResponse
//     POST /api/v1/agent/heartbeat      HeartbeatRequest -> HeartbeatResponse
//     POST /api/v1/agent/result         ResultReport -> ResultAck
//     POST /api/v1/agent/release        ReleaseRequest -> ResultAck (gives builds back unbuilt)
//   Unauthenticated: GET /metrics (Prometheus text), GET /health.
//
// Every agent request is idempotent: a retried fetch with the same request_id returns the same
// allocations; a result or release for an allocation that is already closed (or whose lease has
// expired and was handed to someone else) is acknowledged with accepted=false and changes nothing.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"

namespace narcache::coordinator {

// Build states. A build is never failed because of a dependency: it waits.
enum class BuildState {
  kQueued,     // ready to be allocated (its inputs were available when last checked)
  kWaiting,    // waiting for input outputs to become available (see BuildInfo::waiting_for)
  kAllocated,  // handed to an agent under a lease
  kSucceeded,
  kFailed,  // failed and will not be retried automatically (retry threshold reached)
  kCanceled,
};
std::string_view buildStateName(BuildState state);  // "queued", "waiting", ...
Result<BuildState> parseBuildState(std::string_view name);

// A derivation as the client sends it: its store path and its ATerm text.
struct DerivationText {
  std::string path;  // full store path of the .drv
  std::string text;  // ATerm
};

struct UnknownDerivationsRequest {
  std::vector<std::string> paths;  // .drv store paths
};
struct UnknownDerivationsResponse {
  std::vector<std::string> unknown;  // those the coordinator does not have yet
};

struct SubmitBuild {
  std::string derivation;  // .drv store path (its text is known or in SubmitRequest::derivations)
  int priority = 0;        // higher first
  std::map<std::string, std::string> tags;
  bool ignore_if_built = false;  // no build when all its outputs are already available
};

struct SubmitRequest {
  // Every .drv the coordinator does not know yet among the submitted ones and their input
  // derivations, recursively (ask /derivations/unknown first). Checked: each path must be the
  // store path Nix computes for its text.
  std::vector<DerivationText> derivations;
  std::vector<SubmitBuild> builds;
};

struct BuildInfo {
  std::uint64_t id = 0;
  std::string derivation;  // .drv store path
  std::string system;
  std::vector<std::string> required_features;  // requiredSystemFeatures: only agents with all
  BuildState state = BuildState::kQueued;
  int priority = 0;
  std::map<std::string, std::string> tags;
  int tries = 0;                         // attempts of this build so far
  std::int64_t submitted_at = 0;         // unix seconds
  std::int64_t updated_at = 0;           // last state change
  std::int64_t not_before = 0;           // retry backoff: not allocated before this time
  std::string agent;                     // kAllocated: who builds it; else the last agent
  std::vector<std::string> waiting_for;  // kWaiting: missing output paths
  std::vector<std::string> blocked_by;   // kWaiting: .drv paths that are failing (no auto retry)
  std::map<std::string, std::string> outputs;  // output name -> store path
  std::string message;                         // last failure message, cancel reason, ...
  std::string log_url;                         // where the build log is (cache URL + /log/...)
  std::optional<std::uint64_t> retry_of;       // for a manual retry: the build it repeats
  bool skipped = false;                        // ignore_if_built and all outputs were available
};

struct SubmitResponse {
  std::vector<BuildInfo> builds;  // one per SubmitBuild, in order
};

struct BuildList {
  std::vector<BuildInfo> builds;            // ascending id
  std::optional<std::uint64_t> next_after;  // pass as ?after= for the next page
};

struct AddAgentRequest {
  std::string name;  // [A-Za-z0-9._-]{1,64}
};
struct AddAgentResponse {
  std::string name;
  std::string secret;  // shown only here; the coordinator keeps its hash
};

struct AgentInfo {
  std::string name;
  std::vector<std::string> systems;   // as last announced by the agent
  std::vector<std::string> features;  // system features it offers, as last announced
  int max_parallel = 0;
  std::int64_t last_seen = 0;         // unix seconds, 0: never
  bool connected = false;             // seen within the lease time
  std::vector<std::uint64_t> builds;  // builds allocated to it now
};
struct AgentList {
  std::vector<AgentInfo> agents;
};

struct FetchRequest {
  std::string request_id;             // random per fetch; repeated on retry of the same fetch
  std::vector<std::string> systems;   // e.g. "x86_64-linux"
  std::vector<std::string> features;  // system features it offers ("kvm", "big-parallel"...)
  int max_parallel = 1;
  int running = 0;  // builds it is running now; gets up to max_parallel-running
};

struct Allocation {
  std::uint64_t allocation_id = 0;
  std::uint64_t build_id = 0;
  std::string derivation;                   // .drv store path to build
  std::vector<DerivationText> derivations;  // the .drv and its direct input derivations
  int lease_seconds = 0;                    // heartbeat well within this
  int timeout_seconds = 0;                  // builder timeout, 0: none
  int max_silent_seconds = 0;               // 0: none
};

struct FetchResponse {
  std::vector<Allocation> allocations;
  int poll_seconds = 1;  // when empty: wait this long before asking again
};

struct HeartbeatRequest {
  std::vector<std::uint64_t> allocations;  // allocation ids the agent is working on
};
struct HeartbeatResponse {
  std::vector<std::uint64_t> valid;     // leases extended
  std::vector<std::uint64_t> canceled;  // stop these (canceled, or lease lost): drop the work
};

enum class ReportStatus { kSucceeded, kFailed, kTimedOut, kMissingInputs };
std::string_view reportStatusName(ReportStatus status);
Result<ReportStatus> parseReportStatus(std::string_view name);

struct ResultReport {
  std::uint64_t allocation_id = 0;
  ReportStatus status = ReportStatus::kFailed;
  std::map<std::string, std::string> outputs;  // output name -> store path (succeeded)
  std::vector<std::string> missing_inputs;     // store paths (kMissingInputs)
  std::string message;                         // failure message
  std::string log_tail;                        // last lines of the log
  double build_seconds = 0;
};

struct ReleaseRequest {
  std::vector<std::uint64_t> allocations;
  std::string reason;  // e.g. "agent restarted"
};

struct ResultAck {
  bool accepted = false;  // false: the allocation was already closed; nothing changed
};

struct ErrorBody {
  std::string error;
};

// JSON: toJson(x) gives compact JSON text; parse<T>(text) checks types and required fields
// (unknown fields are ignored, so either side may add optional ones).
template <typename T>
Result<T> parse(std::string_view text);

std::string toJson(const UnknownDerivationsRequest& value);
template <>
Result<UnknownDerivationsRequest> parse<UnknownDerivationsRequest>(std::string_view text);
std::string toJson(const UnknownDerivationsResponse& value);
template <>
Result<UnknownDerivationsResponse> parse<UnknownDerivationsResponse>(std::string_view text);
std::string toJson(const SubmitRequest& value);
template <>
Result<SubmitRequest> parse<SubmitRequest>(std::string_view text);
std::string toJson(const SubmitResponse& value);
template <>
Result<SubmitResponse> parse<SubmitResponse>(std::string_view text);
std::string toJson(const BuildInfo& value);
template <>
Result<BuildInfo> parse<BuildInfo>(std::string_view text);
std::string toJson(const BuildList& value);
template <>
Result<BuildList> parse<BuildList>(std::string_view text);
std::string toJson(const AddAgentRequest& value);
template <>
Result<AddAgentRequest> parse<AddAgentRequest>(std::string_view text);
std::string toJson(const AddAgentResponse& value);
template <>
Result<AddAgentResponse> parse<AddAgentResponse>(std::string_view text);
std::string toJson(const AgentList& value);
template <>
Result<AgentList> parse<AgentList>(std::string_view text);
std::string toJson(const FetchRequest& value);
template <>
Result<FetchRequest> parse<FetchRequest>(std::string_view text);
std::string toJson(const FetchResponse& value);
template <>
Result<FetchResponse> parse<FetchResponse>(std::string_view text);
std::string toJson(const HeartbeatRequest& value);
template <>
Result<HeartbeatRequest> parse<HeartbeatRequest>(std::string_view text);
std::string toJson(const HeartbeatResponse& value);
template <>
Result<HeartbeatResponse> parse<HeartbeatResponse>(std::string_view text);
std::string toJson(const ResultReport& value);
template <>
Result<ResultReport> parse<ResultReport>(std::string_view text);
std::string toJson(const ReleaseRequest& value);
template <>
Result<ReleaseRequest> parse<ReleaseRequest>(std::string_view text);
std::string toJson(const ResultAck& value);
template <>
Result<ResultAck> parse<ResultAck>(std::string_view text);
std::string toJson(const ErrorBody& value);
template <>
Result<ErrorBody> parse<ErrorBody>(std::string_view text);

}  // namespace narcache::coordinator
