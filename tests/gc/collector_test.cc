// GC against a real store: roots, the graph scan, the collector and its re-checks, delayed nar
// unlinking, mark-deleted interplay; verify stays consistent throughout.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "gc_helpers.h"
#include "narcache/gc/gc.h"
#include "narcache/narstore/verify.h"

namespace narcache::gc {
namespace {

namespace fs = std::filesystem;
using narstore::ItemState;
using narstore::Store;
using narstore::testing::addItem;
using narstore::testing::initStore;
using narstore::testing::listDir;
using narstore::testing::makeItem;
using narstore::testing::TestItem;
using testing::brokenClosures;
using testing::ManualClock;
using testing::pathFor;

constexpr std::int64_t kDay = 86400;

struct Fixture {
  test::TempDir dir;
  ManualClock clock;
  std::unique_ptr<Store> store;
  Fixture() {
    narstore::StoreOptions options;
    options.clock = clock.clock();
    store = initStore(dir / "s", options);
  }
  void add(const TestItem& item) {
    auto r = addItem(*store, item);
    ASSERT_TRUE(r) << r.error().message();
  }
  void expectConsistent() {
    auto report = narstore::verifyStore(*store, {.threads = 1});
    ASSERT_TRUE(report) << report.error().message();
    std::string problems;
    for (const auto& p : report->problems) problems += p.subject + ": " + p.message + "\n";
    EXPECT_TRUE(report->consistent()) << problems;
    EXPECT_TRUE(brokenClosures(*store).empty());
  }
  bool valid(const TestItem& item) { return store->get(item.info.path.hashPart()).has_value(); }
};

Policy ttl(std::int64_t seconds, std::int64_t nar_grace = 3600) {
  Policy p;
  p.ttl_seconds = seconds;
  p.grace_seconds = 3600;
  p.nar_grace_seconds = nar_grace;
  return p;
}

TEST(RootsTest, AddListRemoveValidateAndExpire) {
  Fixture f;
  auto a = makeItem("a", "a");
  f.add(a);
  EXPECT_EQ(f.store->addRoot({"bad name", {a.info.path}, 0, {}}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(f.store->addRoot({"x/y", {a.info.path}, 0, {}}).error().code(),
            ErrorCode::kInvalidArgument);
  auto missing = f.store->addRoot({"r", {a.info.path, pathFor("nope")}, 0, {}});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("nope"), std::string::npos);
  std::int64_t now = f.clock.now->load();
  ASSERT_TRUE(f.store->addRoot({"r", {a.info.path}, 0, now + kDay}));
  ASSERT_TRUE(f.store->addRoot({"forever", {a.info.path}, 0, {}}));
  auto roots = f.store->listRoots();
  ASSERT_TRUE(roots);
  ASSERT_EQ(roots->size(), 2u);
  EXPECT_EQ((*roots)[0].name, "forever");
  EXPECT_FALSE((*roots)[0].expires);
  EXPECT_EQ((*roots)[1].name, "r");
  EXPECT_EQ((*roots)[1].created, now);
  EXPECT_EQ((*roots)[1].paths, std::vector<StorePath>{a.info.path});
  EXPECT_FALSE((*roots)[1].expired(now));
  EXPECT_TRUE((*roots)[1].expired(now + kDay));
  ASSERT_TRUE(f.store->removeRoot("forever"));
  EXPECT_EQ(f.store->removeRoot("forever").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(f.store->listRoots()->size(), 1u);
}

TEST(ScanTest, GraphHasItemsRefsFilesAndAtimes) {
  Fixture f;
  auto c = makeItem("c", "same");
  auto b = makeItem("b", "b", {c.info.path});
  auto a = makeItem("a", "same", {b.info.path, c.info.path});
  a.info.references.push_back(a.info.path);  // self-reference
  std::sort(a.info.references.begin(), a.info.references.end());
  for (auto* i : {&c, &b, &a}) f.add(*i);
  f.store->recordAccess(b.info.path.hashPart());
  ASSERT_TRUE(f.store->flushAccessTimes());
  auto g = f.store->scanGraph();
  ASSERT_TRUE(g) << g.error().message();
  ASSERT_EQ(g->size(), 3u);
  EXPECT_EQ(g->file_size.size(), 2u);  // a and c share a file
  auto ia = *g->find(a.info.path.hashPart());
  auto ib = *g->find(b.info.path.hashPart());
  auto ic = *g->find(c.info.path.hashPart());
  EXPECT_EQ(g->file[ia], g->file[ic]);
  EXPECT_EQ(g->file_refcount[g->file[ia]], 2u);
  std::set<std::uint32_t> refs_a(g->ref_targets.begin() + g->ref_offsets[ia],
                                 g->ref_targets.begin() + g->ref_offsets[ia + 1]);
  EXPECT_EQ(refs_a, (std::set<std::uint32_t>{ib, ic}));  // no self edge
  EXPECT_EQ(g->ref_offsets[ic + 1] - g->ref_offsets[ic], 0u);
  EXPECT_EQ(g->last_access[ib], f.clock.now->load());
  EXPECT_EQ(g->last_access[ia], 0);
  EXPECT_EQ(g->created[ia], f.clock.now->load());
}

TEST(CollectTest, DeletesWhatIsNotLiveKeepsClosuresAndUnlinksAfterNarGrace) {
  Fixture f;
  auto lib = makeItem("lib", "lib");
  auto app = makeItem("app", "app", {lib.info.path});
  auto used_dep = makeItem("used-dep", "used-dep");
  auto used = makeItem("used", "used", {used_dep.info.path});
  auto junk_dep = makeItem("junk-dep", "junk-dep");
  auto junk = makeItem("junk", "junk", {junk_dep.info.path});
  auto self = makeItem("self", "self");
  self.info.references = {self.info.path};
  for (auto* i : {&lib, &app, &used_dep, &used, &junk_dep, &junk, &self}) f.add(*i);
  ASSERT_TRUE(f.store->addRoot({"release", {app.info.path}, 0, {}}));
  f.clock.advance(40 * kDay);
  f.store->recordAccess(used.info.path.hashPart());
  ASSERT_TRUE(f.store->flushAccessTimes());

  auto plan = planCollection(*f.store, ttl(30 * kDay));
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->summary.delete_items, 3u);
  EXPECT_EQ(plan->summary.kept_root, 2u);
  EXPECT_EQ(plan->summary.kept_recent, 1u);
  EXPECT_EQ(plan->summary.kept_referenced, 1u);
  auto files_before = listDir(f.dir / "s" / "nar").size();
  CollectOptions one_by_one;
  one_by_one.batch_size = 1;
  auto report = collect(*f.store, *plan, one_by_one);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->deleted_items, 3u);
  EXPECT_EQ(report->files_unreferenced, 3u);
  EXPECT_EQ(report->unlinked_files, 0u);  // nar grace not over
  EXPECT_EQ(report->pending_files, 3u);
  EXPECT_FALSE(f.valid(junk));
  EXPECT_FALSE(f.valid(junk_dep));
  EXPECT_FALSE(f.valid(self));
  EXPECT_EQ(f.store->status(junk.info.path.hashPart()).state, ItemState::kMissing);
  for (auto* i : {&lib, &app, &used, &used_dep})
    EXPECT_TRUE(f.valid(*i)) << i->info.path.baseName();
  EXPECT_EQ(listDir(f.dir / "s" / "nar").size(), files_before);  // still fetchable
  EXPECT_EQ(f.store->stats().items, 4u);
  f.expectConsistent();

  f.clock.advance(3601);
  auto later = f.store->unlinkNarFiles(3600, 100);
  ASSERT_TRUE(later);
  EXPECT_EQ(later->files, 3u);
  EXPECT_EQ(listDir(f.dir / "s" / "nar").size(), files_before - 3);
  f.expectConsistent();
}

TEST(CollectTest, RecheckKeepsWhatChangedSincePlanning) {
  Fixture f;
  auto base = makeItem("base", "base");
  auto accessed = makeItem("accessed", "accessed");
  auto pending = makeItem("pending", "pending");
  auto plain = makeItem("plain", "plain");
  for (auto* i : {&base, &accessed, &pending, &plain}) f.add(*i);
  f.clock.advance(40 * kDay);
  auto plan = planCollection(*f.store, ttl(30 * kDay));
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->deletions.size(), 4u);
  // After planning: an upload references base, accessed is used (flushed), pending is used
  // (not flushed yet).
  f.add(makeItem("new", "new", {base.info.path}));
  f.clock.advance(1);
  f.store->recordAccess(accessed.info.path.hashPart());
  ASSERT_TRUE(f.store->flushAccessTimes());
  f.store->recordAccess(pending.info.path.hashPart());
  auto batch = f.store->deleteUnreachable(plan->deletions, plan->roots_generation);
  ASSERT_TRUE(batch) << batch.error().message();
  EXPECT_EQ(batch->deleted, std::vector<std::string>{plain.info.path.hashPart()});
  EXPECT_EQ(batch->kept.size(), 3u);
  for (auto* i : {&base, &accessed, &pending}) EXPECT_TRUE(f.valid(*i));
  f.expectConsistent();
}

TEST(CollectTest, ReferrerInALaterBatchOrKeptByRecheckKeepsItsReferences) {
  Fixture f;
  auto dep = makeItem("dep", "dep");
  auto top = makeItem("top", "top", {dep.info.path});
  f.add(dep);
  f.add(top);
  f.clock.advance(40 * kDay);
  auto plan = planCollection(*f.store, ttl(30 * kDay));
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->deletions.size(), 2u);
  EXPECT_EQ(plan->deletions[0].hash_part, top.info.path.hashPart());
  // The wrong order (reference first, alone) must not delete anything.
  auto wrong = f.store->deleteUnreachable({plan->deletions[1]}, plan->roots_generation);
  ASSERT_TRUE(wrong);
  EXPECT_TRUE(wrong->deleted.empty());
  // Both in one batch, but top was accessed: dep stays too (fixpoint).
  f.clock.advance(1);
  f.store->recordAccess(top.info.path.hashPart());
  auto both = f.store->deleteUnreachable(plan->deletions, plan->roots_generation);
  ASSERT_TRUE(both);
  EXPECT_TRUE(both->deleted.empty());
  EXPECT_EQ(both->kept.size(), 2u);
  f.expectConsistent();
}

TEST(CollectTest, NewRootMakesThePlanStale) {
  Fixture f;
  auto a = makeItem("a", "a");
  auto b = makeItem("b", "b");
  f.add(a);
  f.add(b);
  f.clock.advance(40 * kDay);
  auto plan = planCollection(*f.store, ttl(30 * kDay));
  ASSERT_TRUE(plan);
  ASSERT_TRUE(f.store->addRoot({"late", {a.info.path}, 0, {}}));
  auto report = collect(*f.store, *plan);
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->stale);
  EXPECT_EQ(report->deleted_items, 0u);
  EXPECT_TRUE(f.valid(a));
  auto again = planCollection(*f.store, ttl(30 * kDay));
  ASSERT_TRUE(again);
  ASSERT_TRUE(collect(*f.store, *again));
  EXPECT_TRUE(f.valid(a));
  EXPECT_FALSE(f.valid(b));
}

TEST(CollectTest, SharedNarFileStaysWhileUsedAndReuploadRestartsItsGrace) {
  Fixture f;
  auto one = makeItem("one", "same bytes");
  auto two = makeItem("two", "same bytes");
  ASSERT_EQ(one.info.url, two.info.url);
  f.add(one);
  f.add(two);
  f.clock.advance(40 * kDay);
  f.store->recordAccess(two.info.path.hashPart());
  ASSERT_TRUE(f.store->flushAccessTimes());
  auto plan = planCollection(*f.store, ttl(30 * kDay, 0));
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->summary.delete_bytes, 0u);
  auto report = collect(*f.store, *plan);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->deleted_items, 1u);
  EXPECT_EQ(report->files_unreferenced, 0u);
  EXPECT_EQ(listDir(f.dir / "s" / "nar").size(), 1u);

  // Now two goes too; before the unlink, the same file is uploaded again (putNarFile).
  f.clock.advance(40 * kDay);
  plan = planCollection(*f.store, ttl(30 * kDay, 10));
  ASSERT_TRUE(plan);
  report = collect(*f.store, *plan);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->files_unreferenced, 1u);
  EXPECT_EQ(report->pending_files, 1u);
  f.clock.advance(100);  // past its grace, but uploaded again before the unlink
  MemorySource body(one.file);
  ASSERT_TRUE(f.store->putNarFile(one.info.url.substr(4), body));
  f.clock.advance(5);
  auto unlinked = f.store->unlinkNarFiles(10, 100);
  ASSERT_TRUE(unlinked);
  EXPECT_EQ(unlinked->files, 0u);
  EXPECT_EQ(listDir(f.dir / "s" / "nar").size(), 1u);
  ASSERT_TRUE(f.store->addNarInfo(one.info));  // claimed: no longer pending at all
  f.clock.advance(100);
  unlinked = f.store->unlinkNarFiles(10, 100);
  ASSERT_TRUE(unlinked);
  EXPECT_EQ(unlinked->files, 0u);
  EXPECT_EQ(unlinked->pending, 0u);
  EXPECT_EQ(listDir(f.dir / "s" / "nar").size(), 1u);
  f.expectConsistent();
}

// A nar file whose narinfo never comes, or is refused (here: a reference is missing), is
// unreferenced from its upload on: it is no orphan for verify, and GC unlinks it after the nar
// grace instead of leaving it on disk forever. `add` of an item that is already there with
// another file (same NAR, other compression) leaves no file behind at all.
TEST(CollectTest, UploadsThatNoNarinfoClaimsGoAfterTheNarGrace) {
  Fixture f;
  auto base = makeItem("base", "base");
  auto user = makeItem("user", "user", {base.info.path});
  MemorySource body(user.file);
  ASSERT_TRUE(f.store->putNarFile(user.info.url.substr(4), body));
  auto refused = f.store->addNarInfo(user.info);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kConflict);
  auto report = narstore::verifyStore(*f.store, {.threads = 1});
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->orphans.empty()) << report->orphans[0];
  EXPECT_EQ(report->awaiting_unlink, 1u);
  f.clock.advance(5);
  auto unlinked = f.store->unlinkNarFiles(10, 100);
  ASSERT_TRUE(unlinked);
  EXPECT_EQ(unlinked->files, 0u);
  EXPECT_EQ(unlinked->pending, 1u);
  f.clock.advance(10);
  unlinked = f.store->unlinkNarFiles(10, 100);
  ASSERT_TRUE(unlinked);
  EXPECT_EQ(unlinked->files, 1u);
  EXPECT_TRUE(listDir(f.dir / "s" / "nar").empty());

  f.add(base);
  auto again = makeItem("base", "base", {}, Compression::kXz);
  ASSERT_NE(again.info.url, base.info.url);
  MemorySource xz(again.file);
  NarInfo info = again.info;
  auto present = f.store->add(info, xz);
  ASSERT_TRUE(present) << present.error().message();
  EXPECT_FALSE(present->added);
  EXPECT_EQ(listDir(f.dir / "s" / "nar"), std::vector<std::string>{base.info.url.substr(4)});
  f.expectConsistent();
}

TEST(CollectTest, ANarFileThatCannotBeUnlinkedStaysPendingAndTheOthersGo) {
  // Three unused nar files past their grace; the first (by name) cannot be unlinked (a
  // directory stands at its name: EISDIR). The other two go all the same, and it stays
  // pending for the next run.
  Fixture f;
  for (const TestItem& item : {makeItem("a", "a"), makeItem("b", "b"), makeItem("c", "c")}) {
    f.add(item);
  }
  f.clock.advance(40 * kDay);
  auto plan = planCollection(*f.store, ttl(30 * kDay, 10));
  ASSERT_TRUE(plan);
  auto report = collect(*f.store, *plan);
  ASSERT_TRUE(report);
  ASSERT_EQ(report->pending_files, 3u);
  auto names = listDir(f.dir / "s" / "nar");
  ASSERT_EQ(names.size(), 3u);
  std::sort(names.begin(), names.end());
  fs::path stuck = f.dir / "s" / "nar" / names[0];
  fs::remove(stuck);
  fs::create_directories(stuck / "x");
  f.clock.advance(100);
  auto unlinked = f.store->unlinkNarFiles(10, 100);
  ASSERT_TRUE(unlinked) << unlinked.error().message();
  EXPECT_EQ(unlinked->files, 2u);
  EXPECT_EQ(unlinked->failed, 1u);
  EXPECT_NE(unlinked->first_error.find(names[0]), std::string::npos) << unlinked->first_error;
  fs::remove_all(stuck);  // the operator clears the way: the next run finishes the job
  auto again = f.store->unlinkNarFiles(10, 100);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->failed, 0u);
  EXPECT_EQ(again->pending, 0u);
  EXPECT_TRUE(listDir(f.dir / "s" / "nar").empty());
}

TEST(CollectTest, MarkDeletedItemsAndIncompleteReferrersAreHandled) {
  Fixture f;
  auto dep = makeItem("dep", "dep");
  auto top = makeItem("top", "top", {dep.info.path});
  f.add(dep);
  f.add(top);
  ASSERT_TRUE(f.store->markDeleted(dep.info.path, {1, "broken", "operator"}));
  EXPECT_EQ(f.store->status(top.info.path.hashPart()).state, ItemState::kIncomplete);
  f.clock.advance(40 * kDay);
  auto plan = planCollection(*f.store, ttl(30 * kDay, 0));
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->deletions.size(), 1u);  // top; dep is already gone
  auto report = collect(*f.store, *plan);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->deleted_items, 1u);
  // Both files (dep's from mark-deleted, top's from GC) are unlinked: nar grace 0.
  EXPECT_EQ(report->unlinked_files, 2u);
  EXPECT_TRUE(listDir(f.dir / "s" / "nar").empty());
  EXPECT_EQ(f.store->status(dep.info.path.hashPart()).state, ItemState::kDeleted);
  f.expectConsistent();
}

TEST(CollectTest, MaxSizeOnARealStore) {
  Fixture f;
  std::vector<TestItem> items;
  for (int i = 0; i < 6; ++i) {
    items.push_back(makeItem("i" + std::to_string(i), std::string(1000 + i, 'a' + i)));
    f.add(items.back());
    f.clock.advance(kDay);
  }
  for (int i = 0; i < 6; ++i) {
    f.store->recordAccess(items[i].info.path.hashPart());
    ASSERT_TRUE(f.store->flushAccessTimes());
    f.clock.advance(10);
  }
  f.clock.advance(2 * 3600);
  Policy p;
  p.max_size_bytes = f.store->stats().nar_bytes / 2;
  auto plan = planCollection(*f.store, p);
  ASSERT_TRUE(plan);
  ASSERT_TRUE(collect(*f.store, *plan));
  EXPECT_LE(f.store->stats().nar_bytes, *p.max_size_bytes);
  EXPECT_FALSE(f.valid(items[0]));  // least recently used
  EXPECT_TRUE(f.valid(items[5]));   // most recently used
  f.expectConsistent();
}

TEST(StoreReopenTest, ReopenedStoreKeepsItsGraph) {
  test::TempDir dir;
  {
    auto store = initStore(dir / "s");
    ASSERT_TRUE(addItem(*store, makeItem("x", "x")));
  }
  narstore::StoreOptions options;
  options.root = dir / "s";
  auto store = Store::open(options);
  ASSERT_TRUE(store);
  auto g = (*store)->scanGraph();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->size(), 1u);
}

// A full disk: the store's file system is filled to the last byte, so the commit of a GC batch
// gets ENOSPC. The run fails, but its unlink step still runs: the nar files already awaiting
// their unlink go and free their space. (Before, the run returned at the failed batch, before
// the unlink step, and no run could ever free anything.) Needs root (a tmpfs); skipped otherwise.
TEST(CollectTest, OnAFullDiskAFailedBatchStillLetsTheUnlinkStepFreeSpace) {
  test::TempDir dir;
  const fs::path small = dir / "small";
  fs::create_directories(small);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=16m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << std::strerror(errno);
  }
  struct Unmount {
    fs::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  ManualClock clock;
  narstore::StoreOptions options;
  options.clock = clock.clock();
  auto store = initStore(small / "s", options);
  ASSERT_TRUE(store);
  // Unrooted items sharing one nar file: deleting them in one batch rewrites most of the
  // database, more pages than its free list holds, so the commit must extend the file.
  constexpr int kItems = 1000;
  for (int i = 0; i < kItems; ++i) {
    ASSERT_TRUE(addItem(*store, makeItem("item-" + std::to_string(i), "shared")));
  }
  // Nar files uploaded without their narinfo: they await their unlink (nar grace 0 below).
  for (int i = 0; i < 4; ++i) {
    auto unclaimed =
        makeItem("unclaimed-" + std::to_string(i),
                 std::string(256 << 10, static_cast<char>('a' + i)), {}, Compression::kNone);
    MemorySource body(unclaimed.file);
    ASSERT_TRUE(store->putNarFile(unclaimed.info.url.substr(4), body));
  }
  ASSERT_EQ(listDir(small / "s" / "nar").size(), 5u);
  auto free_bytes = [&] {
    struct statvfs st {};
    EXPECT_EQ(::statvfs(small.c_str(), &st), 0);
    return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  };
  {
    int fd = ::open((small / "filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    std::string chunk(64 << 10, 'x');
    while (::write(fd, chunk.data(), chunk.size()) > 0) {
    }
    while (::write(fd, chunk.data(), 1) > 0) {
    }
    ::close(fd);
  }
  ASSERT_EQ(free_bytes(), 0u);

  clock.advance(10);
  Policy policy;
  policy.ttl_seconds = 0;
  policy.grace_seconds = 0;
  policy.nar_grace_seconds = 0;
  auto plan = planCollection(*store, policy);
  ASSERT_TRUE(plan) << plan.error().message();
  ASSERT_EQ(plan->deletions.size(), static_cast<std::size_t>(kItems));
  CollectOptions one_batch;
  one_batch.batch_size = kItems;
  auto failed = collect(*store, *plan, one_batch);
  ASSERT_FALSE(failed) << "the batch committed on a full disk: the test proves nothing";
  EXPECT_EQ(failed.error().code(), ErrorCode::kResourceExhausted) << failed.error().message();
  EXPECT_NE(failed.error().message().find("still unlinked 4 nar files"), std::string::npos)
      << failed.error().message();
  EXPECT_EQ(listDir(small / "s" / "nar").size(), 1u);  // the items' shared file stays
  EXPECT_GE(free_bytes(), std::uint64_t{1} << 20);

  // The failed batch left the store intact: once the disk has room, the next run deletes what
  // it plans (the megabyte freed above may not be enough for 1000 deletions).
  fs::remove(small / "filler");
  plan = planCollection(*store, policy);
  ASSERT_TRUE(plan) << plan.error().message();
  auto report = collect(*store, *plan);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->deleted_items, static_cast<std::uint64_t>(kItems));
  EXPECT_EQ(store->stats().items, 0u);
  auto verify = narstore::verifyStore(*store, {.threads = 1});
  ASSERT_TRUE(verify);
  EXPECT_TRUE(verify->consistent());
  store.reset();
}

}  // namespace
}  // namespace narcache::gc
