// The coordinator's wire protocol: see protocol.h.

#include "narcache/coordinator/protocol.h"

#include <array>
#include <utility>

namespace narcache::coordinator {
namespace {

constexpr std::array<std::pair<BuildState, std::string_view>, 6> kBuildStates{{
    {BuildState::kQueued, "queued"},
    {BuildState::kWaiting, "waiting"},
    {BuildState::kAllocated, "allocated"},
    {BuildState::kSucceeded, "succeeded"},
    {BuildState::kFailed, "failed"},
    {BuildState::kCanceled, "canceled"},
}};

constexpr std::array<std::pair<ReportStatus, std::string_view>, 4> kReportStatuses{{
    {ReportStatus::kSucceeded, "succeeded"},
    {ReportStatus::kFailed, "failed"},
    {ReportStatus::kTimedOut, "timed-out"},
    {ReportStatus::kMissingInputs, "missing-inputs"},
}};

template <typename E, std::size_t N>
std::string_view nameOf(const std::array<std::pair<E, std::string_view>, N>& table, E value) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  return "unknown";
}

template <typename E, std::size_t N>
Result<E> valueOf(const std::array<std::pair<E, std::string_view>, N>& table,
                  std::string_view name, std::string_view what) {
  for (const auto& [v, n] : table) {
    if (n == name) return v;
  }
  std::string known;
  for (const auto& entry : table) {
    known += known.empty() ? "" : ", ";
    known += entry.second;
  }
  return fail(ErrorCode::kInvalidArgument,
              "unknown " + std::string(what) + " '" + std::string(name) + "' (one of: " + known +
                  ")");
}

}  // namespace

std::string_view buildStateName(BuildState state) { return nameOf(kBuildStates, state); }
Result<BuildState> parseBuildState(std::string_view name) {
  return valueOf(kBuildStates, name, "build state");
}
std::string_view reportStatusName(ReportStatus status) {
  return nameOf(kReportStatuses, status);
}
Result<ReportStatus> parseReportStatus(std::string_view name) {
  return valueOf(kReportStatuses, name, "result status");
}

}  // namespace narcache::coordinator
