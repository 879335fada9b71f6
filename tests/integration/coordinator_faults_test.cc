// Agents behind fault-injecting proxies (tests/support/fault_proxy.h), one in front of the
// coordinator and one in front of the cache: dropped connections before and after the request
// was forwarded, delays, truncated answers. Every build still succeeds, the store verifies
// clean, and every output is there exactly once, as the builder made it. And a fetch slower
// than the lease does not hold up the heartbeats of the builds already running.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <thread>

#include "coordinator_e2e.cc"  // NOLINT: shared fixture, one executable per *_test.cc
#include "support/fault_proxy.h"

namespace narcache::test {
namespace {

namespace fs = std::filesystem;
using coordinator::BuildState;

// A proxy that holds back every `request` for `delay_ms` and injects no other fault.
FaultOptions holdBack(int port, const std::string& request, int delay_ms) {
  FaultOptions o;
  o.target_port = port;
  o.slow_request = request;
  o.slow_delay = std::chrono::milliseconds(delay_ms);
  return o;
}

// Waits until `proxy` holds a request back; false after `seconds`.
bool waitSlowed(const FaultProxy& proxy, int seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (proxy.counts().slowed == 0) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

TEST_F(CoordinatorE2E, BuildsFinishThroughFaultyProxiesAndNothingIsCorrupted) {
  lease_ = "5s";
  separate_stores_ = ::geteuid() == 0;  // else the agents share the store dir (fewer downloads)
  startCoordinator();
  FaultOptions to_coordinator;
  to_coordinator.target_port = coordinator_port_;
  to_coordinator.seed = 42;
  to_coordinator.drop_before = 0.08;
  to_coordinator.drop_after = 0.08;
  to_coordinator.truncate = 0.08;
  to_coordinator.delay = 0.15;
  to_coordinator.max_faults = 120;
  FaultProxy coordinator_proxy(to_coordinator);
  FaultOptions to_cache = to_coordinator;
  to_cache.target_port = server_->port();
  to_cache.seed = 7;
  to_cache.drop_before = 0.12;  // higher: the engine keeps its cache connections alive
  to_cache.drop_after = 0.12;
  to_cache.truncate = 0.12;
  to_cache.delay = 0.1;
  to_cache.max_faults = 80;
  FaultProxy cache_proxy(to_cache);

  // 4 layers of 5, each node referring to two of the layer below; outputs of a few KiB so
  // that truncation can cut nars in the middle.
  std::vector<std::vector<fs::path>> layers(4);
  std::vector<fs::path> all;
  for (int k = 0; k < 4; ++k) {
    for (int i = 0; i < 5; ++i) {
      std::string name = "f" + std::to_string(k) + "-" + std::to_string(i);
      std::string script = "mkdir $out && for x in 1 2 3 4 5 6 7 8; do echo " + name +
                           " $x line of text to make the nar a little longer >> $out/data; "
                           "done";
      std::vector<fs::path> deps;
      if (k > 0) {
        for (int j : {i, (i + 1) % 5}) {
          deps.push_back(layers[k - 1][j]);
          script += " && cat " + outPath(layers[k - 1][j]) + "/data >> $out/data && echo " +
                    outPath(layers[k - 1][j]) + " >> $out/deps";
        }
      }
      layers[k].push_back(create(name, script, deps));
      all.push_back(layers[k].back());
    }
  }
  startAgent("p1", 2, coordinator_proxy.url(), cache_proxy.url());
  startAgent("p2", 2, coordinator_proxy.url(), cache_proxy.url());
  auto ids = submit(all);
  ASSERT_TRUE(waitSucceeded(ids, 120));
  for (const auto& b : builds()) {
    EXPECT_EQ(b.state, BuildState::kSucceeded) << b.derivation;
  }
  auto c = coordinator_proxy.counts();
  auto s = cache_proxy.counts();
  std::fprintf(stderr,
               "coordinator proxy: %d connections, %d dropped before, %d after, %d truncated, "
               "%d delayed\ncache proxy: %d connections, %d dropped before, %d after, %d "
               "truncated, %d delayed\n",
               c.connections, c.dropped_before, c.dropped_after, c.truncated, c.delayed,
               s.connections, s.dropped_before, s.dropped_after, s.truncated, s.delayed);
  EXPECT_GT(c.dropped_before + c.dropped_after + c.truncated, 0);
  EXPECT_GT(s.dropped_before + s.dropped_after + s.truncated, 0);
  coordinator_proxy.stop();
  cache_proxy.stop();

  // The store is consistent and holds each output once, with the builder's content.
  auto verify = narcache({"verify", "--store", (tmp_ / "server").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  for (const auto& drv : all) {
    std::string out = outPath(drv);
    std::string hash = fs::path(out).filename().string().substr(0, 32);
    auto narinfo = run({"curl", "-sf", server_->url("/" + hash + ".narinfo")});
    EXPECT_EQ(narinfo.exit_code, 0) << out;
  }
  // Rebuild everything locally from the cache with Nix's judgement on hashes and signatures.
  if (!haveNix()) GTEST_SKIP() << "nix-bin is not installed (scripts/setup.sh installs it)";
  NixEnv nix;
  const std::string from = server_->url() + "?store=" + store_dir_;
  std::vector<std::string> verify_args = {
      "nix",       "store", "verify", "--store", from, "--option", "trusted-public-keys",
      public_key_, "-r"};
  for (const auto& d : layers[3]) verify_args.push_back(outPath(d));
  auto checked = nix.run(verify_args);
  EXPECT_EQ(checked.exit_code, 0) << checked.err;
}

TEST_F(CoordinatorE2E, ASlowFetchNeverDelaysTheHeartbeatsOfRunningBuilds) {
  // Every fetch takes longer than the whole lease (the coordinator's answer is held up, as by a
  // slow disk or network), while a build runs for two leases: its heartbeats must go out on
  // time all the same, so its lease never expires and it is built once.
  lease_ = "3s";
  startCoordinator();
  FaultProxy proxy(holdBack(coordinator_port_, "POST /api/v1/agent/fetch", 4000));
  auto drv = create("long", "sleep 6; echo done > $out");
  startAgent("s1", 2, proxy.url());
  auto ids = submit({drv});
  ASSERT_TRUE(waitSucceeded(ids, 60));
  auto info = show(ids[0]);
  EXPECT_EQ(info.tries, 1);
  EXPECT_EQ(coordinator_->err().find("expired"), std::string::npos) << coordinator_->err();
  EXPECT_GE(proxy.counts().slowed, 2) << "the agent fetched again while the build ran";
}

TEST_F(CoordinatorE2E, AnAgentStopsPromptlyWhileTheCoordinatorIsDown) {
  // SIGTERM to an agent whose coordinator has gone away: it stops its build and exits within
  // seconds instead of retrying heartbeats, its report and the release against a dead address.
  startCoordinator();
  auto drv = create("slow", "sleep 60; echo done > $out");
  auto& agent = startAgent("q1", 1);
  auto ids = submit({drv});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (show(ids[0]).state != BuildState::kAllocated &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(show(ids[0]).state, BuildState::kAllocated);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the build's child is running
  coordinator_->stop(SIGKILL);
  auto t0 = std::chrono::steady_clock::now();
  int code = agent.stop(SIGTERM);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code, 0) << agent.err();
  EXPECT_LT(took, 2.0) << agent.err();
  std::fprintf(stderr, "agent stopped in %.2f s\n", took);
}

TEST_F(CoordinatorE2E, AnAgentStopsPromptlyWhileTheCoordinatorNeverAnswers) {
  // The coordinator accepts the agent's fetch but never answers it (held for a minute, past
  // the agent's 20 s request timeout): SIGTERM cuts the request off after its grace (2 s).
  startCoordinator();
  FaultProxy proxy(holdBack(coordinator_port_, "POST /api/v1/agent/fetch", 60000));
  auto& agent = startAgent("h1", 1, proxy.url());
  ASSERT_TRUE(waitSlowed(proxy, 30)) << agent.err();
  auto t0 = std::chrono::steady_clock::now();
  int code = agent.stop(SIGTERM);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code, 0) << agent.err();
  EXPECT_LT(took, 4.0) << agent.err();
  EXPECT_NE(agent.err().find("cutting off"), std::string::npos) << agent.err();
  std::fprintf(stderr, "agent stopped in %.2f s\n", took);
}

TEST_F(CoordinatorE2E, AReportOnTheWireAtSigtermStillGetsThrough) {
  // The build's result report is held up for 1 s, and the agent is told to stop meanwhile:
  // the report is within the grace, so it gets through and the build is not done again.
  startCoordinator();
  FaultProxy proxy(holdBack(coordinator_port_, "POST /api/v1/agent/result", 1000));
  auto drv = create("quick", "echo done > $out");
  auto& agent = startAgent("r1", 1, proxy.url());
  auto ids = submit({drv});
  ASSERT_TRUE(waitSlowed(proxy, 60)) << agent.err();
  EXPECT_EQ(agent.stop(SIGTERM), 0) << agent.err();
  auto info = show(ids[0]);
  EXPECT_EQ(info.state, BuildState::kSucceeded) << agent.err();
  EXPECT_EQ(info.tries, 1);
  EXPECT_EQ(agent.err().find("cutting off"), std::string::npos) << agent.err();
}

}  // namespace
}  // namespace narcache::test
