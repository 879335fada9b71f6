// The agent's own duties, end to end: on SIGTERM it stops fetching, gives its running build
// back and exits 0 (the build is not failed and completes elsewhere); restarted after a SIGKILL
// with the same work dir, it gives back what the previous run held at once, without waiting
// for the lease to expire.
#include <signal.h>

#include <thread>

#include "coordinator_e2e.cc"  // NOLINT: shared fixture, one executable per *_test.cc

namespace narcache::test {
namespace {

namespace fs = std::filesystem;
using coordinator::BuildState;

TEST_F(CoordinatorE2E, SigtermReleasesTheRunningBuildAndExits) {
  lease_ = "60s";
  startCoordinator();
  fs::path started = marks_ / "started";
  auto slow = create("slow", "echo x >> " + started.string() + "; sleep 3; echo done > $out");
  auto& first = startAgent("first", 1);
  auto ids = submit({slow});
  ASSERT_TRUE(waitFor([&] { return fs::exists(started); }, 30)) << agentLogs();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(first.stop(SIGTERM), 0) << first.err();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(8));
  EXPECT_NE(first.err().find("giving back"), std::string::npos) << first.err();
  auto info = show(ids[0]);
  EXPECT_TRUE(info.state == BuildState::kQueued || info.state == BuildState::kWaiting)
      << coordinator::buildStateName(info.state);
  startAgent("second", 1);
  ASSERT_TRUE(waitSucceeded(ids, 30));  // far less than the 60 s lease
  EXPECT_EQ(show(ids[0]).agent, "second");
}

TEST_F(CoordinatorE2E, RestartedAgentGivesBackWhatItHeld) {
  lease_ = "60s";
  startCoordinator();
  fs::path started = marks_ / "started";
  auto slow = create("slow", "echo x >> " + started.string() + "; sleep 2; echo done > $out");
  auto& agent = startAgent("phoenix", 1);
  auto ids = submit({slow});
  ASSERT_TRUE(waitFor([&] { return fs::exists(started); }, 30)) << agentLogs();
  agent.stop(SIGKILL);
  auto held = readFile(tmp_ / "agent-phoenix" / "allocations.json");
  EXPECT_NE(held.find("\"allocations\":[1"), std::string::npos) << held;
  auto t0 = std::chrono::steady_clock::now();
  auto& again = startAgent("phoenix", 1);
  ASSERT_TRUE(waitSucceeded(ids, 30)) << again.err();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  EXPECT_NE(again.err().find("left by a previous run"), std::string::npos) << again.err();
  EXPECT_EQ(readFile(started), "x\nx\n");
}

}  // namespace
}  // namespace narcache::test
