// Opening a store written by an older narcache: tests/narstore/data/store_v1 is a schema-1
// store (hash-keyed gcmeta table, file records without ids) made by narcache before item ids,
// with items old, a, b -> a, c -> {b, a, c}, d (same nar file as a), n -> m, m marked deleted,
// an access to b and a root on c. Store::open migrates it in one write transaction.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "helpers.h"
#include "narcache/narstore/store.h"
#include "narcache/narstore/verify.h"
#include "support/support.h"

namespace narcache::narstore {
namespace {

using testing::addItem;
using testing::makeItem;
using testing::pathFor;

constexpr std::int64_t kDay = 86400;
constexpr std::int64_t kMade = 1'700'000'000;  // the fixture's clock at its first item

std::string problems(const VerifyReport& r) {
  std::string out;
  for (const auto& p : r.problems) out += p.subject + ": " + p.message + "\n";
  return out;
}

std::unique_ptr<Store> openFixture(const std::filesystem::path& root) {
  std::filesystem::copy(std::filesystem::path(NARCACHE_TEST_DATA) / ".." / "narstore" / "data" / "store_v1", root,
                        std::filesystem::copy_options::recursive);
  StoreOptions options;
  options.root = root;
  options.clock = [] { return kMade + 30 * kDay; };
  auto store = Store::open(options);
  EXPECT_TRUE(store) << (store ? "" : store.error().message());
  return store ? std::move(*store) : nullptr;
}

// The references of item `name` in the graph, as names.
std::set<std::string> edges(const StoreGraph& g, const std::string& name) {
  std::set<std::string> out;
  auto v = g.find(pathFor(name).hashPart());
  EXPECT_TRUE(v) << name;
  if (!v) return out;
  for (auto k = g.ref_offsets[*v]; k < g.ref_offsets[*v + 1]; ++k) {
    std::string_view h = g.hashPart(g.ref_targets[k]);
    for (const char* n : {"old", "a", "b", "c", "d", "m", "n", "e"}) {
      if (pathFor(n).hashPart() == h) out.insert(n);
    }
  }
  return out;
}

TEST(StoreMigrationTest, SchemaOneStoreIsMigratedAtOpenAndStaysConsistent) {
  test::TempDir dir;
  auto store = openFixture(dir / "s");
  ASSERT_TRUE(store);
  auto report = verifyStore(*store, {.threads = 1});
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_TRUE(report->problems.empty()) << problems(*report);
  EXPECT_EQ(report->items, 6u);

  auto g = store->scanGraph();
  ASSERT_TRUE(g) << g.error().message();
  EXPECT_EQ(g->size(), 6u);
  EXPECT_EQ(g->ref_targets.size(), 3u);  // b -> a, c -> b, c -> a; n -> m is gone with m
  EXPECT_EQ(edges(*g, "b"), (std::set<std::string>{"a"}));
  EXPECT_EQ(edges(*g, "c"), (std::set<std::string>{"a", "b"}));
  EXPECT_TRUE(edges(*g, "n").empty());
  auto a = *g->find(pathFor("a").hashPart());
  auto b = *g->find(pathFor("b").hashPart());
  auto d = *g->find(pathFor("d").hashPart());
  EXPECT_EQ(g->file[a], g->file[d]);  // one shared nar file
  EXPECT_EQ(g->file_refcount[g->file[a]], 2u);
  EXPECT_EQ(g->file_size.size(), 5u);
  EXPECT_GT(g->last_access[b], 0);
  EXPECT_EQ(g->last_access[a], 0);
  EXPECT_EQ(g->created[a], kMade + kDay);
  ASSERT_EQ(g->roots.size(), 1u);

  // The rest of the store reads as before.
  EXPECT_EQ(store->status(pathFor("n").hashPart()).state, ItemState::kIncomplete);
  auto referrers = store->referrers(pathFor("a").hashPart());
  ASSERT_TRUE(referrers);
  EXPECT_EQ(referrers->size(), 2u);

  // Writes after the migration: m comes back (n's edge with it), a new item gets a fresh id.
  ASSERT_TRUE(addItem(*store, makeItem("m", "m: to be marked deleted")));
  ASSERT_TRUE(addItem(*store, makeItem("e", "e needs b", {pathFor("b")})));
  EXPECT_EQ(store->status(pathFor("n").hashPart()).state, ItemState::kAvailable);
  ASSERT_TRUE(store->markDeleted(pathFor("d"), {1, "test", "test"}));
  store->recordAccess(pathFor("a").hashPart());
  ASSERT_TRUE(store->flushAccessTimes());
  g = store->scanGraph();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->size(), 7u);
  EXPECT_EQ(edges(*g, "n"), (std::set<std::string>{"m"}));
  EXPECT_EQ(edges(*g, "e"), (std::set<std::string>{"b"}));
  EXPECT_EQ(g->last_access[*g->find(pathFor("a").hashPart())], kMade + 30 * kDay);
  report = verifyStore(*store, {.threads = 1});
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->problems.empty()) << problems(*report);

  // Reopening does not migrate again.
  store.reset();
  StoreOptions options;
  options.root = dir / "s";
  auto again = Store::open(options);
  ASSERT_TRUE(again) << again.error().message();
  auto g2 = (*again)->scanGraph();
  ASSERT_TRUE(g2);
  EXPECT_EQ(g2->size(), 7u);
  EXPECT_EQ(g2->ref_targets.size(), g->ref_targets.size());
}

}  // namespace
}  // namespace narcache::narstore
