// Planner unit tests on hand-made graphs (no store): roots, expiry, ttl, grace, references,
// shared nar files, the size budget and the deletion order.

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gc_helpers.h"
#include "narcache/gc/gc.h"

namespace narcache::gc {
namespace {

using testing::GraphBuilder;
using testing::pathFor;

constexpr std::int64_t kNow = 1'700'000'000;
constexpr std::int64_t kDay = 86400;

std::set<std::string> deletedNames(const GraphBuilder& b, const Plan& plan) {
  std::set<std::string> out;
  for (const auto& c : plan.deletions) out.insert(b.nameOf(c.hash_part));
  return out;
}

Policy ttlPolicy(std::int64_t ttl) {
  Policy p;
  p.ttl_seconds = ttl;
  p.grace_seconds = 3600;
  return p;
}

TEST(PlannerTest, DiamondIsKeptWholeWhenItsTopIsUsed) {
  // top -> left, right -> bottom; plus an unused island.
  GraphBuilder b(kNow);
  b.item("bottom", {}, kNow - 100 * kDay);
  b.item("left", {"bottom"}, kNow - 100 * kDay);
  b.item("right", {"bottom"}, kNow - 100 * kDay);
  b.item("top", {"left", "right"}, kNow - 100 * kDay, kNow - kDay);
  b.item("island", {}, kNow - 100 * kDay);
  Plan plan = planFromGraph(b.graph(), ttlPolicy(30 * kDay));
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"island"}));
  EXPECT_EQ(plan.summary.kept_recent, 1u);
  EXPECT_EQ(plan.summary.kept_referenced, 3u);
  EXPECT_EQ(plan.summary.delete_items, 1u);
}

TEST(PlannerTest, UnusedDiamondGoesReferrersFirst) {
  GraphBuilder b(kNow);
  b.item("bottom", {}, kNow - 100 * kDay);
  b.item("left", {"bottom"}, kNow - 100 * kDay);
  b.item("right", {"bottom"}, kNow - 100 * kDay);
  b.item("top", {"left", "right"}, kNow - 100 * kDay);
  Plan plan = planFromGraph(b.graph(), ttlPolicy(30 * kDay));
  ASSERT_EQ(plan.deletions.size(), 4u);
  std::map<std::string, std::size_t> pos;
  for (std::size_t i = 0; i < plan.deletions.size(); ++i) {
    pos[b.nameOf(plan.deletions[i].hash_part)] = i;
  }
  EXPECT_LT(pos["top"], pos["left"]);
  EXPECT_LT(pos["top"], pos["right"]);
  EXPECT_LT(pos["left"], pos["bottom"]);
  EXPECT_LT(pos["right"], pos["bottom"]);
}

TEST(PlannerTest, SelfReferencesAndChainsOfThem) {
  // Self-references are not edges of the scanned graph (the store drops them), so an item
  // referencing itself is collectable, and a chain of self-referencing items behaves as a chain.
  GraphBuilder b(kNow);
  b.item("self", {"self"}, kNow - 100 * kDay);
  b.item("c", {"c"}, kNow - 100 * kDay);
  b.item("b", {"b", "c"}, kNow - 100 * kDay);
  b.item("a", {"a", "b"}, kNow - 100 * kDay, kNow - 10);
  Plan plan = planFromGraph(b.graph(), ttlPolicy(kDay));
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"self"}));
  EXPECT_EQ(plan.summary.kept_recent + plan.summary.kept_referenced, 3u);
}

TEST(PlannerTest, SharedNarFilesCountOnceAndFreeOnlyWithTheirLastUser) {
  GraphBuilder b(kNow);
  b.item("x", {}, kNow - 100 * kDay, 0, "shared", 1000);
  b.item("y", {}, kNow - 100 * kDay, kNow, "shared", 1000);
  b.item("z", {}, kNow - 100 * kDay, 0, "own", 10);
  Plan plan = planFromGraph(b.graph(), ttlPolicy(kDay));
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"x", "z"}));
  EXPECT_EQ(plan.summary.bytes, 1010u);
  EXPECT_EQ(plan.summary.delete_bytes, 10u);  // "shared" stays for y
  EXPECT_EQ(plan.summary.keep_bytes, 1000u);
}

TEST(PlannerTest, RootsKeepClosuresUntilTheyExpire) {
  GraphBuilder b(kNow);
  b.item("dep", {}, kNow - 100 * kDay);
  b.item("app", {"dep"}, kNow - 100 * kDay);
  b.item("old-dep", {}, kNow - 100 * kDay);
  b.item("old-app", {"old-dep"}, kNow - 100 * kDay);
  b.root("release", {"app"});
  b.root("last-year", {"old-app"}, kNow - 1);  // expired
  Plan plan = planFromGraph(b.graph(), ttlPolicy(kDay));
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"old-app", "old-dep"}));
  EXPECT_EQ(plan.summary.kept_root, 2u);
  EXPECT_EQ(plan.summary.roots, 2u);
  EXPECT_EQ(plan.summary.roots_expired, 1u);
}

TEST(PlannerTest, GraceKeepsFreshUploadsAndWhatTheyReference) {
  GraphBuilder b(kNow);
  b.item("old", {}, kNow - 100 * kDay);
  b.item("fresh", {"old"}, kNow - 60);  // uploaded a minute ago, never accessed
  Policy p = ttlPolicy(0);              // everything not in grace is too old
  Plan plan = planFromGraph(b.graph(), p);
  EXPECT_TRUE(plan.deletions.empty());
  EXPECT_EQ(plan.summary.kept_grace, 1u);
  EXPECT_EQ(plan.summary.kept_referenced, 1u);
  p.grace_seconds = 30;
  plan = planFromGraph(b.graph(), p);
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"fresh", "old"}));
}

TEST(PlannerTest, TtlCountsCreationAsUseAndNoTtlKeepsEverything) {
  GraphBuilder b(kNow);
  b.item("young", {}, kNow - 2 * kDay);
  b.item("old-used", {}, kNow - 100 * kDay, kNow - 2 * kDay);
  b.item("old", {}, kNow - 100 * kDay, kNow - 40 * kDay);
  Plan plan = planFromGraph(b.graph(), ttlPolicy(30 * kDay));
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"old"}));
  Policy none;
  plan = planFromGraph(b.graph(), none);
  EXPECT_TRUE(plan.deletions.empty());
  EXPECT_EQ(plan.summary.kept_recent, 3u);
}

TEST(PlannerTest, MaxSizeEvictsLeastRecentlyUsedLeavesFirst) {
  // a -> b (a used long ago), c used recently, d used least recently but referenced by e
  // (used recently). Budget forces two files out: oldest evictable first.
  GraphBuilder b(kNow);
  b.item("b", {}, kNow - 100 * kDay, kNow - 50 * kDay, "fb", 100);
  b.item("a", {"b"}, kNow - 100 * kDay, kNow - 40 * kDay, "fa", 100);
  b.item("c", {}, kNow - 100 * kDay, kNow - 1 * kDay, "fc", 100);
  b.item("d", {}, kNow - 100 * kDay, kNow - 90 * kDay, "fd", 100);
  b.item("e", {"d"}, kNow - 100 * kDay, kNow - 2 * kDay, "fe", 100);
  Policy p;  // no ttl: everything is live, only the budget evicts
  p.max_size_bytes = 300;
  Plan plan = planFromGraph(b.graph(), p);
  // Evictable at first: a (40d), c (1d), e (2d) - not b or d (referenced). a goes, then b
  // becomes evictable and is older than everything left: b goes. 300 bytes remain.
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"a", "b"}));
  EXPECT_EQ(plan.summary.delete_budget, 2u);
  EXPECT_EQ(plan.summary.keep_bytes, 300u);
  EXPECT_FALSE(plan.summary.over_budget);

  p.max_size_bytes = 100;
  plan = planFromGraph(b.graph(), p);
  // e (2d) then d (90d, now unreferenced) then c: a, b, e, d go; c stays.
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"a", "b", "d", "e"}));
}

TEST(PlannerTest, MaxSizeNeverEvictsARootsClosureAndSaysWhenRootsAloneExceedIt) {
  GraphBuilder b(kNow);
  b.item("lib", {}, kNow - 100 * kDay, 0, "flib", 500);
  b.item("app", {"lib"}, kNow - 100 * kDay, 0, "fapp", 500);
  b.item("other", {}, kNow - 100 * kDay, kNow, "fother", 10);
  b.item("new", {}, kNow - 10, 0, "fnew", 10);  // within grace: protected
  b.root("prod", {"app"});
  Policy p;
  p.max_size_bytes = 600;
  Plan plan = planFromGraph(b.graph(), p);
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"other"}));
  EXPECT_TRUE(plan.summary.over_budget);
  EXPECT_TRUE(plan.summary.roots_exceed_budget);
  EXPECT_EQ(plan.summary.root_bytes, 1000u);
  EXPECT_EQ(plan.summary.kept_root, 2u);
  EXPECT_EQ(plan.summary.kept_grace, 1u);
}

// An item whose nar file a protected item (here a root) also uses frees nothing when evicted:
// the budget passes over it, even though it is the least recently used, and takes the next.
TEST(PlannerTest, MaxSizeDoesNotEvictAnItemWhoseFileAProtectedItemKeeps) {
  GraphBuilder b(kNow);
  b.item("pinned", {}, kNow - 100 * kDay, kNow, "shared", 500);
  b.item("twin", {}, kNow - 100 * kDay, kNow - 90 * kDay, "shared", 500);
  b.item("old", {}, kNow - 100 * kDay, kNow - 50 * kDay, "fold", 100);
  b.item("recent", {}, kNow - 100 * kDay, kNow - 1 * kDay, "frecent", 100);
  b.root("prod", {"pinned"});
  Policy p;
  p.max_size_bytes = 650;
  Plan plan = planFromGraph(b.graph(), p);
  EXPECT_EQ(deletedNames(b, plan), (std::set<std::string>{"old"}));
  EXPECT_EQ(plan.summary.keep_bytes, 600u);
  EXPECT_FALSE(plan.summary.over_budget);
}

TEST(PlannerTest, MissingRootPathsAreCountedAndIgnored) {
  GraphBuilder b(kNow);
  b.item("x", {}, kNow - 100 * kDay);
  b.rootRaw("r", {pathFor("gone")});
  Plan plan = planFromGraph(b.graph(), ttlPolicy(kDay));
  EXPECT_EQ(plan.summary.root_paths_missing, 1u);
  EXPECT_EQ(plan.deletions.size(), 1u);
}

TEST(PolicyTest, DurationsAndSizes) {
  EXPECT_EQ(*parseDuration("30d"), 30 * kDay);
  EXPECT_EQ(*parseDuration("12h"), 12 * 3600);
  EXPECT_EQ(*parseDuration("90m"), 90 * 60);
  EXPECT_EQ(*parseDuration("45s"), 45);
  EXPECT_EQ(*parseDuration("2w"), 14 * kDay);
  EXPECT_EQ(*parseDuration("17"), 17);
  for (const char* bad : {"", "d", "-1d", "1x", "1.5h", "h1"}) {
    auto r = parseDuration(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ(*parseSize("10G"), 10ull << 30);
  EXPECT_EQ(*parseSize("500M"), 500ull << 20);
  EXPECT_EQ(*parseSize("64KiB"), 64ull << 10);
  EXPECT_EQ(*parseSize("1TB"), 1ull << 40);
  EXPECT_EQ(*parseSize("123"), 123u);
  for (const char* bad : {"", "G", "1.5G", "10X", "-1M"}) EXPECT_FALSE(parseSize(bad)) << bad;
  EXPECT_EQ(formatBytes(1536), "1.5 KiB");
  EXPECT_EQ(formatDuration(3600), "1h");
}

}  // namespace
}  // namespace narcache::gc
