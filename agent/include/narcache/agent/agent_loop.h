#pragma once
// The agent loop (`narcache agent --coordinator URL ...`): pulls builds from a coordinator,
// builds them, keeps their leases by heartbeat and reports the results (protocol:
// narcache/coordinator/protocol.h, people's version: docs/operations.md).
//
//   * Fetch up to max_parallel - running allocations (a fetch that got no answer is retried with
//     the same request_id, so the coordinator hands out the same allocations again).
//   * Each allocation is built in a child process `narcache agent build-child` (runBuildChild
//     below) started in its own session from a worker thread: the .drv texts of the allocation
//     are written to <work-dir>/builds/<allocation id>/, beside which the engine finds the input
//     derivations. A child can be stopped at any time (lease lost, build canceled, SIGTERM): the
//     agent sends it SIGTERM, the child kills every process of its session (the builder runs in
//     its own process group but stays in the session) and exits; SIGKILL of the child and of its
//     session follow after 5 s. A child also gets SIGTERM when the agent dies (PR_SET_PDEATHSIG).
//     A crash of the engine takes only its child down.
//   * Heartbeat every lease/3 seconds with the allocations in progress; the ones the coordinator
//     names as canceled are stopped and dropped without a report.
//   * The result (ReportStatus from the engine's BuildResult) is reported with retries until
//     the coordinator acknowledges it. Engine errors that may pass (network, I/O, corrupted
//     download) are retried locally, then the allocation is released (given back unbuilt, no
//     try counted) and fetching pauses briefly; other engine errors are reported as failures.
//   * Restart safety: <work-dir>/allocations.json (written by atomic rename) lists the
//     allocations in progress. At start, those left by a previous run are released with the
//     reason "agent restarted".
//   * Every network step retries with backoff; an unreachable coordinator is waited for, never
//     fatal. On stop: no more fetching, running builds are stopped and released, then it returns.
//
// runAgent returns an Error only for what prevents starting (bad URL, unusable work dir).
// Progress lines go to stderr through spdlog.

#include <filesystem>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "narcache/agent/builder.h"
#include "narcache/narinfo/error.h"

namespace narcache::agent {

struct AgentOptions {
  std::string coordinator_url;
  std::string name;
  std::string secret;
  std::string cache_url;
  std::filesystem::path upload_token_file;  // passed on to the build children
  std::filesystem::path work_dir;
  std::vector<std::string> systems;  // empty: the host's ("x86_64-linux")
  // System features offered (builds whose requiredSystemFeatures are all here); unset: Nix's
  // defaults (defaultSystemFeatures()).
  std::optional<std::vector<std::string>> system_features;
  int max_parallel = 1;
  unsigned cores = 0;                     // NIX_BUILD_CORES of each build; 0: the machine's CPUs
  std::vector<std::string> trusted_keys;  // as given on the command line (keys or key files)
  std::filesystem::path store_root = "/";
  std::string build_uids;          // --build-uids FIRST-LAST for the build children; empty: none
  std::filesystem::path self_exe;  // the narcache binary for build children; empty: /proc/self/exe
  int engine_attempts = 3;         // local tries after an engine error that may pass
  int http_attempts = 5;           // tries per coordinator request (backoff 200 ms, doubled)
};

// Runs until `stop` is requested (see above).
Status runAgent(const AgentOptions& options, std::stop_token stop);

// The host's system name, e.g. "x86_64-linux".
std::string hostSystem();

// The child side: builds `options.drv_file` and writes the outcome as JSON to `result_file`
// (the BuildResult, or the engine's Error with its code). Kills its whole session and exits
// 143 on SIGTERM. Returns the process exit code (0 when a result was written).
int runBuildChild(const BuildOptions& options, const std::filesystem::path& result_file);

}  // namespace narcache::agent
