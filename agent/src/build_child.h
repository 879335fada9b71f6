#pragma once
// The agent's build children: starting `narcache agent build-child` in its own session, killing
// a whole session, and the JSON the child leaves in its result file. Private to the agent
// module (agent_loop.cc, build_child.cc).

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "narcache/coordinator/protocol.h"
#include "narcache/narinfo/error.h"

namespace narcache::agent {

// Forks and execs argv[0] (a path) in a new session (setsid), with all signals unblocked,
// PR_SET_PDEATHSIG=SIGTERM (the calling thread must outlive the child), stdin /dev/null and
// stdout+stderr appended to `log`. Returns the child's pid.
Result<pid_t> spawnInSession(const std::vector<std::string>& argv,
                             const std::filesystem::path& log);

// Sends SIGKILL to every process of session `sid` except the caller (scans /proc).
void killSession(pid_t sid);

// What a build child left behind.
struct ChildOutcome {
  bool engine_error = false;  // true: `error` holds the engine's Error instead of a result
  bool transient = false;     // engine_error that may pass when tried again
  Error error{ErrorCode::kInternal, ""};
  coordinator::ResultReport report;  // !engine_error: the result (allocation_id left 0)
};

// Reads the child's result file; a missing or malformed file is a transient engine error
// ("build process <how it ended>: <last lines of its log>").
ChildOutcome readChildOutcome(const std::filesystem::path& result_file, int exit_code,
                              const std::filesystem::path& log);

}  // namespace narcache::agent
