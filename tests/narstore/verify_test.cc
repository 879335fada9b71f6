#include "narcache/narstore/verify.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "helpers.h"
#include "support/support.h"

namespace narcache::narstore {
namespace {

using testing::addItem;
using testing::initStore;
using testing::listDir;
using testing::makeItem;

std::string problems(const VerifyReport& r) {
  std::string out;
  for (const auto& p : r.problems) out += p.subject + ": " + p.message + "\n";
  return out;
}

TEST(VerifyTest, CleanStoreIsConsistent) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto c = makeItem("c", "c");
  auto b = makeItem("b", "b", {c.info.path});
  auto a = makeItem("a", "a", {b.info.path, c.info.path});
  auto dup = makeItem("dup", "c");
  for (auto* i : {&c, &b, &a, &dup}) ASSERT_TRUE(addItem(*store, *i));
  ASSERT_TRUE(store->markDeleted(c.info.path, {1, "x", "operator"}));
  auto report = verifyStore(*store, {.threads = 2});
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_TRUE(report->consistent()) << problems(*report);
  EXPECT_TRUE(report->problems.empty()) << problems(*report);
  EXPECT_EQ(report->items, 3u);
  EXPECT_EQ(report->nar_files, 3u);
  EXPECT_TRUE(report->orphans.empty());
}

TEST(VerifyTest, CorruptAndMissingFilesAreFoundAndRepairedByMarkingDeleted) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto c = makeItem("c", std::string(50000, 'c'));
  auto b = makeItem("b", "b", {c.info.path});
  auto gone = makeItem("gone", "gone");
  auto fine = makeItem("fine", "fine");
  for (auto* i : {&c, &b, &gone, &fine}) ASSERT_TRUE(addItem(*store, *i));
  // Flip a byte of c's file, remove gone's file.
  auto cpath = dir / "s" / c.info.url;
  std::string bytes = test::readFile(cpath);
  bytes[bytes.size() / 2] ^= 1;
  ::chmod(cpath.c_str(), 0644);
  test::writeFile(cpath, bytes);
  std::filesystem::remove(dir / "s" / gone.info.url);

  auto report = verifyStore(*store, {.threads = 2});
  ASSERT_TRUE(report);
  EXPECT_FALSE(report->consistent());
  ASSERT_EQ(report->problems.size(), 2u) << problems(*report);

  auto repaired = verifyStore(*store, {.repair = true, .threads = 2});
  ASSERT_TRUE(repaired);
  EXPECT_TRUE(repaired->consistent()) << problems(*repaired);
  auto sc = store->status(c.info.path.hashPart());
  EXPECT_EQ(sc.state, ItemState::kDeleted);
  ASSERT_TRUE(sc.tombstone);
  EXPECT_EQ(sc.tombstone->by, "verify");
  EXPECT_NE(sc.tombstone->reason.find("nar file"), std::string::npos);
  EXPECT_EQ(store->status(gone.info.path.hashPart()).state, ItemState::kDeleted);
  EXPECT_EQ(store->status(b.info.path.hashPart()).state, ItemState::kIncomplete);
  EXPECT_EQ(store->status(fine.info.path.hashPart()).state, ItemState::kAvailable);
  EXPECT_FALSE(std::filesystem::exists(cpath));  // corrupt file removed with its last user

  auto after = verifyStore(*store);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->problems.empty()) << problems(*after);
  // Re-adding the good bytes restores c and b.
  ASSERT_TRUE(addItem(*store, c));
  EXPECT_EQ(store->status(b.info.path.hashPart()).state, ItemState::kAvailable);
  EXPECT_TRUE(verifyStore(*store)->problems.empty());
}

// A nar file that cannot be read says nothing of its content (a permission, an I/O error): verify
// reports it, but --repair neither marks its items deleted nor unlinks it. Here a directory stands
// in its place, so reading it fails with EISDIR.
TEST(VerifyTest, AFileThatCannotBeReadIsReportedButNotRepaired) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto a = makeItem("a", "a");
  ASSERT_TRUE(addItem(*store, a));
  const auto file = dir / "s" / a.info.url;
  const auto aside = dir / "aside";
  std::filesystem::rename(file, aside);
  std::filesystem::create_directory(file);

  auto repaired = verifyStore(*store, {.repair = true, .threads = 1});
  ASSERT_TRUE(repaired) << repaired.error().message();
  EXPECT_FALSE(repaired->consistent());
  ASSERT_EQ(repaired->problems.size(), 1u) << problems(*repaired);
  EXPECT_FALSE(repaired->problems[0].repaired);
  EXPECT_NE(repaired->problems[0].message.find("not repaired: the file could not be read"),
            std::string::npos)
      << problems(*repaired);
  EXPECT_EQ(store->status(a.info.path.hashPart()).state, ItemState::kAvailable);
  EXPECT_TRUE(std::filesystem::is_directory(file));

  std::filesystem::remove(file);
  std::filesystem::rename(aside, file);
  auto after = verifyStore(*store);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->consistent()) << problems(*after);
}

TEST(VerifyTest, OrphansAreReportedAndRemovedByRepair) {
  test::TempDir dir;
  std::int64_t now = 1'000'000'000'000;  // far future: every file counts as old
  StoreOptions options;
  options.clock = [&] { return now; };
  auto store = initStore(dir / "s", options);
  auto kept = makeItem("kept", "kept");
  ASSERT_TRUE(addItem(*store, kept));
  auto orphan = makeItem("orphan", "orphan");
  test::writeFile(dir / "s" / orphan.info.url, orphan.file);
  test::writeFile(dir / "s" / "tmp" / "123-0-1.tmp", "half written");
  test::writeFile(dir / "s" / "nar" / "junk", "junk");

  auto report = verifyStore(*store);
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->consistent());
  EXPECT_EQ(report->orphans.size(), 3u);

  // Young orphans survive a plain repair...
  now = systemClock();
  auto young = verifyStore(*store, {.repair = true});
  ASSERT_TRUE(young);
  EXPECT_EQ(young->orphans.size(), 3u);
  // ...old ones (or all, when told) do not.
  auto all = verifyStore(*store, {.repair = true, .all_orphans = true});
  ASSERT_TRUE(all);
  EXPECT_EQ(all->removed_orphans.size(), 3u);
  EXPECT_TRUE(all->orphans.empty());
  EXPECT_TRUE(listDir(dir / "s" / "tmp").empty());
  EXPECT_EQ(listDir(dir / "s" / "nar"), std::vector<std::string>{kept.info.url.substr(4)});
  EXPECT_TRUE(store->servable(kept.info.path.hashPart()));
}

// verify --repair acts on a snapshot that is old by the time it repairs: what changed in
// between (here, in before_repair) is left alone. An item GC deleted and that was uploaded
// again, healthy, is not tombstoned nor its new file unlinked; a missing file put back keeps
// its item; a nar file uploaded meanwhile (awaiting its narinfo, in pending_unlink) is no
// orphan even with --all-orphans. What did not change is repaired.
TEST(VerifyTest, RepairLeavesAloneWhatChangedSinceTheChecks) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto reuploaded = makeItem("reuploaded", "reuploaded");
  auto restored = makeItem("restored", "restored");
  auto broken = makeItem("broken", "broken");
  auto late = makeItem("late", "late");
  for (auto* i : {&reuploaded, &restored, &broken}) {
    ASSERT_TRUE(addItem(*store, *i));
    std::filesystem::remove(dir / "s" / i->info.url);
  }

  VerifyOptions options{.repair = true, .all_orphans = true, .threads = 1};
  options.before_repair = [&] {
    // GC deletes `reuploaded` (its file is gone already), then it is uploaded again.
    auto graph = store->scanGraph();
    ASSERT_TRUE(graph);
    auto i = graph->find(reuploaded.info.path.hashPart());
    ASSERT_TRUE(i);
    auto deleted = store->deleteUnreachable(
        {{reuploaded.info.path.hashPart(), graph->created[*i], graph->last_access[*i]}},
        graph->roots_generation);
    ASSERT_TRUE(deleted);
    ASSERT_EQ(deleted->deleted.size(), 1u);
    ASSERT_TRUE(addItem(*store, reuploaded));
    // An operator puts `restored`'s file back.
    test::writeFile(dir / "s" / restored.info.url, restored.file);
    // A client PUTs `late`'s nar; its narinfo follows.
    MemorySource body(late.file);
    ASSERT_TRUE(store->putNarFile(late.info.url.substr(4), body));
  };
  auto report = verifyStore(*store, options);
  ASSERT_TRUE(report) << report.error().message();
  ASSERT_EQ(report->problems.size(), 3u) << problems(*report);
  for (const auto& p : report->problems) {
    if (p.subject == broken.info.path.baseName()) {
      EXPECT_TRUE(p.repaired) << p.message;
    } else {
      EXPECT_FALSE(p.repaired) << p.subject;
      EXPECT_NE(p.message.find("(not repaired: changed meanwhile, left alone"), std::string::npos)
          << p.message;
    }
  }
  EXPECT_TRUE(report->removed_orphans.empty());

  EXPECT_EQ(store->status(reuploaded.info.path.hashPart()).state, ItemState::kAvailable);
  EXPECT_TRUE(std::filesystem::exists(dir / "s" / reuploaded.info.url));
  EXPECT_EQ(store->status(restored.info.path.hashPart()).state, ItemState::kAvailable);
  EXPECT_TRUE(std::filesystem::exists(dir / "s" / restored.info.url));
  EXPECT_EQ(store->status(broken.info.path.hashPart()).state, ItemState::kDeleted);
  EXPECT_TRUE(std::filesystem::exists(dir / "s" / late.info.url));
  auto added = store->addNarInfo(late.info);
  EXPECT_TRUE(added) << added.error().message();

  auto after = verifyStore(*store);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->problems.empty()) << problems(*after);
  EXPECT_TRUE(after->orphans.empty());
}

}  // namespace
}  // namespace narcache::narstore
