#pragma once
// The records of the coordinator's database and their encodings (JSON values, big-endian id
// keys). Tables (db.cc opens them):
//   builds     u64 id -> state digit, allocation, BuildInfo JSON       drvs      .drv path ->
//   DrvRecord drv_text   .drv path -> ATerm text      outputs   output path -> .drv path (its
//   producer) allocs     u64 id -> AllocRecord        agents    name -> AgentRecord events <hook
//   key 16 hex><u64 seq> -> event JSON (see hooks.cc) meta       name -> decimal counter (next ids)
// Value types; decoders return Corruption naming the table.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/coordinator/protocol.h"
#include "narcache/narinfo/error.h"

namespace narcache::coordinator {

struct BuildRecord {
  BuildInfo info;
  std::uint64_t allocation = 0;  // kAllocated: the open allocation
};

struct DrvRecord {
  std::string system;
  std::vector<std::string> features;           // requiredSystemFeatures, sorted, no duplicates
  std::map<std::string, std::string> outputs;  // name -> path
  std::map<std::string, std::vector<std::string>> input_drvs;  // .drv path -> output names
  std::vector<std::string> input_srcs;
  int failures = 0;               // failed tries since the last success
  bool failing = false;           // past the retry threshold: no automatic retry
  std::int64_t last_success = 0;  // when a build of it last succeeded (0: never)
  // Automatic rebuilds because its outputs were missing soon after a success (see waitFor):
  // an agent that uploads elsewhere than the store the coordinator asks would otherwise make
  // it rebuild forever.
  int lost = 0;
  // Builds given back because the agent missed inputs that the store has (since the last
  // success): an agent that substitutes from another cache than the store the coordinator
  // asks would otherwise make it go round forever.
  int stale_inputs = 0;
  // Builds given back unbuilt (agent errors that are not the derivation's fault, agents
  // stopping) since the last success: from the second on, the build waits retry_backoff * 2^(n-2)
  // (at most 10 minutes) before it is allocated again, so a derivation that crashes the build
  // engine every time does not go round the agents without a pause. It is never failed for it: no
  // dead end.
  int released = 0;
};

struct AllocRecord {
  std::uint64_t build = 0;
  std::string agent;
  std::string request_id;
  std::int64_t lease_until = 0;
  std::int64_t created = 0;
};

struct AgentRecord {
  std::string secret_sha256;  // base16
  std::int64_t created = 0;
};

std::string idKey(std::uint64_t id);  // 8 bytes, big-endian: keys sort by id
std::uint64_t keyId(std::string_view key);

std::string encode(const BuildRecord& record);
std::string encode(const DrvRecord& record);
std::string encode(const AllocRecord& record);
std::string encode(const AgentRecord& record);
Result<BuildRecord> decodeBuild(std::string_view value);
// The state of an encoded build record without decoding it (start-up counts every build).
std::optional<BuildState> peekBuildState(std::string_view value);
Result<DrvRecord> decodeDrv(std::string_view value);
Result<AllocRecord> decodeAlloc(std::string_view value);
Result<AgentRecord> decodeAgent(std::string_view value);

}  // namespace narcache::coordinator
