// Encodings of the coordinator's database records: see records.h.

#include "records.h"

#include <charconv>
#include <nlohmann/json.hpp>

namespace narcache::coordinator {
namespace {

using nlohmann::json;

template <typename T>
Result<T> parseWith(std::string_view value, std::string_view table, T (*fn)(const json&)) {
  try {
    return fn(json::parse(value));
  } catch (const json::exception& e) {
    return fail(ErrorCode::kCorruption,
                "coordinator database, table " + std::string(table) + ": " + e.what());
  }
}

DrvRecord drvFrom(const json& j) {
  DrvRecord r;
  r.system = j.at("system").get<std::string>();
  r.features = j.value("features", std::vector<std::string>{});  // absent in older databases
  r.outputs = j.at("outputs").get<std::map<std::string, std::string>>();
  r.input_drvs = j.at("input_drvs").get<std::map<std::string, std::vector<std::string>>>();
  r.input_srcs = j.at("input_srcs").get<std::vector<std::string>>();
  r.failures = j.at("failures").get<int>();
  r.failing = j.at("failing").get<bool>();
  r.last_success = j.value("last_success", std::int64_t{0});  // absent in older databases
  r.lost = j.value("lost", 0);
  r.stale_inputs = j.value("stale_inputs", 0);
  r.released = j.value("released", 0);
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

std::string encode(const BuildRecord& r) {
  // "<state digit><allocation id>\n<BuildInfo JSON of the wire protocol>": the state is
  // readable without decoding (start-up counts every build).
  return std::string(1, static_cast<char>('0' + static_cast<int>(r.info.state))) +
         std::to_string(r.allocation) + "\n" + toJson(r.info);
}

std::optional<BuildState> peekBuildState(std::string_view value) {
  if (value.empty() || value[0] < '0' || value[0] > '5') return std::nullopt;
  return static_cast<BuildState>(value[0] - '0');
}

std::string encode(const DrvRecord& r) {
  return json{{"system", r.system},
              {"features", r.features},
              {"outputs", r.outputs},
              {"input_drvs", r.input_drvs},
              {"input_srcs", r.input_srcs},
              {"failures", r.failures},
              {"failing", r.failing},
              {"last_success", r.last_success},
              {"lost", r.lost},
              {"stale_inputs", r.stale_inputs},
              {"released", r.released}}
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
  auto bad = [] {
    return fail(ErrorCode::kCorruption, "coordinator database, table builds: bad record");
  };
  std::size_t nl = value.find('\n');
  if (!peekBuildState(value) || nl == std::string_view::npos) return bad();
  BuildRecord record;
  auto [ptr, ec] = std::from_chars(value.data() + 1, value.data() + nl, record.allocation);
  if (ec != std::errc() || ptr != value.data() + nl) return bad();
  auto info = parse<BuildInfo>(value.substr(nl + 1));
  if (!info) return fail(info.error().withContext("coordinator database, table builds"));
  record.info = std::move(*info);
  return record;
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
