// The client commands that change builds, end to end through the CLI: `build cancel` and
// `build retry` (a new build that runs), and the errors a user sees for what cannot be done.
#include "coordinator_e2e.cc"  // NOLINT: shared fixture, one executable per *_test.cc

namespace narcache::test {
namespace {

using coordinator::BuildState;

TEST_F(CoordinatorE2E, CliCancelsRetriesAndExplainsWhatItCannotDo) {
  startCoordinator();
  auto drv = create("lonely", "echo done > $out");
  auto ids = submit({drv});  // no agent yet: it stays queued
  ASSERT_EQ(ids.size(), 1u);
  auto cli = [&](const std::string& verb, std::uint64_t id) {
    return narcache(
        {"build", verb, std::to_string(id), "--json", "--coordinator", coordinatorUrl()});
  };

  auto retried_too_early = cli("retry", ids[0]);
  EXPECT_NE(retried_too_early.exit_code, 0);
  EXPECT_NE(retried_too_early.err.find("build " + std::to_string(ids[0]) + " is still queued"),
            std::string::npos)
      << retried_too_early.err;

  auto canceled = cli("cancel", ids[0]);
  ASSERT_EQ(canceled.exit_code, 0) << canceled.err;
  auto info = coordinator::parse<coordinator::BuildInfo>(canceled.out);
  ASSERT_TRUE(info) << canceled.out;
  EXPECT_EQ(info->state, BuildState::kCanceled);
  EXPECT_EQ(show(ids[0]).state, BuildState::kCanceled);

  auto again = cli("cancel", ids[0]);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("is already canceled"), std::string::npos) << again.err;

  auto retried = cli("retry", ids[0]);
  ASSERT_EQ(retried.exit_code, 0) << retried.err;
  auto fresh = coordinator::parse<coordinator::BuildInfo>(retried.out);
  ASSERT_TRUE(fresh) << retried.out;
  EXPECT_NE(fresh->id, ids[0]);
  EXPECT_EQ(fresh->retry_of, ids[0]);
  EXPECT_EQ(fresh->derivation, info->derivation);

  auto unknown = cli("show", 999999);
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("999999"), std::string::npos) << unknown.err;
  auto not_a_number = narcache({"build", "cancel", "12x", "--coordinator", coordinatorUrl()});
  EXPECT_NE(not_a_number.exit_code, 0);
  EXPECT_NE(not_a_number.err.find("12x"), std::string::npos) << not_a_number.err;

  startAgent("only", 1);
  ASSERT_TRUE(waitSucceeded({fresh->id}, 30)) << agentLogs();
  EXPECT_EQ(show(ids[0]).state, BuildState::kCanceled);  // the canceled one stays canceled
  auto finished = cli("cancel", fresh->id);
  EXPECT_NE(finished.exit_code, 0);
  EXPECT_NE(finished.err.find("is already succeeded"), std::string::npos) << finished.err;
}

// Options that cannot work are refused before anything starts, naming the option.
TEST(CoordinatorCliOptions, BadOptionsAreRefusedClearly) {
  TempDir tmp;
  const std::string db = (tmp / "db").string();
  const std::string store = (tmp / "store").string();
  ASSERT_EQ(narcache({"store", "init", "--store", store}).exit_code, 0);
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--db", db}, "give exactly one of --store DIR (a local store) or --cache URL"},
      {{"--db", db, "--store", store, "--cache", "http://127.0.0.1:1"}, "give exactly one"},
      {{"--db", db, "--cache", "127.0.0.1:8080"}, "cache URL: not an http:// or https:// URL"},
      {{"--db", db, "--store", store, "--lease", "0s"}, "--lease: a positive duration"},
      {{"--db", db, "--store", store, "--hook-timeout", "soon"}, "--hook-timeout"},
      {{"--db", db, "--store", store, "--waiting-recheck", "-5s"}, "--waiting-recheck"},
      {{"--db", db, "--store", store, "--max-retries", "-1"}, "--max-retries: 0 or more"},
      {{"--db", db, "--store", store, "--hook", "success=shell:true"}, "success=shell:true"},
      {{"--db", db, "--store", store, "--log-level", "verbose"}, "--log-level"},
      {{"--db", db, "--store", store, "--listen", "127.0.0.1:99999"}, "bad port"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {"coordinator"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto r = narcache(argv);
    EXPECT_NE(r.exit_code, 0) << c.message;
    EXPECT_NE(r.err.find(c.message), std::string::npos)
        << "expected '" << c.message << "' in: " << r.err;
  }
}

}  // namespace
}  // namespace narcache::test
