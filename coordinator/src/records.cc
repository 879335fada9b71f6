// Encodings of the coordinator's database records: see records.h.

#include "records.h"

#include <nlohmann/json.hpp>

namespace narcache::coordinator {
namespace {

using nlohmann::json;

json buildJson(const BuildInfo& b) {
  json j{{"id", b.id},
         {"derivation", b.derivation},
         {"system", b.system},
         {"state", buildStateName(b.state)},
         {"priority", b.priority},
         {"tags", b.tags},
         {"tries", b.tries},
         {"submitted_at", b.submitted_at},
         {"updated_at", b.updated_at},
         {"not_before", b.not_before},
         {"agent", b.agent},
         {"waiting_for", b.waiting_for},
         {"blocked_by", b.blocked_by},
         {"outputs", b.outputs},
         {"message", b.message},
         {"log_url", b.log_url},
         {"skipped", b.skipped}};
  if (b.retry_of) j["retry_of"] = *b.retry_of;
  return j;
}

template <typename T>
Result<T> parseWith(std::string_view value, std::string_view table, T (*fn)(const json&)) {
  try {
    return fn(json::parse(value));
  } catch (const json::exception& e) {
    return fail(ErrorCode::kCorruption,
                "coordinator database, table " + std::string(table) + ": " + e.what());
  }
}

BuildRecord buildFrom(const json& j) {
  BuildRecord r;
  BuildInfo& b = r.info;
  const json& i = j.at("b");
  b.id = i.at("id").get<std::uint64_t>();
  b.derivation = i.at("derivation").get<std::string>();
  b.system = i.at("system").get<std::string>();
  auto state = parseBuildState(i.at("state").get<std::string>());
  if (!state) throw json::other_error::create(501, "bad state", nullptr);
  b.state = *state;
  b.priority = i.at("priority").get<int>();
  b.tags = i.at("tags").get<std::map<std::string, std::string>>();
  b.tries = i.at("tries").get<int>();
  b.submitted_at = i.at("submitted_at").get<std::int64_t>();
  b.updated_at = i.at("updated_at").get<std::int64_t>();
  b.not_before = i.at("not_before").get<std::int64_t>();
  b.agent = i.at("agent").get<std::string>();
  b.waiting_for = i.at("waiting_for").get<std::vector<std::string>>();
  b.blocked_by = i.at("blocked_by").get<std::vector<std::string>>();
  b.outputs = i.at("outputs").get<std::map<std::string, std::string>>();
  b.message = i.at("message").get<std::string>();
  b.log_url = i.at("log_url").get<std::string>();
  b.skipped = i.at("skipped").get<bool>();
  if (i.contains("retry_of")) b.retry_of = i.at("retry_of").get<std::uint64_t>();
  r.allocation = j.at("a").get<std::uint64_t>();
  return r;
}

DrvRecord drvFrom(const json& j) {
  DrvRecord r;
  r.system = j.at("system").get<std::string>();
  r.outputs = j.at("outputs").get<std::map<std::string, std::string>>();
  r.input_drvs = j.at("input_drvs").get<std::map<std::string, std::vector<std::string>>>();
  r.input_srcs = j.at("input_srcs").get<std::vector<std::string>>();
  r.failures = j.at("failures").get<int>();
  r.failing = j.at("failing").get<bool>();
  return r;
}

AllocRecord allocFrom(const json& j) {
  AllocRecord r;
  r.build = j.at("build").get<std::uint64_t>();
  r.agent = j.at("agent").get<std::string>();
  r.request_id = j.at("request_id").get<std::string>();
  r.lease_until = j.at("lease_until").get<std::int64_t>();
  r.created = j.at("created").get<std::int64_t>();
  return r;
}

AgentRecord agentFrom(const json& j) {
  AgentRecord r;
  r.secret_sha256 = j.at("secret_sha256").get<std::string>();
  r.created = j.at("created").get<std::int64_t>();
  return r;
}

}  // namespace

std::string idKey(std::uint64_t id) {
  std::string key(8, '\0');
  for (int i = 7; i >= 0; --i) {
    key[i] = static_cast<char>(id & 0xff);
    id >>= 8;
  }
  return key;
}

std::uint64_t keyId(std::string_view key) {
  std::uint64_t id = 0;
  for (std::size_t i = 0; i < 8 && i < key.size(); ++i) {
    id = (id << 8) | static_cast<unsigned char>(key[i]);
  }
  return id;
}

std::string buildInfoJson(const BuildInfo& info) {
  return buildJson(info).dump();
}

std::string encode(const BuildRecord& r) {
  return std::string(1, static_cast<char>('0' + static_cast<int>(r.info.state))) +
         json{{"b", buildJson(r.info)}, {"a", r.allocation}}.dump();
}

std::optional<BuildState> peekBuildState(std::string_view value) {
  if (value.empty() || value[0] < '0' || value[0] > '5') return std::nullopt;
  return static_cast<BuildState>(value[0] - '0');
}

std::string encode(const DrvRecord& r) {
  return json{{"system", r.system},         {"outputs", r.outputs},
              {"input_drvs", r.input_drvs}, {"input_srcs", r.input_srcs},
              {"failures", r.failures},     {"failing", r.failing}}
      .dump();
}

std::string encode(const AllocRecord& r) {
  return json{{"build", r.build},
              {"agent", r.agent},
              {"request_id", r.request_id},
              {"lease_until", r.lease_until},
              {"created", r.created}}
      .dump();
}

std::string encode(const AgentRecord& r) {
  return json{{"secret_sha256", r.secret_sha256}, {"created", r.created}}.dump();
}

Result<BuildRecord> decodeBuild(std::string_view value) {
  if (!peekBuildState(value)) {
    return fail(ErrorCode::kCorruption, "coordinator database, table builds: bad record");
  }
  return parseWith<BuildRecord>(value.substr(1), "builds", buildFrom);
}
Result<DrvRecord> decodeDrv(std::string_view value) {
  return parseWith<DrvRecord>(value, "drvs", drvFrom);
}
Result<AllocRecord> decodeAlloc(std::string_view value) {
  return parseWith<AllocRecord>(value, "allocs", allocFrom);
}
Result<AgentRecord> decodeAgent(std::string_view value) {
  return parseWith<AgentRecord>(value, "agents", agentFrom);
}

}  // namespace narcache::coordinator
