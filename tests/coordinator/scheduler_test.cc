// The coordinator's scheduling rules against its real LMDB database and a real narstore Store:
// allocation order, systems and capacity, missing inputs (the store decides), retries and the
// failing threshold, leases, idempotency, cancel, restart.

#include <gtest/gtest.h>
#include <lmdb.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "coordinator/fixture.h"

namespace narcache::coordinator::testing {
namespace {

using ::testing::HasSubstr;

class SchedulerTest : public CoordinatorFixture {
 protected:
  // Opens the coordinator with --max-retries and --retry-backoff (seconds).
  void openWithRetries(int max_retries, int backoff_seconds) {
    auto o = options();
    o.max_retries = max_retries;
    o.retry_backoff_seconds = backoff_seconds;
    coord_ = open(o);
  }

  // "wants-dev": needs output "dev" of `input`, which has none, so it cannot be built.
  TestDrv wantsMissingOutput(const TestDrv& input) {
    DerivationAttrs attrs;
    attrs.name = "wants-dev";
    attrs.builder = "/bin/sh";
    attrs.system = kSystem;
    attrs.input_drvs[input.path] = {"dev"};
    auto made =
        makeDerivation(attrs, "/nix/store", [&](const std::string& p) -> Result<Derivation> {
          return drvs_.count(p) ? Result<Derivation>(drvs_.at(p)) : fail(ErrorCode::kNotFound, p);
        });
    EXPECT_TRUE(made.has_value()) << made.error().message();
    TestDrv t;
    t.path = *derivationStorePath(*made, "/nix/store");
    t.text = writeDerivation(*made);
    t.out = made->outputs.at("out").path;
    t.closure = input.closure;
    t.closure.push_back(t.path);
    drvs_[t.path] = *made;
    texts_[t.path] = t.text;
    return t;
  }

  // Submits the derivation `bad` (text `bad_text`, priority 9) beside `good` (priority 0): a
  // fetch for two allocates `good` only, and `bad` fails with a message containing `why`.
  void expectFailsAloneBeside(const std::string& bad, const std::string& bad_text,
                              const TestDrv& good, const std::string& why) {
    SubmitRequest req;
    req.derivations = {{good.path, good.text}, {bad, bad_text}};
    req.builds = {{bad, 9, {}, false}, {good.path, 0, {}, false}};
    auto b = coord_->submit(req);
    ASSERT_TRUE(b.has_value()) << b.error().message();
    auto got = fetch("a1", 2);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].derivation, good.path);
    BuildInfo failed = info(b->builds[0].id);
    EXPECT_EQ(failed.state, BuildState::kFailed);
    EXPECT_THAT(failed.message, HasSubstr(why));
  }
};

TEST_F(SchedulerTest, AllocatesByPriorityThenSubmissionOrder) {
  open();
  TestDrv a = drv("a"), b = drv("b"), c = drv("c");
  auto low = submit({a}, 0);
  auto high = submit({b, c}, 5);
  std::vector<std::uint64_t> order;
  for (int i = 0; i < 3; ++i) {
    auto got = fetch();
    ASSERT_EQ(got.size(), 1u);
    order.push_back(got[0].build_id);
  }
  EXPECT_EQ(order, (std::vector<std::uint64_t>{high[0].id, high[1].id, low[0].id}));
  EXPECT_TRUE(fetch().empty());
  EXPECT_EQ(coord_->stats().allocations_total, 3u);
}

TEST_F(SchedulerTest, BuiltinDerivationsGoToAnyAgent) {
  // System "builtin" (Nix's builtin:fetchurl derivations): every agent takes them, as in Nix;
  // no agent announces it.
  open();
  TestDrv fetched = drv("fetched", {}, "builtin");
  auto b = submit({fetched});
  auto got = fetch("a1", 1, {"aarch64-linux"});
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].build_id, b[0].id);
}

TEST_F(SchedulerTest, RespectsSystemsAndCapacity) {
  open();
  TestDrv arm = drv("arm", {}, "aarch64-linux");
  TestDrv x1 = drv("x1"), x2 = drv("x2"), x3 = drv("x3");
  submit({arm, x1, x2, x3});
  EXPECT_TRUE(fetch("a1", 1, {"i686-linux"}).empty());
  FetchRequest req;
  req.systems = {kSystem};
  req.max_parallel = 3;
  req.running = 1;
  auto two = coord_->fetch("a1", req);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(two->allocations.size(), 2u);
  auto rest = fetch("a2", 4, {"aarch64-linux", kSystem});
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(coord_->stats().agents_busy, 2u);
}

// requiredSystemFeatures, as Nix's build machines: a build goes only to an agent that offers
// every feature it needs; one that needs none goes anywhere.
TEST_F(SchedulerTest, RequiredSystemFeaturesPickTheAgents) {
  open();
  TestDrv vm = drv("vm-test", {}, kSystem, {}, {{"requiredSystemFeatures", "kvm nixos-test"}});
  TestDrv big = drv("big", {}, kSystem, {}, {{"requiredSystemFeatures", "big-parallel"}});
  TestDrv plain = drv("plain");
  for (const char* agent : {"a1", "a2", "a3"}) {
    ASSERT_TRUE(coord_->addAgent(AddAgentRequest{agent}).has_value());
  }
  auto builds = submit({vm, big, plain}, 5);
  EXPECT_EQ(builds[0].required_features, (std::vector<std::string>{"kvm", "nixos-test"}));
  auto fetchWith = [&](const std::string& agent, std::vector<std::string> features) {
    FetchRequest req;
    req.systems = {kSystem};
    req.features = std::move(features);
    req.max_parallel = 3;
    auto r = coord_->fetch(agent, req);
    EXPECT_TRUE(r.has_value());
    std::set<std::string> got;
    for (const auto& a : r->allocations) got.insert(a.derivation);
    return got;
  };
  // No kvm: big and plain, not the VM test (which needs both of its features).
  EXPECT_EQ(fetchWith("a1", {"big-parallel", "nixos-test"}),
            (std::set<std::string>{big.path, plain.path}));
  EXPECT_EQ(fetchWith("a2", {}), std::set<std::string>{});
  EXPECT_EQ(fetchWith("a3", {"benchmark", "kvm", "nixos-test"}), std::set<std::string>{vm.path});
  // Operators see what each agent offers (agent list).
  std::map<std::string, std::vector<std::string>> offered;
  for (const auto& a : coord_->agents().agents) offered[a.name] = a.features;
  EXPECT_EQ(offered["a3"], (std::vector<std::string>{"benchmark", "kvm", "nixos-test"}));
  EXPECT_TRUE(offered["a2"].empty());
}

// A database from before system features: its derivation and build records have none. They are
// filled in from the .drv texts once at open, and stay right across a requeue.
TEST_F(SchedulerTest, RecordsFromBeforeSystemFeaturesGetThemAtOpen) {
  open();
  TestDrv vm = drv("vm-test", {}, kSystem, {}, {{"requiredSystemFeatures", "kvm"}});
  auto b = submit({vm});
  coord_.reset();
  {  // Make the records look old: no "features", no "required_features", no migration mark.
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), MDB_SUCCESS);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 16), MDB_SUCCESS);
    ASSERT_EQ(mdb_env_open(env, (dir_ / "db").c_str(), 0, 0644), MDB_SUCCESS);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), MDB_SUCCESS);
    auto rewrite = [&](const char* table, const char* key_to_drop) {
      MDB_dbi dbi = 0;
      ASSERT_EQ(mdb_dbi_open(txn, table, 0, &dbi), MDB_SUCCESS);
      MDB_cursor* c = nullptr;
      ASSERT_EQ(mdb_cursor_open(txn, dbi, &c), MDB_SUCCESS);
      std::vector<std::pair<std::string, std::string>> rows;
      MDB_val k, v;
      for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
           rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        std::string value(static_cast<char*>(v.mv_data), v.mv_size);
        std::size_t json_at = value.find('{');
        auto j = nlohmann::json::parse(value.substr(json_at));
        j.erase(key_to_drop);
        rows.emplace_back(std::string(static_cast<char*>(k.mv_data), k.mv_size),
                          value.substr(0, json_at) + j.dump());
      }
      mdb_cursor_close(c);
      for (auto& [key, value] : rows) {
        MDB_val kk{key.size(), key.data()}, vv{value.size(), value.data()};
        ASSERT_EQ(mdb_put(txn, dbi, &kk, &vv, 0), MDB_SUCCESS);
      }
    };
    rewrite("drvs", "features");
    rewrite("builds", "required_features");
    MDB_dbi meta = 0;
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), MDB_SUCCESS);
    std::string mark = "features_migrated";
    MDB_val mk{mark.size(), mark.data()};
    ASSERT_EQ(mdb_del(txn, meta, &mk, nullptr), MDB_SUCCESS);
    ASSERT_EQ(mdb_txn_commit(txn), MDB_SUCCESS);
    mdb_env_close(env);
  }
  open();
  EXPECT_EQ(info(b[0].id).required_features, std::vector<std::string>{"kvm"});
  auto fetchWith = [&](std::vector<std::string> features) {
    FetchRequest req;
    req.systems = {kSystem};
    req.features = std::move(features);
    auto r = coord_->fetch("a1", req);
    EXPECT_TRUE(r.has_value());
    return r ? r->allocations : std::vector<Allocation>{};
  };
  EXPECT_TRUE(fetchWith({}).empty());
  auto got = fetchWith({"kvm"});
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(coord_->release("a1", ReleaseRequest{{got[0].allocation_id}, "restart"}));
  EXPECT_TRUE(fetchWith({}).empty()) << "requeued without its features";
}

TEST_F(SchedulerTest, MissingInputsSubmitTheirProducersAndWaitForThem) {
  open();
  TestDrv lib = drv("lib");
  TestDrv app = drv("app", {lib});
  auto builds = submit({app});
  ASSERT_EQ(builds.size(), 1u);
  // The first fetch finds app's input missing: app waits, a build of lib is submitted and is
  // the one handed out. The dependency order comes from the store.
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].derivation, lib.path);
  BuildInfo waiting = info(builds[0].id);
  EXPECT_EQ(waiting.state, BuildState::kWaiting);
  EXPECT_EQ(waiting.waiting_for, std::vector<std::string>{lib.out});
  EXPECT_TRUE(waiting.blocked_by.empty());
  EXPECT_TRUE(fetch("a2").empty());
  ASSERT_TRUE(succeed(got[0]));
  EXPECT_EQ(info(builds[0].id).state, BuildState::kQueued);
  auto next = fetch();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].build_id, builds[0].id);
  ASSERT_EQ(next[0].derivations.size(), 2u);  // app and its input derivation
  EXPECT_EQ(next[0].derivations[0].path, app.path);
  EXPECT_EQ(next[0].derivations[0].text, app.text);
  ASSERT_TRUE(succeed(next[0]));
  EXPECT_EQ(info(builds[0].id).state, BuildState::kSucceeded);
  EXPECT_EQ(coord_->stats().builds[BuildState::kFailed], 0u);
}

TEST_F(SchedulerTest, TheStoreDecidesNotTheBuildHistory) {
  open();
  TestDrv lib = drv("lib");
  TestDrv app1 = drv("app1", {lib}), app2 = drv("app2", {lib});
  addToStore(lib.out);
  submit({app1});
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].derivation, app1.path);  // lib is available: no build of it
  ASSERT_TRUE(succeed(got[0]));
  markDeleted(lib.out);
  auto b2 = submit({app2});
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].derivation, lib.path);  // rebuilt because the store lost it
  EXPECT_EQ(info(b2[0].id).state, BuildState::kWaiting);
  ASSERT_TRUE(succeed(got[0]));
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].derivation, app2.path);
}

// Outputs an operator marks deleted right after their build succeeded are rebuilt whenever a
// build needs them: that is a wanted rebuild, not outputs lost on their way to the store (it
// used to count as one, and the third made the derivation failing, blaming the agents).
TEST_F(SchedulerTest, OutputsMarkedDeletedRightAfterASuccessAreRebuiltEachTime) {
  open();  // --max-retries 2
  TestDrv lib = drv("lib");
  for (int round = 0; round < 4; ++round) {
    TestDrv app = drv("app" + std::to_string(round), {lib});
    if (round > 0) markDeleted(lib.out);
    auto b = submit({app});
    auto got = fetch();
    ASSERT_EQ(got.size(), 1u) << "round " << round << ": " << info(b[0].id).message;
    EXPECT_EQ(got[0].derivation, lib.path);
    ASSERT_TRUE(succeed(got[0]));
    got = fetch();
    ASSERT_EQ(got.size(), 1u) << "round " << round;
    EXPECT_EQ(got[0].derivation, app.path);
    ASSERT_TRUE(succeed(got[0]));
  }
  EXPECT_EQ(coord_->stats().derivations_failing, 0u);
}

// A deleted output that a "successful" rebuild does not bring back (the agents upload to another
// cache) is lost like any other: the tombstone predates that success. The rebuilds stop at the
// threshold instead of going on forever.
TEST_F(SchedulerTest, DeletedOutputsThatRebuildsDoNotBringBackStopAtTheThreshold) {
  open();  // --max-retries 2
  TestDrv lib = drv("lib");
  TestDrv app = drv("app", {lib});
  submit({lib});
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(succeed(got[0]));
  now_ += 10;
  markDeleted(lib.out);
  auto b = submit({app});
  int rebuilds = 0;
  for (;; ++rebuilds) {
    now_ += 1;
    got = fetch();
    if (got.empty()) break;
    ASSERT_LT(rebuilds, 6) << "rebuilt forever";
    EXPECT_EQ(got[0].derivation, lib.path);
    ASSERT_TRUE(report(got[0], ReportStatus::kSucceeded));  // nothing reaches the store
  }
  EXPECT_EQ(rebuilds, 3);  // the wanted rebuild, then two lost ones
  EXPECT_THAT(info(b[0].id).message, HasSubstr("outputs were missing from the store 3 times"));
  EXPECT_EQ(coord_->stats().derivations_failing, 1u);
}

// A producer that "succeeds" but whose outputs never reach the store the coordinator asks (an
// agent uploading to another cache) is rebuilt --max-retries times, then failing, naming why;
// the operator's retry runs it again.
TEST_F(SchedulerTest, OutputsThatNeverReachTheStoreStopTheRebuildsAtTheThreshold) {
  open();  // --max-retries 2
  TestDrv lib = drv("lib");
  TestDrv app = drv("app", {lib});
  auto b = submit({app});
  std::uint64_t lib_build = 0;
  for (int round = 0; round < 3; ++round) {  // the first build, then two rebuilds
    auto got = fetch();
    ASSERT_EQ(got.size(), 1u) << "round " << round;
    EXPECT_EQ(got[0].derivation, lib.path);
    lib_build = got[0].build_id;
    ASSERT_TRUE(report(got[0], ReportStatus::kSucceeded));  // nothing reaches the store
  }
  EXPECT_TRUE(fetch().empty());
  BuildInfo w = info(b[0].id);
  EXPECT_EQ(w.state, BuildState::kWaiting);
  EXPECT_THAT(w.message, HasSubstr("outputs were missing from the store 3 times right after"));
  EXPECT_EQ(w.blocked_by, std::vector<std::string>{lib.path});
  EXPECT_EQ(coord_->stats().derivations_failing, 1u);
  ASSERT_TRUE(coord_->tick(true).has_value());  // the re-check submits nothing either
  EXPECT_TRUE(fetch().empty());

  auto again = coord_->retry(lib_build);
  ASSERT_TRUE(again.has_value()) << again.error().message();
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].build_id, again->id);
  ASSERT_TRUE(succeed(got[0]));  // this time the outputs arrive
  EXPECT_EQ(coord_->stats().derivations_failing, 0u);
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].derivation, app.path);
}

TEST_F(SchedulerTest, InputSourceWithoutProducerWaitsAndSaysSo) {
  open();
  std::string src = narstore::testing::pathFor("source-tarball").fullPath("/nix/store");
  TestDrv app = drv("app", {}, kSystem, {src});
  auto b = submit({app});
  EXPECT_TRUE(fetch().empty());
  BuildInfo w = info(b[0].id);
  EXPECT_EQ(w.state, BuildState::kWaiting);
  EXPECT_THAT(w.message, HasSubstr("no known derivation produces it"));
  addToStore(src);
  ASSERT_TRUE(coord_->tick().has_value());  // the periodic re-check finds it
  EXPECT_EQ(info(b[0].id).state, BuildState::kQueued);
  EXPECT_EQ(fetch().size(), 1u);
}

TEST_F(SchedulerTest, RetriesWithBackoffThenFailingBlocksDependantsUntilManualRetry) {
  openWithRetries(2, 10);
  TestDrv lib = drv("lib");
  TestDrv app = drv("app", {lib});
  auto app_build = submit({app});
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  std::uint64_t lib_build = got[0].build_id;
  // Try 1 fails: back in the queue after 10 s.
  ASSERT_TRUE(report(got[0], ReportStatus::kFailed));
  BuildInfo b = info(lib_build);
  EXPECT_EQ(b.state, BuildState::kQueued);
  EXPECT_EQ(b.not_before, now_ + 10);
  EXPECT_TRUE(fetch().empty());
  EXPECT_EQ(coord_->stats().ready, 0u);
  now_ += 10;
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  // Try 2 times out: 20 s.
  ASSERT_TRUE(report(got[0], ReportStatus::kTimedOut));
  EXPECT_EQ(info(lib_build).not_before, now_ + 20);
  now_ += 19;
  EXPECT_TRUE(fetch().empty());
  now_ += 1;
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  // Try 3 fails: past --max-retries, the derivation is failing; nothing retries it.
  ASSERT_TRUE(report(got[0], ReportStatus::kFailed));
  b = info(lib_build);
  EXPECT_EQ(b.state, BuildState::kFailed);
  EXPECT_EQ(b.tries, 3);
  now_ += 100000;
  ASSERT_TRUE(coord_->tick().has_value());
  EXPECT_TRUE(fetch().empty());
  BuildInfo waiting = info(app_build[0].id);
  EXPECT_EQ(waiting.state, BuildState::kWaiting);  // never "failed (dependency)"
  EXPECT_EQ(waiting.blocked_by, std::vector<std::string>{lib.path});
  EXPECT_THAT(waiting.message, HasSubstr("derivation " + lib.path + " is failing after 3 tries"));
  CoordinatorStats s = coord_->stats();
  EXPECT_EQ(s.retries_total, 2u);
  EXPECT_EQ(s.derivations_failing, 1u);
  EXPECT_EQ(s.builds[BuildState::kFailed], 1u);
  // A manual retry always runs; its success lets the dependant go.
  auto retried = coord_->retry(lib_build);
  ASSERT_TRUE(retried.has_value());
  EXPECT_EQ(retried->retry_of, lib_build);
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].build_id, retried->id);
  ASSERT_TRUE(succeed(got[0]));
  EXPECT_EQ(coord_->stats().derivations_failing, 0u);
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].build_id, app_build[0].id);
}

TEST_F(SchedulerTest, ManualSubmissionOfAFailingDerivationRunsOnce) {
  auto o = options();
  o.max_retries = 0;
  coord_ = open(o);
  TestDrv bad = drv("bad");
  submit({bad});
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(report(got[0], ReportStatus::kFailed));
  EXPECT_EQ(coord_->stats().derivations_failing, 1u);
  auto again = submit({bad});
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].build_id, again[0].id);
  ASSERT_TRUE(report(got[0], ReportStatus::kFailed));
  EXPECT_EQ(info(again[0].id).state, BuildState::kFailed);
  EXPECT_TRUE(fetch().empty());
}

TEST_F(SchedulerTest, ExpiredLeaseRequeuesWithoutCountingATry) {
  open();
  TestDrv a = drv("a");
  auto b = submit({a});
  auto got = fetch("a1");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].lease_seconds, 60);
  now_ += 30;
  auto hb = coord_->heartbeat("a1", HeartbeatRequest{{got[0].allocation_id}});
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->valid, std::vector<std::uint64_t>{got[0].allocation_id});
  now_ += 59;
  ASSERT_TRUE(coord_->tick().has_value());
  EXPECT_EQ(info(b[0].id).state, BuildState::kAllocated);  // the heartbeat extended it
  now_ += 2;
  ASSERT_TRUE(coord_->tick().has_value());
  BuildInfo requeued = info(b[0].id);
  EXPECT_EQ(requeued.state, BuildState::kQueued);
  EXPECT_EQ(requeued.tries, 0);
  EXPECT_EQ(coord_->stats().lease_expiries_total, 1u);
  // The agent that lost the lease is told so, and its late result changes nothing.
  hb = coord_->heartbeat("a1", HeartbeatRequest{{got[0].allocation_id}});
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->canceled, std::vector<std::uint64_t>{got[0].allocation_id});
  EXPECT_FALSE(report(got[0], ReportStatus::kSucceeded));
  auto again = fetch("a2");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].build_id, b[0].id);
}

TEST_F(SchedulerTest, FetchAndResultAreIdempotent) {
  open();
  submit({drv("a"), drv("b")});
  auto first = fetch("a1", 2, {kSystem}, "req-1");
  ASSERT_EQ(first.size(), 2u);
  auto repeat = fetch("a1", 2, {kSystem}, "req-1");
  ASSERT_EQ(repeat.size(), 2u);
  EXPECT_EQ(repeat[0].allocation_id, first[0].allocation_id);
  EXPECT_EQ(repeat[1].allocation_id, first[1].allocation_id);
  EXPECT_EQ(coord_->stats().allocations_total, 2u);
  EXPECT_TRUE(succeed(first[0]));
  EXPECT_FALSE(report(first[0], ReportStatus::kSucceeded));  // already closed
  EXPECT_FALSE(report(first[1], ReportStatus::kSucceeded, "intruder"));
  auto released = coord_->release("a1", ReleaseRequest{{first[1].allocation_id}, "restart"});
  ASSERT_TRUE(released.has_value());
  EXPECT_TRUE(released->accepted);
  EXPECT_EQ(info(first[1].build_id).state, BuildState::kQueued);
  released = coord_->release("a1", ReleaseRequest{{first[1].allocation_id}, "restart"});
  ASSERT_TRUE(released.has_value());
  EXPECT_FALSE(released->accepted);
}

// A build given back again and again (say, an agent's build engine crashes on it every time)
// waits longer each time from the second give-back on, is never failed for it, and a success
// clears the count.
TEST_F(SchedulerTest, RepeatedReleasesBackOffWithoutFailing) {
  openWithRetries(1, 10);
  TestDrv a = drv("a");
  auto b = submit({a});
  auto giveBack = [&] {
    auto got = fetch("a1");
    EXPECT_EQ(got.size(), 1u);
    if (got.empty()) return;
    auto released = coord_->release("a1", ReleaseRequest{{got[0].allocation_id}, "crashed"});
    ASSERT_TRUE(released.has_value());
    EXPECT_TRUE(released->accepted);
  };
  giveBack();
  EXPECT_EQ(info(b[0].id).not_before, 0);  // the first give-back costs nothing
  std::int64_t wait = 10;
  for (int n = 2; n <= 8; ++n, wait = std::min<std::int64_t>(wait * 2, 600)) {  // 10 min at most
    giveBack();
    BuildInfo held = info(b[0].id);
    EXPECT_EQ(held.state, BuildState::kQueued);
    EXPECT_EQ(held.tries, 0);
    EXPECT_EQ(held.not_before, now_ + wait) << n;
    EXPECT_THAT(held.message, HasSubstr("given back " + std::to_string(n) + " times"));
    EXPECT_TRUE(fetch("a1").empty());
    now_ += wait;
  }
  auto got = fetch("a1");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(succeed(got[0]));
  auto again = submit({a});
  giveBack();
  EXPECT_EQ(info(again[0].id).not_before, 0);
}

TEST_F(SchedulerTest, CancelQueuedWaitingAndAllocatedBuilds) {
  open();
  TestDrv lib = drv("lib");
  TestDrv app = drv("app", {lib});
  auto b = submit({app});
  auto got = fetch("a1", 1);  // app waits, lib is allocated
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].derivation, lib.path);
  b.push_back(submit({drv("other")})[0]);
  auto c1 = coord_->cancel(b[0].id);
  ASSERT_TRUE(c1.has_value());
  EXPECT_EQ(c1->state, BuildState::kCanceled);
  auto c2 = coord_->cancel(got[0].build_id);
  ASSERT_TRUE(c2.has_value());
  auto hb = coord_->heartbeat("a1", HeartbeatRequest{{got[0].allocation_id}});
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->canceled, std::vector<std::uint64_t>{got[0].allocation_id});
  EXPECT_TRUE(coord_->cancel(b[1].id).has_value());
  auto again = coord_->cancel(b[1].id);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), ErrorCode::kConflict);
  EXPECT_TRUE(fetch().empty());
  EXPECT_EQ(coord_->stats().builds[BuildState::kCanceled], 3u);
}

TEST_F(SchedulerTest, IgnoreIfBuiltSkipsBuildsWhoseOutputsAreAvailable) {
  open();
  TestDrv a = drv("a"), b = drv("b");
  addToStore(a.out);
  auto builds = submit({a, b}, 0, true);
  ASSERT_EQ(builds.size(), 2u);
  EXPECT_EQ(builds[0].state, BuildState::kSucceeded);
  EXPECT_TRUE(builds[0].skipped);
  EXPECT_EQ(builds[1].state, BuildState::kQueued);
}

TEST_F(SchedulerTest, AgentMissingInputsReportWaitsWithoutATry) {
  open();
  TestDrv lib = drv("lib");
  TestDrv app = drv("app", {lib});
  addToStore(lib.out);
  auto b = submit({app});
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  markDeleted(lib.out);  // gone between the check and the agent's download
  ResultReport r;
  r.allocation_id = got[0].allocation_id;
  r.status = ReportStatus::kMissingInputs;
  r.missing_inputs = {lib.out};
  auto ack = coord_->report("a1", r);
  ASSERT_TRUE(ack.has_value());
  EXPECT_TRUE(ack->accepted);
  BuildInfo w = info(b[0].id);
  EXPECT_EQ(w.state, BuildState::kWaiting);
  EXPECT_EQ(w.tries, 0);
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].derivation, lib.path);
}

TEST_F(SchedulerTest, AnAgentThatNeverSeesTheStoresInputsStopsAtTheThreshold) {
  // The agent keeps reporting inputs missing that the store has (it substitutes from another
  // cache): the build goes back to the queue --max-retries times, then fails and says why.
  openWithRetries(2, 10);
  TestDrv lib = drv("lib");
  TestDrv app = drv("app", {lib});
  addToStore(lib.out);
  auto b = submit({app});
  for (int report_no = 1; report_no <= 3; ++report_no) {
    now_ += 10;
    auto got = fetch();
    ASSERT_EQ(got.size(), 1u) << "report " << report_no;
    ResultReport r;
    r.allocation_id = got[0].allocation_id;
    r.status = ReportStatus::kMissingInputs;
    r.missing_inputs = {lib.out};
    ASSERT_TRUE(coord_->report("a1", r).has_value());
    BuildInfo after = info(b[0].id);
    EXPECT_EQ(after.state, report_no < 3 ? BuildState::kQueued : BuildState::kFailed)
        << "report " << report_no;
  }
  BuildInfo failed = info(b[0].id);
  EXPECT_THAT(failed.message, HasSubstr("missed inputs that the store has"));
  EXPECT_THAT(failed.message, HasSubstr("3 times"));
  EXPECT_EQ(coord_->stats().derivations_failing, 1u);
  now_ += 100;
  EXPECT_TRUE(fetch().empty());
  // A manual retry starts afresh.
  auto retried = coord_->retry(b[0].id);
  ASSERT_TRUE(retried.has_value()) << retried.error().message();
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(succeed(got[0]));
  EXPECT_EQ(coord_->stats().derivations_failing, 0u);
}

TEST_F(SchedulerTest, RejectsDerivationsWhosePathIsNotTheirs) {
  open();
  TestDrv a = drv("a");
  TestDrv b = drv("b");
  SubmitRequest req;
  req.derivations = {{b.path, a.text}};
  auto res = coord_->submit(req);
  ASSERT_FALSE(res.has_value());
  EXPECT_EQ(res.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(res.error().message(),
              HasSubstr("derivation " + b.path + ": its text gives the store path /nix/store/"));
  req.derivations = {{a.path, "Derive(garbage"}};
  res = coord_->submit(req);
  ASSERT_FALSE(res.has_value());
  EXPECT_THAT(res.error().message(), HasSubstr("derivation " + a.path + ": derivation: offset"));
  TestDrv app = drv("app", {a});
  req.derivations = {{app.path, app.text}};
  req.builds = {{app.path, 0, {}, false}};
  res = coord_->submit(req);
  ASSERT_FALSE(res.has_value());
  EXPECT_THAT(res.error().message(), HasSubstr("input derivation " + a.path + " is unknown"));
  req.derivations = {};
  req.builds = {{a.path, 0, {}, false}};
  res = coord_->submit(req);
  ASSERT_FALSE(res.has_value());
  EXPECT_THAT(res.error().message(), HasSubstr("is unknown"));
  auto unknown = coord_->unknownDerivations({{a.path}});
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->unknown, std::vector<std::string>{a.path});
}

TEST_F(SchedulerTest, RejectsDerivationsWhoseOutputPathsAreNotTheirs) {
  // A derivation whose output path was changed (its .drv path computed from the changed text,
  // so that it is self-consistent): its build would upload under a path it does not own.
  open();
  TestDrv lib = drv("lib");
  Derivation forged = drvs_.at(drv("app", {lib}).path);
  std::string victim = drv("glibc").out;  // a path the cache may not have yet
  forged.outputs["out"].path = victim;
  forged.env["out"] = victim;
  std::string text = writeDerivation(forged);
  auto path = derivationStorePath(forged, "/nix/store");
  ASSERT_TRUE(path.has_value());
  SubmitRequest req;
  req.derivations = {{lib.path, lib.text}, {*path, text}};
  req.builds = {{*path, 0, {}, false}};
  auto res = coord_->submit(req);
  ASSERT_FALSE(res.has_value());
  EXPECT_EQ(res.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(res.error().message(), HasSubstr("derivation " + *path + ": "));
  EXPECT_THAT(res.error().message(), HasSubstr("out"));
  EXPECT_EQ(coord_->stats().builds[BuildState::kQueued], 0u);
  // The genuine one (same inputs) is accepted.
  TestDrv app = drv("app", {lib});
  req.derivations = {{lib.path, lib.text}, {app.path, app.text}};
  req.builds = {{app.path, 0, {}, false}};
  EXPECT_TRUE(coord_->submit(req).has_value());
}

TEST_F(SchedulerTest, RestartKeepsStateLeasesAndCounters) {
  open();
  TestDrv lib = drv("lib");
  TestDrv app = drv("app", {lib});
  auto b = submit({app, drv("x")}, 0);
  auto got = fetch("a1", 2);
  ASSERT_EQ(got.size(), 2u);  // lib (for app) and x
  CoordinatorStats before = coord_->stats();
  coord_.reset();
  now_ += 30;
  open();
  CoordinatorStats after = coord_->stats();
  EXPECT_EQ(after.builds, before.builds);
  EXPECT_EQ(after.builds[BuildState::kWaiting], 1u);
  EXPECT_EQ(after.builds[BuildState::kAllocated], 2u);
  for (const Allocation& a : got) EXPECT_TRUE(succeed(a));
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].build_id, b[0].id);
  // Ids keep increasing across restarts.
  auto more = submit({drv("y")});
  EXPECT_GT(more[0].id, got[0].build_id);
}

TEST_F(SchedulerTest, ListFiltersByStateAndTagWithPaging) {
  open();
  SubmitRequest req;
  for (int i = 0; i < 5; ++i) {
    TestDrv d = drv("d" + std::to_string(i));
    req.derivations.push_back({d.path, d.text});
    req.builds.push_back({d.path, 0, {{"batch", i % 2 == 0 ? "even" : "odd"}}});
  }
  ASSERT_TRUE(coord_->submit(req).has_value());
  BuildFilter q;
  q.tags = {{"batch", "even"}};
  q.limit = 2;
  auto page = coord_->listBuilds(q);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->builds.size(), 2u);
  ASSERT_TRUE(page->next_after.has_value());
  q.after = *page->next_after;
  auto page2 = coord_->listBuilds(q);
  ASSERT_TRUE(page2.has_value());
  ASSERT_EQ(page2->builds.size(), 1u);
  EXPECT_FALSE(page2->next_after.has_value());
  BuildFilter allocated;
  allocated.state = BuildState::kAllocated;
  EXPECT_TRUE(coord_->listBuilds(allocated)->builds.empty());
}

TEST_F(SchedulerTest, MetricsCountersFollowTheStates) {
  open();
  submit({drv("a"), drv("b")});
  now_ += 5;
  CoordinatorStats s = coord_->stats();
  EXPECT_EQ(s.builds[BuildState::kQueued], 2u);
  EXPECT_EQ(s.ready, 2u);
  EXPECT_EQ(s.oldest_queued_age, 5);
  auto got = fetch("a1");
  ASSERT_EQ(got.size(), 1u);
  s = coord_->stats();
  EXPECT_EQ(s.agents_connected, 1u);
  EXPECT_EQ(s.agents_busy, 1u);
  EXPECT_EQ(s.builds[BuildState::kAllocated], 1u);
  ASSERT_TRUE(report(got[0], ReportStatus::kFailed));  // back in the queue, in backoff
  s = coord_->stats();
  EXPECT_EQ(s.builds[BuildState::kQueued], 2u);
  EXPECT_EQ(s.ready, 1u);
  EXPECT_EQ(s.retries_total, 1u);
  EXPECT_EQ(s.agents_busy, 0u);
  std::string text = coord_->metrics();
  EXPECT_THAT(text, HasSubstr("narcache_coordinator_queue_ready 1\n"));
  EXPECT_THAT(text, HasSubstr("narcache_coordinator_builds{state=\"queued\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("narcache_coordinator_queue_oldest_age_seconds 5\n"));
  EXPECT_THAT(text, HasSubstr("narcache_coordinator_retries_total 1\n"));
  now_ += 61;
  s = coord_->stats();
  EXPECT_EQ(s.agents_connected, 0u);
  EXPECT_EQ(s.ready, 2u);  // the backoff ended
}

TEST_F(SchedulerTest, AnUnbuildableDerivationFailsWithoutBlockingTheQueue) {
  open();
  TestDrv a = drv("a");
  TestDrv bad = wantsMissingOutput(a);
  expectFailsAloneBeside(bad.path, bad.text, a, "has no output 'dev'");
}

TEST_F(SchedulerTest, AnUnbuildableInputIsFailingAndNotSubmittedAgainByItsDependants) {
  // app needs the output of wants-dev, which needs an output its input lacks: wants-dev fails
  // once and is failing; app waits, blocked by it, and the rechecks do not submit it again.
  open();
  TestDrv bad = wantsMissingOutput(drv("a"));
  TestDrv app = drv("app", {bad});
  auto app_build = submit({app});
  EXPECT_TRUE(fetch().empty());  // app waits; wants-dev is submitted, then fails when fetched
  for (int round = 0; round < 4; ++round) {
    now_ += 3600;
    ASSERT_TRUE(coord_->tick(true).has_value());
    EXPECT_TRUE(fetch().empty()) << "round " << round;
  }
  CoordinatorStats s = coord_->stats();
  EXPECT_EQ(s.builds[BuildState::kFailed], 1u) << "wants-dev was submitted again";
  EXPECT_EQ(s.builds[BuildState::kQueued], 0u);
  EXPECT_EQ(s.derivations_failing, 1u);
  BuildInfo waiting = info(app_build[0].id);
  EXPECT_EQ(waiting.state, BuildState::kWaiting);
  EXPECT_EQ(waiting.blocked_by, std::vector<std::string>{bad.path});
}

TEST_F(SchedulerTest, ABuildWhoseInputsTheStoreRefusesFailsAloneAndTheQueueGoesOn) {
  // A /gnu/store derivation submitted to a coordinator whose store is /nix/store: the store
  // refuses its input paths. Only that build fails; the one beside it is allocated.
  open();
  DerivationAttrs attrs;
  attrs.name = "guix-thing";
  attrs.builder = "/bin/sh";
  attrs.system = kSystem;
  attrs.input_srcs.insert("/gnu/store/" + std::string(32, 'a') + "-source");
  auto made = makeDerivation(attrs, "/gnu/store", [](const std::string& p) -> Result<Derivation> {
    return fail(ErrorCode::kNotFound, p);
  });
  ASSERT_TRUE(made.has_value()) << made.error().message();
  std::string gnu = *derivationStorePath(*made, "/gnu/store");
  addToStore(drv("src").out);
  TestDrv ok = drv("ok", {}, kSystem, {drv("src").out});
  expectFailsAloneBeside(gnu, writeDerivation(*made), ok, "the store refuses its inputs");
}

TEST_F(SchedulerTest, ConcurrentAgentsBuildEverythingExactlyOnce) {
  open();
  std::vector<TestDrv> all;
  for (int i = 0; i < 40; ++i) all.push_back(drv("c" + std::to_string(i)));
  submit(all);
  std::atomic<int> built{0};
  std::vector<std::thread> agents;
  for (int a = 0; a < 8; ++a) {
    agents.emplace_back([&, a] {
      std::string name = "agent-" + std::to_string(a);
      for (int n = 0;; ++n) {
        FetchRequest req;
        req.request_id = name + "-" + std::to_string(n);
        req.systems = {kSystem};
        req.max_parallel = 2;
        auto got = coord_->fetch(name, req);
        ASSERT_TRUE(got.has_value());
        if (got->allocations.empty()) return;
        for (const Allocation& alloc : got->allocations) {
          ResultReport r;
          r.allocation_id = alloc.allocation_id;
          r.status = ReportStatus::kSucceeded;
          auto ack = coord_->report(name, r);
          ASSERT_TRUE(ack.has_value());
          EXPECT_TRUE(ack->accepted);
          built++;
        }
      }
    });
  }
  for (auto& t : agents) t.join();
  EXPECT_EQ(built.load(), 40);
  CoordinatorStats s = coord_->stats();
  EXPECT_EQ(s.builds[BuildState::kSucceeded], 40u);
  EXPECT_EQ(s.builds[BuildState::kQueued], 0u);
  EXPECT_EQ(s.allocations_total, 40u);
}

}  // namespace
}  // namespace narcache::coordinator::testing
