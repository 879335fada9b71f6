#pragma once
// Shared set-up of the coordinator end-to-end tests: a `narcache serve` (signing, upload token),
// a `narcache coordinator` on the same store, agents (`narcache agent`) as real processes, and
// derivations made with `narcache drv create` whose builders are /bin/sh scripts. Everything on
// 127.0.0.1; every wait bounded.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "narcache/coordinator/client.h"
#include "support/served_store.h"
#include "support/support.h"

namespace narcache::test {

class CoordinatorE2E : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts (or restarts, on the same port when it ran before) `narcache coordinator`.
  void startCoordinator(const std::vector<std::string>& extra = {});
  std::string coordinatorUrl() const {
    return "http://127.0.0.1:" + std::to_string(coordinator_port_);
  }
  coordinator::CoordinatorClient& client();

  // `narcache agent add NAME`; returns the secret file.
  std::filesystem::path addAgent(const std::string& name);
  // Starts an agent (added first if new) against the coordinator and cache URLs given (default:
  // the real ones).
  BackgroundProcess& startAgent(const std::string& name, int max_parallel = 2,
                                const std::string& coordinator_url = "",
                                const std::string& cache_url = "");

  // `narcache drv create` of a /bin/sh script depending on the "out" outputs of `deps`.
  std::filesystem::path create(const std::string& name, const std::string& script,
                               const std::vector<std::filesystem::path>& deps = {});
  std::string outPath(const std::filesystem::path& drv);
  std::string drvPath(const std::filesystem::path& drv);  // store path of the .drv

  // `narcache build submit FILES...`: the build ids.
  std::vector<std::uint64_t> submit(const std::vector<std::filesystem::path>& files,
                                    const std::vector<std::string>& extra = {});
  // `narcache build show ID --json`.
  coordinator::BuildInfo show(std::uint64_t id);
  std::vector<coordinator::BuildInfo> builds();

  // Polls `pred` every 200 ms for up to `seconds`; true when it held.
  bool waitFor(const std::function<bool()>& pred, int seconds);
  // Waits until every build among `ids` succeeded; on timeout, prints all builds.
  bool waitSucceeded(const std::vector<std::uint64_t>& ids, int seconds);
  std::string describeBuilds();
  std::string agentLogs() const;

  std::string lease_ = "3s";  // --lease of the coordinator
  // Each agent gets its own physical store (--store-root <tmp>/root-<name>; the builder runs in
  // a mount namespace, which needs root), so that every input is substituted from the cache.
  bool separate_stores_ = false;
  TempDir tmp_;
  std::string store_dir_;
  std::string public_key_;
  std::filesystem::path marks_;  // shared between builders (failure markers)
  std::unique_ptr<ServedStore> server_;
  std::unique_ptr<BackgroundProcess> coordinator_;
  int coordinator_port_ = 0;
  std::unique_ptr<coordinator::CoordinatorClient> client_;
  std::map<std::string, std::unique_ptr<BackgroundProcess>> agents_;
  std::map<std::string, std::filesystem::path> secrets_;
};

}  // namespace narcache::test
