// The coordinator and its agents end to end (issue 6): real `narcache serve`, `narcache
// coordinator` and `narcache agent` processes on 127.0.0.1, derivations with /bin/sh builders.
//   * a DAG of 51 derivations, some failing on their first try only, built by 3 agents: all
//     succeed, retries are counted, and the real Nix client copies the closure with signatures
//     required;
//   * a derivation that always fails stops after the retry threshold, its dependants wait
//     naming it, and a resubmission after the fix lets everything finish;
//   * an agent SIGKILLed mid-build: the build is re-queued after the lease and completes;
//   * an output marked deleted in the store makes the coordinator rebuild its producer first;
//   * a failing hook command does not stop another hook, and no event is lost across a
//     coordinator killed and restarted.
#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "coordinator_e2e.cc"  // NOLINT: shared fixture, one executable per *_test.cc

namespace narcache::test {
namespace {

namespace fs = std::filesystem;
using coordinator::BuildState;
using nlohmann::json;

TEST_F(CoordinatorE2E, DagOfFiftyWithFlakyBuildsThreeAgentsAndNixFetchesTheClosure) {
  // No agent dies here: a lease long enough that a starved CI machine cannot expire one (an
  // expired lease discards the flaky builds' first try, and the tries counted below with it).
  lease_ = "10s";
  separate_stores_ = ::geteuid() == 0;  // inputs come from the cache, not a shared store dir
  startCoordinator();
  // 5 layers of 10; node i of layer k refers to nodes i and i+1 of layer k-1 (so every node
  // is in the closure of the top, which refers to all of layer 4). Every 7th node fails on its
  // first try only (a marker file left in a directory shared by the builders).
  std::vector<std::vector<fs::path>> layers(5);
  std::vector<fs::path> all;
  std::set<std::string> flaky;
  int n = 0;
  for (int k = 0; k < 5; ++k) {
    for (int i = 0; i < 10; ++i, ++n) {
      std::string name = "n" + std::to_string(k) + "-" + std::to_string(i);
      std::string script = "mkdir $out && echo " + name + " > $out/name";
      std::vector<fs::path> deps;
      if (k > 0) {
        for (int j : {i, (i + 1) % 10}) {
          deps.push_back(layers[k - 1][j]);
          script += " && echo " + outPath(layers[k - 1][j]) + " >> $out/deps";
        }
      }
      if (n % 7 == 3) {
        std::string mark = (marks_ / name).string();
        script =
            "if [ ! -e " + mark + " ]; then : > " + mark + "; echo flaky; exit 1; fi; " + script;
        flaky.insert(name);
      }
      layers[k].push_back(create(name, script, deps));
      all.push_back(layers[k].back());
    }
  }
  std::string top_script = "mkdir $out";
  for (const auto& d : layers[4]) top_script += " && echo " + outPath(d) + " >> $out/deps";
  auto top = create("top", top_script, layers[4]);
  all.push_back(top);
  ASSERT_EQ(all.size(), 51u);

  for (const char* name : {"a1", "a2", "a3"}) startAgent(name, 2);
  // Only the top is submitted with --tag; the others as a second batch (their builds exist
  // before the coordinator would submit them for missing inputs).
  auto ids = submit(std::vector<fs::path>(all.begin(), all.end() - 1));
  auto top_id = submit({top}, {"--tag", "job=dag", "--priority", "5"});
  ids.insert(ids.end(), top_id.begin(), top_id.end());
  ASSERT_TRUE(waitSucceeded(ids, 120)) << "not all builds succeeded in time";

  int retried = 0;
  std::set<std::string> agents;
  for (const auto& b : builds()) {
    EXPECT_EQ(b.state, BuildState::kSucceeded) << b.derivation;
    std::string base = fs::path(b.derivation).filename().string();
    std::string name = base.substr(33, base.size() - 33 - 4);
    EXPECT_EQ(b.tries, flaky.contains(name) ? 2 : 1) << name;
    if (b.tries > 1) ++retried;
    agents.insert(b.agent);
  }
  EXPECT_EQ(retried, static_cast<int>(flaky.size()));
  EXPECT_GE(agents.size(), 2u) << "the work was spread over the agents";
  auto info = show(top_id[0]);
  EXPECT_EQ(info.tags.at("job"), "dag");
  EXPECT_EQ(info.outputs.at("out"), outPath(top));
  auto listed = narcache({"build", "list", "--coordinator", coordinatorUrl(), "--tag", "job=dag"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("top.drv"), std::string::npos) << listed.out;
  EXPECT_EQ(std::count(listed.out.begin(), listed.out.end(), '\n'), 1) << listed.out;
  auto agent_list = narcache({"agent", "list", "--coordinator", coordinatorUrl()});
  EXPECT_EQ(agent_list.exit_code, 0) << agent_list.err;
  EXPECT_NE(agent_list.out.find("a3"), std::string::npos) << agent_list.out;

  if (!haveNix()) GTEST_SKIP() << "nix-bin is not installed (scripts/setup.sh installs it)";
  NixEnv nix;
  const std::string from = server_->url() + "?store=" + store_dir_;
  const std::string to = "local?root=" + (tmp_ / "nixroot").string() + "&store=" + store_dir_;
  auto copy = nix.run({"nix", "copy", "--from", from, "--to", to, "--option", "require-sigs",
                       "true", "--option", "trusted-public-keys", public_key_, outPath(top)});
  ASSERT_EQ(copy.exit_code, 0) << copy.err;
  auto paths = nix.run({"nix", "path-info", "--store", to, "-r", outPath(top)});
  ASSERT_EQ(paths.exit_code, 0) << paths.err;
  EXPECT_EQ(std::count(paths.out.begin(), paths.out.end(), '\n'), 51) << paths.out;
}

TEST_F(CoordinatorE2E, AlwaysFailingStopsAtThresholdDependantsWaitThenResubmissionFinishes) {
  startCoordinator({"--max-retries", "2"});
  fs::path fixed = marks_ / "fixed";
  auto bad =
      create("bad", "[ -e " + fixed.string() + " ] || { echo broken; exit 3; }; echo ok > $out");
  auto mid = create("mid", "echo $(cat " + outPath(bad) + ") > $out", {bad});
  auto top = create("top", "cat " + outPath(mid) + " > $out", {mid});
  auto other = create("other", "echo fine > $out");
  startAgent("a1", 2);
  auto ids = submit({top, other});
  ASSERT_TRUE(waitSucceeded({ids[1]}, 30));
  // bad is built 3 times (1 + 2 retries), then failing: no more automatic tries.
  std::optional<coordinator::BuildInfo> bad_build;
  ASSERT_TRUE(waitFor(
      [&] {
        for (const auto& b : builds()) {
          if (b.derivation == drvPath(bad) && b.state == BuildState::kFailed) bad_build = b;
        }
        return bad_build.has_value();
      },
      45));
  EXPECT_EQ(bad_build->tries, 3);
  EXPECT_NE(bad_build->message.find("exit code 3"), std::string::npos) << bad_build->message;
  std::this_thread::sleep_for(std::chrono::seconds(3));  // nothing retries it now
  for (const auto& b : builds()) {
    if (b.derivation == drvPath(bad)) {
      EXPECT_EQ(b.tries, 3);
      continue;
    }
    EXPECT_NE(b.state, BuildState::kFailed) << "no build fails for a dependency: " << b.derivation;
  }
  auto top_info = show(ids[0]);
  EXPECT_EQ(top_info.state, BuildState::kWaiting);
  bool names_bad = false;
  for (const auto& b : builds()) {
    if (b.derivation != drvPath(mid)) continue;
    EXPECT_EQ(b.state, BuildState::kWaiting);
    for (const auto& d : b.blocked_by) names_bad |= d == drvPath(bad);
  }
  EXPECT_TRUE(names_bad) << describeBuilds();
  auto human =
      narcache({"build", "show", std::to_string(ids[0]), "--coordinator", coordinatorUrl()});
  EXPECT_NE(human.out.find("waiting"), std::string::npos) << human.out;

  // Fix the environment and submit bad again: a new submission always runs.
  writeFile(fixed, "");
  auto again = submit({bad});
  ASSERT_TRUE(waitSucceeded({again[0], ids[0]}, 60));
  EXPECT_EQ(show(ids[0]).outputs.at("out"), outPath(top));
}

TEST_F(CoordinatorE2E, AgentKilledMidBuildIsRequeuedAfterTheLease) {
  startCoordinator();
  fs::path started = marks_ / "started";
  auto slow = create("slow", "echo x >> " + started.string() + "; sleep 4; echo done > $out");
  auto& doomed = startAgent("doomed", 1);
  auto ids = submit({slow});
  ASSERT_TRUE(waitFor([&] { return fs::exists(started); }, 30)) << agentLogs();
  EXPECT_EQ(show(ids[0]).agent, "doomed");
  doomed.stop(SIGKILL);
  auto killed_at = std::chrono::steady_clock::now();
  startAgent("rescuer", 1);
  ASSERT_TRUE(waitSucceeded(ids, 40));
  auto info = show(ids[0]);
  EXPECT_EQ(info.agent, "rescuer");
  EXPECT_GE(std::chrono::steady_clock::now() - killed_at, std::chrono::seconds(3));
  // The killed agent's builder died with it (its build child got SIGTERM from the kernel and
  // killed its session): the marker was appended twice, once per agent.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(readFile(started), "x\nx\n");
}

TEST_F(CoordinatorE2E, MarkDeletedOutputMakesTheCoordinatorRebuildItsProducerFirst) {
  startCoordinator();
  auto producer = create("producer", "echo produced > $out");
  auto first = create("first", "cat " + outPath(producer) + " > $out", {producer});
  startAgent("a1", 2);
  auto ids = submit({producer, first});
  ASSERT_TRUE(waitSucceeded(ids, 40));
  auto gone = narcache({"mark-deleted", "--store", (tmp_ / "server").string(), "--reason", "test",
                        outPath(producer)});
  ASSERT_EQ(gone.exit_code, 0) << gone.err;
  // The build history says producer succeeded; the store says its output is gone.
  auto later =
      create("later", "cat " + outPath(producer) + " > $out; echo later >> $out", {producer});
  auto later_id = submit({later});
  ASSERT_TRUE(waitSucceeded(later_id, 40));
  int producer_builds = 0;
  for (const auto& b : builds()) {
    if (b.derivation == drvPath(producer)) {
      ++producer_builds;
      EXPECT_EQ(b.state, BuildState::kSucceeded);
    }
  }
  EXPECT_EQ(producer_builds, 2) << describeBuilds();
  auto narinfo =
      run({"curl", "-sf",
           server_->url("/" + fs::path(outPath(producer)).filename().string().substr(0, 32) +
                        ".narinfo")});
  EXPECT_EQ(narinfo.exit_code, 0) << "the producer's output is served again";
}

TEST_F(CoordinatorE2E, FailingHookDoesNotStopOthersAndEventsSurviveARestart) {
  fs::path events = tmp_ / "events.jsonl";
  const std::vector<std::string> hooks = {
      "--hook", "success=command:exit 1", "--hook",
      "success=command:cat >> " + events.string() + " && echo >> " + events.string()};
  startCoordinator(hooks);
  std::vector<fs::path> drvs;
  for (int i = 0; i < 6; ++i) {
    drvs.push_back(
        create("h" + std::to_string(i), "sleep 0.3; echo " + std::to_string(i) + " > $out"));
  }
  startAgent("a1", 2);
  auto ids = submit(drvs);
  // Kill the coordinator once some builds succeeded, restart it on the same database and port.
  ASSERT_TRUE(waitFor(
      [&] {
        int done = 0;
        for (const auto& b : builds()) done += b.state == BuildState::kSucceeded;
        return done >= 2;
      },
      40));
  coordinator_->stop(SIGKILL);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  startCoordinator(hooks);
  ASSERT_TRUE(waitSucceeded(ids, 60));
  std::set<std::uint64_t> seen;
  ASSERT_TRUE(waitFor(
      [&] {
        std::istringstream in(readFile(events));
        std::string line;
        seen.clear();
        while (std::getline(in, line)) {
          auto j = json::parse(line, nullptr, false);
          if (j.is_object() && j.value("event", "") == "success") {
            seen.insert(j["build"]["id"].get<std::uint64_t>());
          }
        }
        return seen.size() == ids.size();
      },
      30))
      << readFile(events);
  EXPECT_EQ(seen, std::set<std::uint64_t>(ids.begin(), ids.end()));
  auto metrics = client().metrics();
  ASSERT_TRUE(metrics) << metrics.error().message();
}

}  // namespace
}  // namespace narcache::test
