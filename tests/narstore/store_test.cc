#include "narcache/narstore/store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "helpers.h"
#include "support/support.h"

namespace narcache::narstore {
namespace {

using testing::addItem;
using testing::initStore;
using testing::listDir;
using testing::makeItem;
using testing::pathFor;

TEST(StoreTest, InitTwiceIsRefusedAndOpenWithoutStoreHints) {
  test::TempDir dir;
  StoreOptions options;
  options.root = dir / "s";
  auto missing = Store::open(options);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("narcache store init"), std::string::npos);
  ASSERT_TRUE(Store::init(options));
  auto again = Store::init(options);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
}

TEST(StoreTest, AddGetServable) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto item = makeItem("hello", "hello world\n");
  auto added = addItem(*store, item);
  ASSERT_TRUE(added) << added.error().message();
  EXPECT_TRUE(added->added);
  EXPECT_EQ(added->info.url, item.info.url);

  auto served = store->servable(item.info.path.hashPart());
  ASSERT_TRUE(served) << served.error().message();
  EXPECT_EQ(served->toString(), item.info.toString());
  auto got = store->get(item.info.path.hashPart());
  ASSERT_TRUE(got);
  EXPECT_EQ(got->uploader, "local");
  EXPECT_EQ(store->status(item.info.path.hashPart()).state, ItemState::kAvailable);
  auto ls = store->listing(item.info.path.hashPart());
  ASSERT_TRUE(ls);
  EXPECT_NE(ls->find("\"regular\""), std::string::npos);
  auto file = store->narFilePath(item.info.url.substr(4));
  ASSERT_TRUE(file);
  EXPECT_EQ(test::readFile(*file), item.file);
  EXPECT_FALSE(store->narFilePath("../db/data.mdb"));
  EXPECT_FALSE(store->servable(pathFor("other").hashPart()));

  StoreStats s = store->stats();
  EXPECT_EQ(s.items, 1u);
  EXPECT_EQ(s.nar_files, 1u);
  EXPECT_EQ(s.nar_bytes, item.file.size());
  EXPECT_EQ(s.nar_size, item.nar.size());
  EXPECT_TRUE(listDir(dir / "s" / "tmp").empty());
}

TEST(StoreTest, PutNarFileThenAddNarInfo) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto item = makeItem("two-step", "bytes");
  MemorySource body(item.file);
  auto put = store->putNarFile(item.info.url.substr(4), body);
  ASSERT_TRUE(put) << put.error().message();
  EXPECT_EQ(put->size, item.file.size());
  auto added = store->addNarInfo(item.info);
  ASSERT_TRUE(added) << added.error().message();
  EXPECT_TRUE(added->added);

  MemorySource wrong("not the right bytes");
  auto bad = store->putNarFile(item.info.url.substr(4), wrong);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kCorruption);
  EXPECT_TRUE(listDir(dir / "s" / "tmp").empty());
}

TEST(StoreTest, ClosureRefusalListsMissingReferences) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto a = makeItem("a", "a");
  auto c = makeItem("c", "c");
  auto b = makeItem("b", "b", {a.info.path, c.info.path});
  auto r = addItem(*store, b);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kConflict);
  // Listed in References order (sorted by base name).
  std::string first = std::min(a.info.path, c.info.path).fullPath("/nix/store");
  std::string second = std::max(a.info.path, c.info.path).fullPath("/nix/store");
  EXPECT_NE(r.error().message().find("missing references: " + first + ", " + second),
            std::string::npos)
      << r.error().message();
  EXPECT_TRUE(listDir(dir / "s" / "nar").empty());
  EXPECT_TRUE(listDir(dir / "s" / "tmp").empty());
  ASSERT_TRUE(addItem(*store, a));
  ASSERT_TRUE(addItem(*store, c));
  ASSERT_TRUE(addItem(*store, b));
  auto referrers = store->referrers(a.info.path.hashPart());
  ASSERT_TRUE(referrers);
  ASSERT_EQ(referrers->size(), 1u);
  EXPECT_EQ((*referrers)[0], b.info.path);
  auto size = store->closureSize(b.info.path.hashPart());
  ASSERT_TRUE(size);
  EXPECT_EQ(size->second, 3u);
  EXPECT_EQ(size->first, a.nar.size() + b.nar.size() + c.nar.size());
}

TEST(StoreTest, SelfReferenceIsFine) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto self = makeItem("self", "x");
  self.info.references = {self.info.path};
  auto r = addItem(*store, self);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(store->servable(self.info.path.hashPart()));
  EXPECT_TRUE(store->referrers(self.info.path.hashPart())->empty());
}

TEST(StoreTest, IdenticalFilesAreStoredOnceAndRefcounted) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto one = makeItem("one", "same contents");
  auto two = makeItem("two", "same contents");
  ASSERT_EQ(one.info.url, two.info.url);
  ASSERT_TRUE(addItem(*store, one));
  ASSERT_TRUE(addItem(*store, two));
  EXPECT_EQ(listDir(dir / "s" / "nar").size(), 1u);
  EXPECT_EQ(store->stats().nar_files, 1u);
  EXPECT_EQ(store->stats().items, 2u);
  ASSERT_TRUE(store->markDeleted(one.info.path, {1, "test", "operator"}));
  EXPECT_EQ(store->stats().nar_files, 1u);
  ASSERT_TRUE(store->markDeleted(two.info.path, {1, "test", "operator"}));
  EXPECT_EQ(store->stats().nar_files, 0u);
  EXPECT_EQ(store->stats().nar_bytes, 0u);
  EXPECT_EQ(store->stats().tombstones, 2u);
}

TEST(StoreTest, ReAddIsANoOpAndDifferentNarHashIsRefused) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto item = makeItem("x", "version 1");
  ASSERT_TRUE(addItem(*store, item)->added);
  auto again = addItem(*store, item);
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->added);
  auto other = makeItem("x", "version 2");
  ASSERT_EQ(other.info.path, item.info.path);
  auto r = addItem(*store, other);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kConflict);
  EXPECT_EQ(listDir(dir / "s" / "nar").size(), 1u);
  EXPECT_TRUE(listDir(dir / "s" / "tmp").empty());
  EXPECT_EQ(store->stats().items, 1u);
}

struct BadCase {
  const char* name;
  std::function<void(testing::TestItem&)> spoil;
  ErrorCode code;
  const char* message;
};

TEST(StoreTest, BadUploadsAreRefusedAndLeaveNothingBehind) {
  std::vector<BadCase> cases = {
      {"corrupt file",
       [](testing::TestItem& i) {
         i.file[i.file.size() / 2] ^= 0x55;
         i.info.file_hash.reset();
         i.info.file_size.reset();
         i.info.url.clear();
       },
       ErrorCode::kInvalidArgument, ""},
      {"wrong FileHash",
       [](testing::TestItem& i) { i.info.file_hash = hashString(HashAlgo::kSha256, "x"); },
       ErrorCode::kCorruption, "FileHash mismatch"},
      {"wrong FileSize", [](testing::TestItem& i) { *i.info.file_size += 1; },
       ErrorCode::kCorruption, "FileSize mismatch"},
      {"wrong NarHash",
       [](testing::TestItem& i) { i.info.nar_hash = hashString(HashAlgo::kSha256, "x"); },
       ErrorCode::kCorruption, "NarHash mismatch"},
      {"wrong NarSize", [](testing::TestItem& i) { i.info.nar_size += 8; }, ErrorCode::kCorruption,
       "NarSize mismatch"},
      {"truncated",
       [](testing::TestItem& i) {
         i.file.resize(i.file.size() - 5);
         i.info.file_hash.reset();
         i.info.file_size.reset();
         i.info.url.clear();
       },
       ErrorCode::kInvalidArgument, ""},
      {"unknown compression", [](testing::TestItem& i) { i.info.compression = "snappy"; },
       ErrorCode::kInvalidArgument, "snappy"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    test::TempDir dir;
    auto store = initStore(dir / "s");
    auto keep = makeItem("keep", "kept");
    ASSERT_TRUE(addItem(*store, keep));
    auto before = listDir(dir / "s" / "nar");
    auto item = makeItem("bad", std::string(100000, 'q') + "tail");
    c.spoil(item);
    auto r = addItem(*store, item);
    ASSERT_FALSE(r);
    if (*c.message == '\0') {
      EXPECT_TRUE(r.error().code() == c.code || r.error().code() == ErrorCode::kCorruption)
          << r.error().message();
    } else {
      EXPECT_EQ(r.error().code(), c.code) << r.error().message();
      EXPECT_NE(r.error().message().find(c.message), std::string::npos) << r.error().message();
    }
    EXPECT_EQ(listDir(dir / "s" / "nar"), before);
    EXPECT_TRUE(listDir(dir / "s" / "tmp").empty());
    EXPECT_EQ(store->status(item.info.path.hashPart()).state, ItemState::kMissing);
    EXPECT_EQ(store->stats().items, 1u);
    EXPECT_EQ(store->stats().nar_files, 1u);
  }
}

TEST(StoreTest, MarkDeletedMakesReferrersIncompleteTransitivelyAndReAddRestores) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  auto c = makeItem("c", "c");
  auto b = makeItem("b", "b", {c.info.path});
  auto a = makeItem("a", "a", {b.info.path});
  auto other = makeItem("other", "o");
  for (auto* i : {&c, &b, &a, &other}) ASSERT_TRUE(addItem(*store, *i));

  ASSERT_TRUE(store->markDeleted(c.info.path, {42, "broken", "operator"}));
  auto sc = store->status(c.info.path.hashPart());
  EXPECT_EQ(sc.state, ItemState::kDeleted);
  ASSERT_TRUE(sc.tombstone);
  EXPECT_EQ(sc.tombstone->reason, "broken");
  EXPECT_EQ(sc.tombstone->when, 42);
  for (auto* i : {&b, &a}) {
    auto s = store->status(i->info.path.hashPart());
    EXPECT_EQ(s.state, ItemState::kIncomplete);
    ASSERT_EQ(s.missing.size(), 1u);
    EXPECT_EQ(s.missing[0], c.info.path);
    auto served = store->servable(i->info.path.hashPart());
    ASSERT_FALSE(served);
    EXPECT_EQ(served.error().code(), ErrorCode::kNotFound);
  }
  EXPECT_TRUE(store->servable(other.info.path.hashPart()));
  // A new item referencing the deleted one is refused; one referencing an incomplete one is
  // accepted but incomplete itself.
  auto d = makeItem("d", "d", {c.info.path});
  EXPECT_FALSE(addItem(*store, d));
  auto e = makeItem("e", "e", {a.info.path});
  ASSERT_TRUE(addItem(*store, e));
  EXPECT_EQ(store->status(e.info.path.hashPart()).state, ItemState::kIncomplete);

  // Delete b too, re-add c, then b: a and e must end up available.
  ASSERT_TRUE(store->markDeleted(b.info.path, {43, "also", "operator"}));
  EXPECT_EQ(store->status(a.info.path.hashPart()).missing.size(), 2u);
  auto again = addItem(*store, c);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE(again->added);
  ASSERT_TRUE(again->undeleted);  // the tombstone it lifted, for the server's log
  EXPECT_EQ(again->undeleted->reason, "broken");
  EXPECT_FALSE(addItem(*store, other)->undeleted);
  EXPECT_EQ(store->status(a.info.path.hashPart()).state, ItemState::kIncomplete);
  ASSERT_TRUE(addItem(*store, b));
  for (auto* i : {&c, &b, &a, &e}) {
    EXPECT_EQ(store->status(i->info.path.hashPart()).state, ItemState::kAvailable)
        << i->info.path.baseName();
  }
  EXPECT_EQ(store->stats().tombstones, 0u);
  EXPECT_EQ(store->stats().items, 5u);
}

TEST(StoreTest, AccessTimesAreBatchedAndFlushedInOneTransaction) {
  test::TempDir dir;
  std::atomic<std::int64_t> now{1000};
  StoreOptions options;
  options.clock = [&] { return now.load(); };
  auto store = initStore(dir / "s", options);
  auto item = makeItem("x", "x");
  ASSERT_TRUE(addItem(*store, item));
  EXPECT_EQ(store->get(item.info.path.hashPart())->created, 1000);
  now = 2000;
  store->recordAccess(item.info.path.hashPart());
  now = 3000;
  store->recordAccess(item.info.path.hashPart());
  store->recordAccess(pathFor("unknown").hashPart());
  store->recordAccess("garbage");
  EXPECT_EQ(store->get(item.info.path.hashPart())->last_access, 0);
  ASSERT_TRUE(store->flushAccessTimes());
  EXPECT_EQ(store->get(item.info.path.hashPart())->last_access, 3000);
  ASSERT_TRUE(store->flushAccessTimes());  // nothing pending
  EXPECT_EQ(store->get(item.info.path.hashPart())->last_access, 3000);
}

TEST(StoreTest, MapGrowsOnDemandUnderConcurrentWriters) {
  test::TempDir dir;
  StoreOptions options;
  options.initial_map_size = 64 * 1024;
  auto store = initStore(dir / "s", options);
  ASSERT_TRUE(store);
  std::vector<testing::TestItem> items;
  for (int i = 0; i < 300; ++i) {
    items.push_back(makeItem("item" + std::to_string(i),
                             "contents " + std::to_string(i) + std::string(3000, 'z')));
  }
  std::atomic<int> failures{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&, t] {
        for (std::size_t i = t; i < items.size(); i += 3) {
          if (!addItem(*store, items[i])) ++failures;
          (void)store->servable(items[(i * 7) % items.size()].info.path.hashPart());
        }
      });
    }
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store->stats().items, items.size());
  EXPECT_GT(std::filesystem::file_size(dir / "s" / "db" / "data.mdb"), 64u * 1024u);
  for (const auto& i : items) EXPECT_TRUE(store->servable(i.info.path.hashPart()));
}

TEST(StoreTest, ReopenKeepsEverything) {
  test::TempDir dir;
  auto item = makeItem("x", "x");
  {
    StoreOptions gnu_options;
    gnu_options.store_dir = "/gnu/store";
    auto store = initStore(dir / "s", gnu_options);
    auto gnu = item;
    gnu.info.store_dir = "/gnu/store";
    ASSERT_TRUE(addItem(*store, gnu));
    EXPECT_FALSE(addItem(*store, item));  // /nix/store item in a /gnu/store cache
  }
  StoreOptions options;
  options.root = dir / "s";
  auto store = Store::open(options);
  ASSERT_TRUE(store);
  EXPECT_EQ((*store)->storeDir(), "/gnu/store");
  auto served = (*store)->servable(item.info.path.hashPart());
  ASSERT_TRUE(served);
  EXPECT_EQ(served->fullPath(), "/gnu/store/" + item.info.path.baseName());
}

TEST(StoreTest, Logs) {
  test::TempDir dir;
  auto store = initStore(dir / "s");
  std::string name = pathFor("x.drv").baseName();
  MemorySource body("build log\n");
  ASSERT_TRUE(store->putLog(name, body));
  auto p = store->logPath(name);
  ASSERT_TRUE(p);
  EXPECT_EQ(test::readFile(*p), "build log\n");
  MemorySource evil("x");
  EXPECT_FALSE(store->putLog("../../etc/passwd", evil));
  EXPECT_FALSE(store->logPath("../db/data.mdb"));
}

}  // namespace
}  // namespace narcache::narstore
