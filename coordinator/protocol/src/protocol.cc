// The coordinator's wire protocol: see protocol.h. JSON through nlohmann-json (private to this
// file): every field is read through a Reader that checks its type and names it in errors, so a
// malformed request is rejected as "FetchRequest: systems: not an array of strings". Unknown
// fields are ignored; optional fields missing from the text keep the struct's default.

#include "narcache/coordinator/protocol.h"

#include <array>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

namespace narcache::coordinator {
namespace {

using nlohmann::json;

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
Result<E> valueOf(const std::array<std::pair<E, std::string_view>, N>& table, std::string_view name,
                  std::string_view what) {
  for (const auto& [v, n] : table) {
    if (n == name) return v;
  }
  std::string known;
  for (const auto& entry : table) {
    known += known.empty() ? "" : ", ";
    known += entry.second;
  }
  return fail(ErrorCode::kInvalidArgument, "unknown " + std::string(what) + " '" +
                                               std::string(name) + "' (one of: " + known + ")");
}

// Reads the fields of one JSON object. `context` names the object in errors
// ("SubmitRequest: builds[2]"). Each reader leaves `out` untouched when an optional field is
// absent; a present field of the wrong type is an error even when the field is optional.
class Reader {
 public:
  Reader(const json& object, std::string context) : object_(object), context_(std::move(context)) {}

  const std::string& context() const { return context_; }

  Status string(const char* key, std::string& out, bool required = false) const {
    const json* v = find(key);
    if (v == nullptr) return missing(key, required);
    if (!v->is_string()) return bad(key, "not a string");
    out = v->get<std::string>();
    return {};
  }

  template <typename Int>
  Status integer(const char* key, Int& out, bool required = false) const {
    const json* v = find(key);
    if (v == nullptr) return missing(key, required);
    if (!v->is_number_integer()) return bad(key, "not an integer");
    if (v->is_number_unsigned()) {
      auto u = v->get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<Int>::max())) {
        return bad(key, "out of range");
      }
      out = static_cast<Int>(u);
      return {};
    }
    auto s = v->get<std::int64_t>();
    if constexpr (std::numeric_limits<Int>::is_signed) {
      if (s < static_cast<std::int64_t>(std::numeric_limits<Int>::min()) ||
          s > static_cast<std::int64_t>(std::numeric_limits<Int>::max())) {
        return bad(key, "out of range");
      }
    } else {
      if (s < 0) return bad(key, "negative");
    }
    out = static_cast<Int>(s);
    return {};
  }

  Status number(const char* key, double& out) const {
    const json* v = find(key);
    if (v == nullptr) return {};
    if (!v->is_number()) return bad(key, "not a number");
    out = v->get<double>();
    return {};
  }

  Status boolean(const char* key, bool& out, bool required = false) const {
    const json* v = find(key);
    if (v == nullptr) return missing(key, required);
    if (!v->is_boolean()) return bad(key, "not a boolean");
    out = v->get<bool>();
    return {};
  }

  Status strings(const char* key, std::vector<std::string>& out, bool required = false) const {
    const json* v = find(key);
    if (v == nullptr) return missing(key, required);
    if (!v->is_array()) return bad(key, "not an array of strings");
    std::vector<std::string> values;
    values.reserve(v->size());
    for (const auto& item : *v) {
      if (!item.is_string()) return bad(key, "not an array of strings");
      values.push_back(item.get<std::string>());
    }
    out = std::move(values);
    return {};
  }

  Status ids(const char* key, std::vector<std::uint64_t>& out, bool required = false) const {
    const json* v = find(key);
    if (v == nullptr) return missing(key, required);
    if (!v->is_array()) return bad(key, "not an array of non-negative integers");
    std::vector<std::uint64_t> values;
    values.reserve(v->size());
    for (const auto& item : *v) {
      if (!item.is_number_unsigned()) return bad(key, "not an array of non-negative integers");
      values.push_back(item.get<std::uint64_t>());
    }
    out = std::move(values);
    return {};
  }

  Status stringMap(const char* key, std::map<std::string, std::string>& out) const {
    const json* v = find(key);
    if (v == nullptr) return {};
    if (!v->is_object()) return bad(key, "not an object of strings");
    std::map<std::string, std::string> values;
    for (const auto& [k, item] : v->items()) {
      if (!item.is_string()) return bad(key, "not an object of strings");
      values.emplace(k, item.get<std::string>());
    }
    out = std::move(values);
    return {};
  }

  Status optionalId(const char* key, std::optional<std::uint64_t>& out) const {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return {};
    std::uint64_t id = 0;
    NARCACHE_TRY(integer(key, id));
    out = id;
    return {};
  }

  Status buildState(const char* key, BuildState& out, bool required = false) const {
    std::string name;
    const json* v = find(key);
    if (v == nullptr) return missing(key, required);
    NARCACHE_TRY(string(key, name));
    auto state = parseBuildState(name);
    if (!state) return fail(state.error().withContext(context_ + ": " + key));
    out = *state;
    return {};
  }

  Status reportStatus(const char* key, ReportStatus& out, bool required = false) const {
    std::string name;
    const json* v = find(key);
    if (v == nullptr) return missing(key, required);
    NARCACHE_TRY(string(key, name));
    auto status = parseReportStatus(name);
    if (!status) return fail(status.error().withContext(context_ + ": " + key));
    out = *status;
    return {};
  }

  // An array of objects, each read by `read(Reader&, T&)`.
  template <typename T, typename F>
  Status objects(const char* key, std::vector<T>& out, F read_item, bool required = false) const {
    const json* v = find(key);
    if (v == nullptr) return missing(key, required);
    if (!v->is_array()) return bad(key, "not an array of objects");
    std::vector<T> values;
    values.reserve(v->size());
    for (std::size_t i = 0; i < v->size(); ++i) {
      const json& item = (*v)[i];
      std::string where = context_ + ": " + key + "[" + std::to_string(i) + "]";
      if (!item.is_object()) {
        return fail(ErrorCode::kInvalidArgument, where + ": not an object");
      }
      T value;
      NARCACHE_TRY(read_item(Reader(item, where), value));
      values.push_back(std::move(value));
    }
    out = std::move(values);
    return {};
  }

 private:
  const json* find(const char* key) const {
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  Status missing(const char* key, bool required) const {
    if (!required) return {};
    return fail(ErrorCode::kInvalidArgument, context_ + ": " + key + ": missing");
  }
  Status bad(const char* key, const char* what) const {
    return fail(ErrorCode::kInvalidArgument, context_ + ": " + key + ": " + what);
  }

  const json& object_;
  std::string context_;
};

// Parses `text` as a JSON object and reads it with `read`.
template <typename T, typename F>
Result<T> parseObject(std::string_view text, const char* type, F read_fields) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return fail(ErrorCode::kInvalidArgument, std::string(type) + ": not valid JSON");
  }
  if (!j.is_object()) {
    return fail(ErrorCode::kInvalidArgument, std::string(type) + ": not a JSON object");
  }
  T value;
  NARCACHE_TRY(read_fields(Reader(j, type), value));
  return value;
}

std::string dump(const json& j) {
  // Replace invalid UTF-8 (a log tail may hold any bytes) instead of throwing.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// --- the objects, each as a to/from pair ---

json toObject(const DerivationText& v) {
  return {{"path", v.path}, {"text", v.text}};
}
Status read(const Reader& r, DerivationText& v) {
  NARCACHE_TRY(r.string("path", v.path, true));
  NARCACHE_TRY(r.string("text", v.text, true));
  return {};
}

json toObject(const SubmitBuild& v) {
  return {{"derivation", v.derivation},
          {"priority", v.priority},
          {"tags", v.tags},
          {"ignore_if_built", v.ignore_if_built}};
}
Status read(const Reader& r, SubmitBuild& v) {
  NARCACHE_TRY(r.string("derivation", v.derivation, true));
  NARCACHE_TRY(r.integer("priority", v.priority));
  NARCACHE_TRY(r.stringMap("tags", v.tags));
  NARCACHE_TRY(r.boolean("ignore_if_built", v.ignore_if_built));
  return {};
}

json toObject(const BuildInfo& v) {
  json j = {{"id", v.id},
            {"derivation", v.derivation},
            {"system", v.system},
            {"required_features", v.required_features},
            {"state", std::string(buildStateName(v.state))},
            {"priority", v.priority},
            {"tags", v.tags},
            {"tries", v.tries},
            {"submitted_at", v.submitted_at},
            {"updated_at", v.updated_at},
            {"not_before", v.not_before},
            {"agent", v.agent},
            {"waiting_for", v.waiting_for},
            {"blocked_by", v.blocked_by},
            {"outputs", v.outputs},
            {"message", v.message},
            {"log_url", v.log_url},
            {"skipped", v.skipped}};
  if (v.retry_of) j["retry_of"] = *v.retry_of;
  return j;
}
Status read(const Reader& r, BuildInfo& v) {
  NARCACHE_TRY(r.integer("id", v.id, true));
  NARCACHE_TRY(r.string("derivation", v.derivation, true));
  NARCACHE_TRY(r.string("system", v.system));
  NARCACHE_TRY(r.strings("required_features", v.required_features));
  NARCACHE_TRY(r.buildState("state", v.state, true));
  NARCACHE_TRY(r.integer("priority", v.priority));
  NARCACHE_TRY(r.stringMap("tags", v.tags));
  NARCACHE_TRY(r.integer("tries", v.tries));
  NARCACHE_TRY(r.integer("submitted_at", v.submitted_at));
  NARCACHE_TRY(r.integer("updated_at", v.updated_at));
  NARCACHE_TRY(r.integer("not_before", v.not_before));
  NARCACHE_TRY(r.string("agent", v.agent));
  NARCACHE_TRY(r.strings("waiting_for", v.waiting_for));
  NARCACHE_TRY(r.strings("blocked_by", v.blocked_by));
  NARCACHE_TRY(r.stringMap("outputs", v.outputs));
  NARCACHE_TRY(r.string("message", v.message));
  NARCACHE_TRY(r.string("log_url", v.log_url));
  NARCACHE_TRY(r.optionalId("retry_of", v.retry_of));
  NARCACHE_TRY(r.boolean("skipped", v.skipped));
  return {};
}

json toObject(const AgentInfo& v) {
  return {{"name", v.name},           {"systems", v.systems},
          {"features", v.features},   {"max_parallel", v.max_parallel},
          {"last_seen", v.last_seen}, {"connected", v.connected},
          {"builds", v.builds}};
}
Status read(const Reader& r, AgentInfo& v) {
  NARCACHE_TRY(r.string("name", v.name, true));
  NARCACHE_TRY(r.strings("systems", v.systems));
  NARCACHE_TRY(r.strings("features", v.features));
  NARCACHE_TRY(r.integer("max_parallel", v.max_parallel));
  NARCACHE_TRY(r.integer("last_seen", v.last_seen));
  NARCACHE_TRY(r.boolean("connected", v.connected));
  NARCACHE_TRY(r.ids("builds", v.builds));
  return {};
}

json toObject(const Allocation& v) {
  json derivations = json::array();
  for (const auto& d : v.derivations) derivations.push_back(toObject(d));
  return {{"allocation_id", v.allocation_id},
          {"build_id", v.build_id},
          {"derivation", v.derivation},
          {"derivations", std::move(derivations)},
          {"lease_seconds", v.lease_seconds},
          {"timeout_seconds", v.timeout_seconds},
          {"max_silent_seconds", v.max_silent_seconds}};
}
Status read(const Reader& r, Allocation& v) {
  NARCACHE_TRY(r.integer("allocation_id", v.allocation_id, true));
  NARCACHE_TRY(r.integer("build_id", v.build_id, true));
  NARCACHE_TRY(r.string("derivation", v.derivation, true));
  NARCACHE_TRY(
      r.objects("derivations", v.derivations,
                [](const Reader& rr, DerivationText& d) -> Status { return read(rr, d); }));
  NARCACHE_TRY(r.integer("lease_seconds", v.lease_seconds));
  NARCACHE_TRY(r.integer("timeout_seconds", v.timeout_seconds));
  NARCACHE_TRY(r.integer("max_silent_seconds", v.max_silent_seconds));
  return {};
}

template <typename T>
json arrayOf(const std::vector<T>& values) {
  json a = json::array();
  for (const auto& v : values) a.push_back(toObject(v));
  return a;
}

template <typename T>
auto reader() {
  return [](const Reader& r, T& v) -> Status { return read(r, v); };
}

}  // namespace

std::string_view buildStateName(BuildState state) {
  return nameOf(kBuildStates, state);
}
Result<BuildState> parseBuildState(std::string_view name) {
  return valueOf(kBuildStates, name, "build state");
}
std::string_view reportStatusName(ReportStatus status) {
  return nameOf(kReportStatuses, status);
}
Result<ReportStatus> parseReportStatus(std::string_view name) {
  return valueOf(kReportStatuses, name, "result status");
}

// --- client API ---

std::string toJson(const UnknownDerivationsRequest& value) {
  return dump({{"paths", value.paths}});
}
template <>
Result<UnknownDerivationsRequest> parse<UnknownDerivationsRequest>(std::string_view text) {
  return parseObject<UnknownDerivationsRequest>(
      text, "UnknownDerivationsRequest",
      [](const Reader& r, UnknownDerivationsRequest& v) -> Status {
        return r.strings("paths", v.paths, true);
      });
}

std::string toJson(const UnknownDerivationsResponse& value) {
  return dump({{"unknown", value.unknown}});
}
template <>
Result<UnknownDerivationsResponse> parse<UnknownDerivationsResponse>(std::string_view text) {
  return parseObject<UnknownDerivationsResponse>(
      text, "UnknownDerivationsResponse",
      [](const Reader& r, UnknownDerivationsResponse& v) -> Status {
        return r.strings("unknown", v.unknown, true);
      });
}

std::string toJson(const SubmitRequest& value) {
  return dump({{"derivations", arrayOf(value.derivations)}, {"builds", arrayOf(value.builds)}});
}
template <>
Result<SubmitRequest> parse<SubmitRequest>(std::string_view text) {
  return parseObject<SubmitRequest>(
      text, "SubmitRequest", [](const Reader& r, SubmitRequest& v) -> Status {
        NARCACHE_TRY(r.objects("derivations", v.derivations, reader<DerivationText>()));
        NARCACHE_TRY(r.objects("builds", v.builds, reader<SubmitBuild>(), true));
        return Status{};
      });
}

std::string toJson(const SubmitResponse& value) {
  return dump({{"builds", arrayOf(value.builds)}});
}
template <>
Result<SubmitResponse> parse<SubmitResponse>(std::string_view text) {
  return parseObject<SubmitResponse>(
      text, "SubmitResponse", [](const Reader& r, SubmitResponse& v) -> Status {
        return r.objects("builds", v.builds, reader<BuildInfo>(), true);
      });
}

std::string toJson(const BuildInfo& value) {
  return dump(toObject(value));
}
template <>
Result<BuildInfo> parse<BuildInfo>(std::string_view text) {
  return parseObject<BuildInfo>(text, "BuildInfo", reader<BuildInfo>());
}

std::string toJson(const BuildList& value) {
  json j = {{"builds", arrayOf(value.builds)}};
  if (value.next_after) j["next_after"] = *value.next_after;
  return dump(j);
}
template <>
Result<BuildList> parse<BuildList>(std::string_view text) {
  return parseObject<BuildList>(text, "BuildList", [](const Reader& r, BuildList& v) -> Status {
    NARCACHE_TRY(r.objects("builds", v.builds, reader<BuildInfo>(), true));
    NARCACHE_TRY(r.optionalId("next_after", v.next_after));
    return Status{};
  });
}

std::string toJson(const AddAgentRequest& value) {
  return dump({{"name", value.name}});
}
template <>
Result<AddAgentRequest> parse<AddAgentRequest>(std::string_view text) {
  return parseObject<AddAgentRequest>(
      text, "AddAgentRequest",
      [](const Reader& r, AddAgentRequest& v) -> Status { return r.string("name", v.name, true); });
}

std::string toJson(const AddAgentResponse& value) {
  return dump({{"name", value.name}, {"secret", value.secret}});
}
template <>
Result<AddAgentResponse> parse<AddAgentResponse>(std::string_view text) {
  return parseObject<AddAgentResponse>(text, "AddAgentResponse",
                                       [](const Reader& r, AddAgentResponse& v) -> Status {
                                         NARCACHE_TRY(r.string("name", v.name, true));
                                         NARCACHE_TRY(r.string("secret", v.secret, true));
                                         return Status{};
                                       });
}

std::string toJson(const AgentList& value) {
  return dump({{"agents", arrayOf(value.agents)}});
}
template <>
Result<AgentList> parse<AgentList>(std::string_view text) {
  return parseObject<AgentList>(text, "AgentList", [](const Reader& r, AgentList& v) -> Status {
    return r.objects("agents", v.agents, reader<AgentInfo>(), true);
  });
}

// --- agent API ---

std::string toJson(const FetchRequest& value) {
  return dump({{"request_id", value.request_id},
               {"systems", value.systems},
               {"features", value.features},
               {"max_parallel", value.max_parallel},
               {"running", value.running}});
}
template <>
Result<FetchRequest> parse<FetchRequest>(std::string_view text) {
  return parseObject<FetchRequest>(text, "FetchRequest",
                                   [](const Reader& r, FetchRequest& v) -> Status {
                                     NARCACHE_TRY(r.string("request_id", v.request_id, true));
                                     NARCACHE_TRY(r.strings("systems", v.systems, true));
                                     NARCACHE_TRY(r.strings("features", v.features));
                                     NARCACHE_TRY(r.integer("max_parallel", v.max_parallel));
                                     NARCACHE_TRY(r.integer("running", v.running));
                                     return Status{};
                                   });
}

std::string toJson(const FetchResponse& value) {
  return dump({{"allocations", arrayOf(value.allocations)}, {"poll_seconds", value.poll_seconds}});
}
template <>
Result<FetchResponse> parse<FetchResponse>(std::string_view text) {
  return parseObject<FetchResponse>(
      text, "FetchResponse", [](const Reader& r, FetchResponse& v) -> Status {
        NARCACHE_TRY(r.objects("allocations", v.allocations, reader<Allocation>(), true));
        NARCACHE_TRY(r.integer("poll_seconds", v.poll_seconds));
        return Status{};
      });
}

std::string toJson(const HeartbeatRequest& value) {
  return dump({{"allocations", value.allocations}});
}
template <>
Result<HeartbeatRequest> parse<HeartbeatRequest>(std::string_view text) {
  return parseObject<HeartbeatRequest>(text, "HeartbeatRequest",
                                       [](const Reader& r, HeartbeatRequest& v) -> Status {
                                         return r.ids("allocations", v.allocations, true);
                                       });
}

std::string toJson(const HeartbeatResponse& value) {
  return dump({{"valid", value.valid}, {"canceled", value.canceled}});
}
template <>
Result<HeartbeatResponse> parse<HeartbeatResponse>(std::string_view text) {
  return parseObject<HeartbeatResponse>(text, "HeartbeatResponse",
                                        [](const Reader& r, HeartbeatResponse& v) -> Status {
                                          NARCACHE_TRY(r.ids("valid", v.valid));
                                          NARCACHE_TRY(r.ids("canceled", v.canceled));
                                          return Status{};
                                        });
}

std::string toJson(const ResultReport& value) {
  return dump({{"allocation_id", value.allocation_id},
               {"status", std::string(reportStatusName(value.status))},
               {"outputs", value.outputs},
               {"missing_inputs", value.missing_inputs},
               {"message", value.message},
               {"log_tail", value.log_tail},
               {"build_seconds", value.build_seconds}});
}
template <>
Result<ResultReport> parse<ResultReport>(std::string_view text) {
  return parseObject<ResultReport>(
      text, "ResultReport", [](const Reader& r, ResultReport& v) -> Status {
        NARCACHE_TRY(r.integer("allocation_id", v.allocation_id, true));
        NARCACHE_TRY(r.reportStatus("status", v.status, true));
        NARCACHE_TRY(r.stringMap("outputs", v.outputs));
        NARCACHE_TRY(r.strings("missing_inputs", v.missing_inputs));
        NARCACHE_TRY(r.string("message", v.message));
        NARCACHE_TRY(r.string("log_tail", v.log_tail));
        NARCACHE_TRY(r.number("build_seconds", v.build_seconds));
        return Status{};
      });
}

std::string toJson(const ReleaseRequest& value) {
  return dump({{"allocations", value.allocations}, {"reason", value.reason}});
}
template <>
Result<ReleaseRequest> parse<ReleaseRequest>(std::string_view text) {
  return parseObject<ReleaseRequest>(text, "ReleaseRequest",
                                     [](const Reader& r, ReleaseRequest& v) -> Status {
                                       NARCACHE_TRY(r.ids("allocations", v.allocations, true));
                                       NARCACHE_TRY(r.string("reason", v.reason));
                                       return Status{};
                                     });
}

std::string toJson(const ResultAck& value) {
  return dump({{"accepted", value.accepted}});
}
template <>
Result<ResultAck> parse<ResultAck>(std::string_view text) {
  return parseObject<ResultAck>(text, "ResultAck", [](const Reader& r, ResultAck& v) -> Status {
    return r.boolean("accepted", v.accepted, true);
  });
}

std::string toJson(const ErrorBody& value) {
  return dump({{"error", value.error}});
}
template <>
Result<ErrorBody> parse<ErrorBody>(std::string_view text) {
  return parseObject<ErrorBody>(text, "ErrorBody", [](const Reader& r, ErrorBody& v) -> Status {
    return r.string("error", v.error, true);
  });
}

}  // namespace narcache::coordinator
