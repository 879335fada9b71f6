// Property tests: random graphs, ages, accesses and roots (seeded); after GC every kept item's
// closure is complete and every deleted item was eligible. And GC racing real uploads that
// reference old items: the closure invariant holds for every item afterwards.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <thread>

#include "gc_helpers.h"
#include "narcache/gc/gc.h"
#include "narcache/narstore/bulk_load.h"
#include "narcache/narstore/verify.h"

namespace narcache::gc {
namespace {

using narstore::testing::initStore;
using testing::ManualClock;

constexpr std::int64_t kDay = 86400;

NarInfo syntheticInfo(int seed, int i, const std::vector<StorePath>& refs) {
  NarInfo info;
  info.path = testing::pathFor("p" + std::to_string(seed) + "-" + std::to_string(i));
  // Every 4th item shares the previous one's file.
  int file = i % 4 == 3 ? i - 1 : i;
  Hash fh = hashString(HashAlgo::kSha256, std::to_string(seed) + "/" + std::to_string(file));
  info.compression = "zstd";
  info.url = "nar/" + fh.digestString(HashFormat::kNix32) + ".nar.zst";
  info.file_hash = fh;
  info.file_size = 100 + file;
  info.nar_hash = hashString(HashAlgo::kSha256, "nar" + std::to_string(file));
  info.nar_size = 300 + file;
  info.references = refs;
  std::sort(info.references.begin(), info.references.end());
  return info;
}

TEST(GcPropertyTest, RandomGraphsKeepClosuresAndDeleteOnlyEligibleItems) {
  for (int seed = 1; seed <= 200; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    test::TempDir dir;
    ManualClock clock;
    narstore::StoreOptions options;
    options.clock = clock.clock();
    auto store = initStore(dir / "s", options);
    ASSERT_TRUE(store);
    const std::int64_t t0 = clock.now->load();
    const int n = 10 + static_cast<int>(rng() % 40);
    // Three cohorts created at t0, t0 + 10d, t0 + 20d; references point to earlier items.
    std::vector<NarInfo> infos;
    std::vector<std::vector<int>> refs(n);
    std::vector<std::int64_t> created(n);
    for (int i = 0; i < n; ++i) {
      std::vector<StorePath> ps;
      std::set<int> targets;
      int k = i == 0 ? 0 : static_cast<int>(rng() % 4);
      for (int j = 0; j < k; ++j) targets.insert(static_cast<int>(rng() % i));
      if (rng() % 5 == 0)
        ps.push_back(
            testing::pathFor("p" + std::to_string(seed) + "-" + std::to_string(i)));  // self
      for (int t : targets) {
        refs[i].push_back(t);
        ps.push_back(infos[t].path);
      }
      infos.push_back(syntheticInfo(seed, i, ps));
    }
    for (int cohort = 0; cohort < 3; ++cohort) {
      std::vector<NarInfo> part;
      for (int i = cohort * n / 3; i < (cohort + 1) * n / 3 || (cohort == 2 && i < n); ++i) {
        part.push_back(infos[i]);
        created[i] = t0 + cohort * 10 * kDay;
      }
      ASSERT_TRUE(narstore::addTrustedNarInfos(*store, part, t0 + cohort * 10 * kDay));
    }
    // Accesses at random times; roots (some expired).
    std::vector<std::int64_t> used(created);
    const std::int64_t now = t0 + 40 * kDay;
    for (int i = 0; i < n; ++i) {
      if (rng() % 3 == 0) {
        std::int64_t when = t0 + 20 * kDay + static_cast<std::int64_t>(rng() % (20 * kDay));
        *clock.now = when;
        store->recordAccess(infos[i].path.hashPart());
        used[i] = std::max(used[i], when);
      }
    }
    *clock.now = now;
    ASSERT_TRUE(store->flushAccessTimes());
    std::vector<int> root_items;
    for (int r = 0; r < 2; ++r) {
      int i = static_cast<int>(rng() % n);
      bool expired = rng() % 2 == 0;
      std::optional<std::int64_t> expires =
          expired ? std::optional<std::int64_t>(now - 1) : std::nullopt;
      ASSERT_TRUE(store->addRoot({"r" + std::to_string(r), {infos[i].path}, 0, expires}));
      if (!expired) root_items.push_back(i);
    }
    // Grace covers the newest cohort sometimes.
    Policy policy;
    policy.ttl_seconds = static_cast<std::int64_t>(5 + rng() % 20) * kDay;
    policy.grace_seconds = rng() % 2 == 0 ? 3600 : 25 * kDay;
    policy.nar_grace_seconds = 0;
    bool budget = rng() % 3 == 0;
    if (budget) policy.max_size_bytes = 100 * static_cast<std::uint64_t>(rng() % n);

    // The model: live = closure of roots, grace and recent items.
    std::vector<char> live(n, 0);
    std::vector<char> protect(n, 0);
    std::function<void(int, std::vector<char>&)> mark = [&](int i, std::vector<char>& set) {
      if (set[i]) return;
      set[i] = 1;
      for (int r : refs[i]) mark(r, set);
    };
    for (int i : root_items) {
      mark(i, live);
      mark(i, protect);
    }
    for (int i = 0; i < n; ++i) {
      if (now - created[i] < policy.grace_seconds) {
        mark(i, live);
        mark(i, protect);
      } else if (now - used[i] < *policy.ttl_seconds) {
        mark(i, live);
      }
    }

    auto plan = planCollection(*store, policy);
    ASSERT_TRUE(plan) << plan.error().message();
    CollectOptions copts;
    copts.batch_size = 1 + rng() % 8;
    auto report = collect(*store, *plan, copts);
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_FALSE(report->stale);
    EXPECT_EQ(report->kept_on_recheck, 0u);

    auto g = store->scanGraph();
    ASSERT_TRUE(g);
    for (int i = 0; i < n; ++i) {
      bool kept = g->find(infos[i].path.hashPart()).has_value();
      if (kept) {
        for (int r : refs[i]) {
          EXPECT_TRUE(g->find(infos[r].path.hashPart()).has_value())
              << "kept item " << i << " lost its reference " << r;
        }
      } else if (budget) {
        EXPECT_FALSE(protect[i]) << "protected item " << i << " evicted by the budget";
      } else {
        EXPECT_FALSE(live[i]) << "live item " << i << " deleted";
      }
      if (!budget && !live[i]) {
        EXPECT_FALSE(kept) << "eligible item " << i << " kept";
      }
    }
    if (budget && !plan->summary.over_budget) {
      EXPECT_LE(store->stats().nar_bytes, *policy.max_size_bytes);
    }
    EXPECT_TRUE(testing::brokenClosures(*store).empty());
  }
}

TEST(GcConcurrencyTest, UploadsReferencingOldItemsWhileGcRuns) {
  using narstore::testing::addItem;
  using narstore::testing::makeItem;
  test::TempDir dir;
  ManualClock clock;
  narstore::StoreOptions options;
  options.clock = clock.clock();
  auto store = initStore(dir / "s", options);
  ASSERT_TRUE(store);
  // 150 old items in chains of 3.
  std::vector<narstore::testing::TestItem> old;
  for (int c = 0; c < 50; ++c) {
    std::vector<StorePath> prev;
    for (int k = 0; k < 3; ++k) {
      std::string name = "old-" + std::to_string(c) + "-" + std::to_string(k);
      old.push_back(makeItem(name, name, prev));
      ASSERT_TRUE(addItem(*store, old.back()));
      prev = {old.back().info.path};
    }
  }
  // Prepared uploads, each referencing a random old chain top or middle.
  std::vector<narstore::testing::TestItem> uploads;
  std::mt19937 rng(7);
  for (int u = 0; u < 60; ++u) {
    std::string name = "new-" + std::to_string(u);
    uploads.push_back(makeItem(name, name, {old[rng() % old.size()].info.path}));
  }
  clock.advance(40 * kDay);

  std::atomic<bool> done{false};
  std::atomic<int> accepted{0};
  std::atomic<int> refused{0};
  std::atomic<int> finished{0};  // uploader threads done
  std::vector<std::jthread> uploaders;
  for (int t = 0; t < 3; ++t) {
    uploaders.emplace_back([&, t] {
      for (std::size_t u = t; u < uploads.size(); u += 3) {
        auto r = addItem(*store, uploads[u]);
        if (r) {
          ++accepted;
        } else if (r.error().code() == ErrorCode::kConflict) {
          ++refused;  // a reference was collected first: refused, never half-accepted
        } else {
          ADD_FAILURE() << r.error().message();
        }
      }
      ++finished;
    });
  }
  std::jthread collector([&] {
    // A few uploads first, so that the test is never vacuous: a collector that deleted every
    // old item before the first commit would have every upload refused.
    while (accepted.load() < 3 && finished.load() < 3) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    for (int round = 0; round < 5; ++round) {
      Policy policy;
      policy.ttl_seconds = 30 * kDay;
      policy.nar_grace_seconds = 0;
      auto plan = planCollection(*store, policy);
      ASSERT_TRUE(plan);
      CollectOptions copts;
      copts.batch_size = 4;
      ASSERT_TRUE(collect(*store, *plan, copts));
    }
    done = true;
  });
  collector.join();
  for (auto& t : uploaders) t.join();
  EXPECT_EQ(accepted + refused, 60);
  EXPECT_GT(accepted.load(), 0);
  EXPECT_TRUE(testing::brokenClosures(*store).empty());
  // Every accepted upload is servable with its whole closure.
  for (const auto& u : uploads) {
    auto st = store->status(u.info.path.hashPart());
    if (st.state == narstore::ItemState::kMissing) continue;
    EXPECT_EQ(st.state, narstore::ItemState::kAvailable);
  }
  auto report = narstore::verifyStore(*store, {.threads = 1});
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->consistent());
}

// RssFile of /proc/self/status, in KiB: pages of mapped files (the LMDB map) in this process.
long mappedFileKiB() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("RssFile:", 0) == 0) return std::stol(line.substr(8));
  }
  return -1;
}

// The graph scan reads only the small gc tables, but each page it faults in maps its page-cached
// neighbours too (fault-around): unless the scan gives its mappings back, most of the LMDB file
// ends up in the process's resident set (1.4 GiB for 1M items). Afterwards, little is mapped.
TEST(GcScanMemoryTest, ScanOfALargeStoreLeavesLittleOfItsFileMapped) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  ASSERT_TRUE(store);
  constexpr int kItems = 20000;
  std::mt19937 rng(7);
  std::vector<NarInfo> infos;
  for (int i = 0; i < kItems; ++i) {
    std::vector<StorePath> ps;
    for (int j = 0; j < 3 && i > 0; ++j) ps.push_back(infos[rng() % i].path);
    std::sort(ps.begin(), ps.end());
    ps.erase(std::unique(ps.begin(), ps.end()), ps.end());
    infos.push_back(syntheticInfo(0, i, ps));
  }
  for (int start = 0; start < kItems; start += 5000) {
    std::vector<NarInfo> part(infos.begin() + start, infos.begin() + start + 5000);
    ASSERT_TRUE(narstore::addTrustedNarInfos(*store, part, 1000));
  }
  const auto db_bytes = std::filesystem::file_size(dir / "s" / "db" / "data.mdb");
  ASSERT_GT(db_bytes, 40u << 20);  // the file is page-cached: it was just written
  const long before = mappedFileKiB();
  ASSERT_GE(before, 0);
  auto g = store->scanGraph();
  ASSERT_TRUE(g) << g.error().message();
  EXPECT_EQ(g->size(), static_cast<std::size_t>(kItems));
  const long grown = mappedFileKiB() - before;
  EXPECT_LT(grown, 4 * 1024) << "KiB of a " << (db_bytes >> 10) << " KiB file left mapped";
}

}  // namespace
}  // namespace narcache::gc
