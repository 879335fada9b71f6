// The GC commands end to end (the narcache binary): roots, gc --dry-run/--json, SIGKILL at
// random points with `narcache verify` after each, mark-deleted -> incomplete -> re-add.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "gc_helpers.h"
#include "narcache/narstore/verify.h"

namespace narcache::gc {
namespace {

using narstore::testing::addItem;
using narstore::testing::initStore;
using narstore::testing::makeItem;
using narstore::testing::TestItem;

// Chains of `length` items, each referencing the one before it.
std::vector<TestItem> chains(int count, int length, const std::string& tag) {
  std::vector<TestItem> items;
  for (int c = 0; c < count; ++c) {
    std::vector<StorePath> prev;
    for (int k = 0; k < length; ++k) {
      std::string name = tag + "-c" + std::to_string(c) + "-" + std::to_string(k);
      items.push_back(makeItem(name, name + std::string(k * 100, 'x'), prev));
      prev = {items.back().info.path};
    }
  }
  return items;
}

TEST(GcCliTest, RootsDryRunJsonAndCollect) {
  test::TempDir dir;
  std::string store = (dir / "s").string();
  auto items = chains(3, 3, "cli");
  {
    auto s = initStore(dir / "s");
    for (const auto& i : items) ASSERT_TRUE(addItem(*s, i));
  }
  std::string top0 = items[2].info.fullPath();
  auto add = test::narcache({"roots", "add", "keep", top0, "--store", store});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  auto add_exp = test::narcache(
      {"roots", "add", "old", items[5].info.fullPath(), "--expires", "0s", "--store", store});
  ASSERT_EQ(add_exp.exit_code, 0) << add_exp.err;
  auto bad = test::narcache(
      {"roots", "add", "x", "/nix/store/" + std::string(32, '0') + "-nope", "--store", store});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("not valid items"), std::string::npos) << bad.err;
  auto list = test::narcache({"roots", "list", "--store", store});
  ASSERT_EQ(list.exit_code, 0);
  EXPECT_NE(list.out.find("keep (never expires)"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("old (EXPIRED"), std::string::npos) << list.out;

  auto dry = test::narcache(
      {"gc", "--store", store, "--ttl", "0s", "--grace", "0s", "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  auto plan = nlohmann::json::parse(dry.out);
  EXPECT_EQ(plan["plan"]["delete"]["items"], 6);
  EXPECT_EQ(plan["plan"]["keep"]["root"], 3);
  EXPECT_EQ(plan["plan"]["roots"]["expired"], 1);
  EXPECT_EQ(plan["dry_run"], true);

  auto bad_ttl = test::narcache({"gc", "--store", store, "--ttl", "soon"});
  EXPECT_EQ(bad_ttl.exit_code, 1);
  EXPECT_NE(bad_ttl.err.find("--ttl"), std::string::npos);

  auto run =
      test::narcache({"gc", "--store", store, "--ttl", "0s", "--grace", "0s", "--nar-grace", "0s"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("deleted 6 items"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("unlinked 6 nar files"), std::string::npos) << run.out;
  auto avail = test::narcache({"available", "--store", store, top0, items[5].info.fullPath()});
  EXPECT_NE(avail.out.find(top0 + ": available"), std::string::npos) << avail.out;
  EXPECT_NE(avail.out.find(items[5].info.fullPath() + ": missing"), std::string::npos);
  auto verify = test::narcache({"verify", "--store", store});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  ASSERT_EQ(test::narcache({"roots", "remove", "keep", "--store", store}).exit_code, 0);
  EXPECT_EQ(test::narcache({"roots", "remove", "keep", "--store", store}).exit_code, 1);
}

TEST(GcCliTest, MarkDeletedMakesReferrersIncompleteUntilReAdded) {
  test::TempDir dir;
  std::string store = (dir / "s").string();
  auto dep = makeItem("dep", "dep");
  auto app = makeItem("app", "app", {dep.info.path});
  {
    auto s = initStore(dir / "s");
    ASSERT_TRUE(addItem(*s, dep));
    ASSERT_TRUE(addItem(*s, app));
  }
  auto del = test::narcache({"mark-deleted", dep.info.fullPath(), "--reason", "miscompiled", "--by",
                             "alice", "--store", store});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(del.out, "deleted " + dep.info.fullPath() + "\n");
  // Again: said so, and the first tombstone (reason, who) stays.
  auto twice =
      test::narcache({"mark-deleted", dep.info.fullPath(), "--reason", "other", "--store", store});
  ASSERT_EQ(twice.exit_code, 0) << twice.err;
  EXPECT_EQ(twice.out, "already deleted " + dep.info.fullPath() + " (miscompiled, by alice)\n");
  auto avail =
      test::narcache({"available", "--json", "--store", store, app.info.fullPath(),
                      dep.info.fullPath(), "/nix/store/" + std::string(32, '1') + "-never"});
  ASSERT_EQ(avail.exit_code, 0) << avail.err;
  auto j = nlohmann::json::parse(avail.out);
  EXPECT_EQ(j[0]["state"], "incomplete");
  EXPECT_EQ(j[0]["missing"], nlohmann::json::array({dep.info.fullPath()}));
  EXPECT_EQ(j[1]["state"], "deleted");
  EXPECT_EQ(j[1]["reason"], "miscompiled");
  EXPECT_EQ(j[1]["by"], "alice");
  EXPECT_EQ(j[2]["state"], "missing");
  auto text = test::narcache({"available", "--store", store, app.info.fullPath()});
  EXPECT_NE(text.out.find(": incomplete: missing " + dep.info.fullPath()), std::string::npos)
      << text.out;

  test::writeFile(dir / "dep.narinfo", dep.info.toString());
  test::writeFile(dir / "dep.nar", dep.file);
  auto readd = test::narcache({"add", "--store", store, "--narinfo", (dir / "dep.narinfo").string(),
                               "--nar", (dir / "dep.nar").string()});
  ASSERT_EQ(readd.exit_code, 0) << readd.err;
  auto again = test::narcache({"available", "--store", store, app.info.fullPath()});
  EXPECT_NE(again.out.find(app.info.fullPath() + ": available"), std::string::npos) << again.out;
  EXPECT_EQ(test::narcache({"verify", "--store", store}).exit_code, 0);
}

TEST(GcCliTest, SigkillAtRandomPointsLeavesAConsistentStore) {
  test::TempDir dir;
  std::string store = (dir / "s").string();
  auto items = chains(20, 5, "kill");
  std::mt19937 rng(1234);
  int interrupted = 0;
  for (int round = 0; round < 15; ++round) {
    {
      // (Re-)add whatever the previous run deleted, then root a few chain tops.
      auto s = round == 0 ? initStore(dir / "s") : nullptr;
      if (!s) {
        narstore::StoreOptions options;
        options.root = dir / "s";
        auto opened = narstore::Store::open(options);
        ASSERT_TRUE(opened);
        s = std::move(*opened);
      }
      for (const auto& i : items) ASSERT_TRUE(addItem(*s, i));
      ASSERT_TRUE(s->addRoot({"top", {items[4].info.path, items[9].info.path}, 0, {}}));
    }
    test::BackgroundProcess gc({NARCACHE_BIN, "gc", "--store", store, "--ttl", "0s", "--grace",
                                "0s", "--nar-grace", "0s", "--batch-size", "1"});
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 120));
    int code = gc.stop(SIGKILL);
    if (code == 128 + SIGKILL) ++interrupted;
    auto verify = test::narcache({"verify", "--store", store});
    ASSERT_EQ(verify.exit_code, 0) << "round " << round << ":\n" << verify.out << verify.err;
    narstore::StoreOptions options;
    options.root = dir / "s";
    auto s = narstore::Store::open(options);
    ASSERT_TRUE(s);
    EXPECT_TRUE(testing::brokenClosures(**s).empty());
    for (int k : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
      EXPECT_EQ((*s)->status(items[k].info.path.hashPart()).state, narstore::ItemState::kAvailable)
          << "rooted closure lost in round " << round;
    }
  }
  EXPECT_GE(interrupted, 5) << "the kills should mostly land mid-run";
  // A final uninterrupted run finishes the job.
  auto run =
      test::narcache({"gc", "--store", store, "--ttl", "0s", "--grace", "0s", "--nar-grace", "0s"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto verify = test::narcache({"verify", "--store", store});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  auto stats = test::narcache({"stats", "--store", store});
  EXPECT_NE(stats.out.find("items: 10\n"), std::string::npos) << stats.out;
}

}  // namespace
}  // namespace narcache::gc
