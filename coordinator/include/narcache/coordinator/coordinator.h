#pragma once
// Coordinator: the build coordinator's state machine over its own LMDB database — derivations,
// builds, agents, allocations with leases, hook events — and the in-memory indexes that make an
// allocation decision O(log n) of the queue and /metrics O(1) in the number of builds.
// docs/coordinator.md describes the states and their rules; this is the in-process API that the
// HTTP layer (http_api.h) and the tests call.
//
// Rules kept here:
//  - Every state change is one LMDB write transaction, together with the hook events it causes
//    (so an event is never lost nor emitted for a change that did not happen).
//  - A build is allocated only after the store said that every input output (needed outputs of
//    its input derivations and its input sources) is available; otherwise it waits for the
//    missing paths and builds of their producers are submitted. No build ever fails because of a
//    dependency.
//  - A failed try counts against the derivation; up to max_retries more tries are made with
//    exponential backoff; past that the derivation is "failing" and is never retried
//    automatically (a manual submission or retry always runs once).
//  - In-memory indexes hold only the builds that are not finished (queued, waiting, allocated)
//    and counters; they are rebuilt from the database by open().
//
// Ownership: the Coordinator owns its database, its background threads (maintenance: lease
// reaper, retry backoff, waiting re-check, freeing the database reader slots of dead processes
// every 10 s; one worker per hook) and the in-memory state; it holds
// references to the Availability and the optional Store of its options, which must outlive it.
// Thread-safety: every method is safe to call concurrently from many threads.
// Errors: NotFound (unknown build/derivation), InvalidArgument (malformed request, bad .drv),
// Conflict (e.g. cancel of a finished build), PermissionDenied, Unavailable (store unreachable);
// database failures come back as ResourceExhausted/IoError.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/coordinator/availability.h"
#include "narcache/coordinator/hooks.h"
#include "narcache/coordinator/protocol.h"
#include "narcache/narinfo/error.h"
#include "narcache/narstore/store.h"

namespace narcache::coordinator {

struct CoordinatorOptions {
  std::filesystem::path db_dir;          // created when missing
  Availability* availability = nullptr;  // required
  narstore::Store* store = nullptr;      // local store (builtin:root-outputs), optional
  std::string cache_url;                 // for log links: <cache_url>/log/<drv base name>
  int max_retries = 2;                   // automatic tries after the first, per derivation
  int lease_seconds = 60;
  int retry_backoff_seconds = 10;  // before try n+1: backoff * 2^(n-1)
  int build_timeout_seconds = 0;   // handed to agents; 0: none
  int max_silent_seconds = 0;
  int waiting_recheck_seconds = 5;  // fallback re-check of waiting builds
  int max_allocations_per_fetch = 16;
  std::vector<HookSpec> hooks;
  int hook_poll_ms = 2000;             // fallback poll of the hook queues
  int hook_backoff_initial_ms = 1000;  // a failing action is retried after this, doubling
  int hook_backoff_max_ms = 60000;
  int hook_command_timeout_seconds = 60;
  narstore::Clock clock = narstore::systemClock;
  // Run the maintenance thread (lease reaper, backoff promotion, waiting re-check) every second.
  // Tests turn it off and call tick() with their own clock.
  bool background = true;
  std::size_t initial_map_size = 0;  // LMDB map (0: 64 MiB); grows on demand
};

struct BuildFilter {
  std::optional<BuildState> state;
  std::map<std::string, std::string> tags;  // all must match
  std::size_t limit = 100;
  std::uint64_t after = 0;  // ids greater than this
};

// Counters behind /metrics, for tests and the benchmark.
struct CoordinatorStats {
  std::map<BuildState, std::uint64_t> builds;  // by state
  std::uint64_t ready = 0;                     // queued and allocatable now (not in backoff)
  std::int64_t oldest_queued_age = 0;          // seconds
  std::uint64_t allocations_total = 0;
  std::uint64_t retries_total = 0;
  std::uint64_t lease_expiries_total = 0;
  std::uint64_t derivations_failing = 0;
  std::uint64_t agents_connected = 0;
  std::uint64_t agents_busy = 0;
  struct Hook {
    std::string event;
    std::string action;
    std::uint64_t queued = 0;
    std::int64_t oldest_age = 0;
    std::uint64_t failures_total = 0;
    std::uint64_t processed_total = 0;
  };
  std::vector<Hook> hooks;
};

class Coordinator {
 public:
  // Opens (creating) the database, rebuilds the in-memory indexes and counters in one scan, and
  // starts the background threads.
  static Result<std::unique_ptr<Coordinator>> open(const CoordinatorOptions& options);
  ~Coordinator();  // stops and joins the background threads
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // --- Client API ---------------------------------------------------------------------------
  Result<UnknownDerivationsResponse> unknownDerivations(const UnknownDerivationsRequest& request);
  Result<SubmitResponse> submit(const SubmitRequest& request);
  Result<BuildList> listBuilds(const BuildFilter& query);
  Result<BuildInfo> build(std::uint64_t id);
  Result<BuildInfo> cancel(std::uint64_t id, std::string_view reason = "canceled by a client");
  Result<BuildInfo> retry(std::uint64_t id);  // a new build of the same derivation
  Result<AddAgentResponse> addAgent(const AddAgentRequest& request);
  AgentList agents();

  // --- Agent API ----------------------------------------------------------------------------
  bool authenticateAgent(std::string_view name, std::string_view secret);
  Result<FetchResponse> fetch(const std::string& agent, const FetchRequest& request);
  Result<HeartbeatResponse> heartbeat(const std::string& agent, const HeartbeatRequest& request);
  Result<ResultAck> report(const std::string& agent, const ResultReport& report);
  Result<ResultAck> release(const std::string& agent, const ReleaseRequest& request);

  // --- Maintenance --------------------------------------------------------------------------
  // Re-queues builds whose lease expired, makes builds whose backoff ended allocatable, and
  // re-checks waiting builds against the store. The maintenance thread calls it every second
  // (the waiting re-check every waiting_recheck_seconds); `force_recheck` does it now.
  Status tick(bool force_recheck = true);

  // Prometheus text, from in-memory counters only.
  std::string metrics();
  CoordinatorStats stats();

 private:
  struct Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace narcache::coordinator
