// The store commands of the narcache binary, including a kill -9 in the middle of adds.
#include <gtest/gtest.h>
#include <lmdb.h>
#include <unistd.h>

#include <csignal>
#include <thread>

#include "helpers.h"
#include "support/support.h"

namespace narcache::narstore {
namespace {

using testing::makeItem;

void writeItem(const test::TempDir& dir, const testing::TestItem& item, const std::string& name) {
  test::writeFile(dir / (name + ".narinfo"), item.info.toString());
  test::writeFile(dir / (name + ".nar"), item.file);
}

TEST(StoreCliTest, InitAddInfoStatsVerify) {
  test::TempDir dir;
  std::string store = (dir / "s").string();
  auto init = test::narcache({"store", "init", "--store", store});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  auto c = makeItem("c", "c");
  auto b = makeItem("b", "b", {c.info.path});
  writeItem(dir, c, "c");
  writeItem(dir, b, "b");
  auto refused = test::narcache({"add", "--store", store, "--narinfo", (dir / "b.narinfo").string(),
                                 "--nar", (dir / "b.nar").string()});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("missing references: " + c.info.fullPath()), std::string::npos)
      << refused.err;
  for (const char* n : {"c", "b"}) {
    auto r = test::narcache({"add", "--store", store, "--narinfo",
                             (dir / (std::string(n) + ".narinfo")).string(), "--nar",
                             (dir / (std::string(n) + ".nar")).string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  test::RunOptions env_store;
  env_store.env["NARCACHE_STORE"] = store;
  auto info = test::narcache({"info", c.info.fullPath(), b.info.path.hashPart()}, env_store);
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("state: available"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("referrers:\n  " + b.info.fullPath()), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("closure: 2 items"), std::string::npos) << info.out;
  auto stats = test::narcache({"stats", "--store", store});
  ASSERT_EQ(stats.exit_code, 0);
  EXPECT_NE(stats.out.find("items: 2\n"), std::string::npos) << stats.out;
  auto verify = test::narcache({"verify", "--store", store});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("consistent"), std::string::npos);
}

// Commands that only read open the store without LMDB's writer lock: beside a `narcache serve`
// or gc in the middle of a long write transaction they answer at once instead of queueing.
TEST(StoreCliTest, ReadingCommandsDoNotWaitForTheWriterLock) {
  test::TempDir dir;
  std::string store = (dir / "s").string();
  ASSERT_EQ(test::narcache({"store", "init", "--store", store}).exit_code, 0);
  auto item = makeItem("held", "held");
  writeItem(dir, item, "held");
  auto add = test::narcache({"add", "--store", store, "--narinfo", (dir / "held.narinfo").string(),
                             "--nar", (dir / "held.nar").string()});
  ASSERT_EQ(add.exit_code, 0) << add.err;

  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), MDB_SUCCESS);
  ASSERT_EQ(mdb_env_set_maxdbs(env, 32), MDB_SUCCESS);
  ASSERT_EQ(mdb_env_open(env, (dir / "s" / "db").c_str(), MDB_NOTLS, 0644), MDB_SUCCESS);
  MDB_txn* writer = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &writer), MDB_SUCCESS);
  test::RunOptions quick;
  quick.timeout_seconds = 15;
  for (const std::vector<std::string>& args : {std::vector<std::string>{"stats"},
                                               {"info", item.info.fullPath()},
                                               {"verify"},
                                               {"available", item.info.fullPath()},
                                               {"export", "file://" + (dir / "out").string()},
                                               {"roots", "list"},
                                               {"gc", "--ttl", "0s", "--dry-run"}}) {
    auto with_store = args;
    with_store.insert(with_store.end(), {"--store", store});
    auto r = test::narcache(with_store, quick);
    EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
  }
  mdb_txn_abort(writer);
  mdb_env_close(env);
}

// Export writes narinfos references first and only with all their references': an item whose
// nar file is missing from the store is left out with its referrers (reported, exit 1), the rest
// is exported, and the result is a cache Nix's closure rule holds in. `file://…?params` is a
// directory, as for import.
TEST(StoreCliTest, ExportLeavesOutWhatItCannotWriteWholeAndSaysSo) {
  test::TempDir dir;
  auto store = testing::initStore(dir / "s");
  auto base = makeItem("base", "base");
  auto user = makeItem("user", "user", {base.info.path});
  auto alone = makeItem("alone", "alone");
  for (auto* i : {&base, &user, &alone}) ASSERT_TRUE(testing::addItem(*store, *i));
  store.reset();
  std::filesystem::remove(dir / "s" / base.info.url);
  const auto out = dir / "out";
  auto r = test::narcache(
      {"export", "--store", (dir / "s").string(), "file://" + out.string() + "?compression=zstd"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find(base.info.fullPath() + ": its nar file"), std::string::npos) << r.err;
  EXPECT_NE(
      r.err.find(user.info.fullPath() + ": left out, as its reference " + base.info.fullPath()),
      std::string::npos)
      << r.err;
  EXPECT_NE(r.out.find("exported 1 items"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(out / (alone.info.path.hashPart() + ".narinfo")));
  EXPECT_FALSE(std::filesystem::exists(out / (base.info.path.hashPart() + ".narinfo")));
  EXPECT_FALSE(std::filesystem::exists(out / (user.info.path.hashPart() + ".narinfo")));
}

// A full path must name the item under its hash: a mistyped name is refused, not applied to
// whatever item has that hash.
TEST(StoreCliTest, AMistypedNameIsNotTheItemWithItsHash) {
  test::TempDir dir;
  auto store = testing::initStore(dir / "s");
  auto a = makeItem("a", "a");
  ASSERT_TRUE(testing::addItem(*store, a));
  store.reset();
  const std::string s = (dir / "s").string();
  const std::string wrong = "/nix/store/" + a.info.path.hashPart() + "-typo";
  auto del = test::narcache({"mark-deleted", "--store", s, wrong, "--reason", "bad"});
  EXPECT_NE(del.exit_code, 0);
  EXPECT_NE(del.err.find("no such item (this hash is " + a.info.fullPath() + ")"),
            std::string::npos)
      << del.err;
  auto root = test::narcache({"roots", "add", "--store", s, "r", wrong});
  EXPECT_NE(root.exit_code, 0);
  EXPECT_NE(root.err.find("not valid items: " + wrong), std::string::npos) << root.err;
  auto info = test::narcache({"info", "--store", s, a.info.fullPath()});
  EXPECT_NE(info.out.find("state: available"), std::string::npos) << info.out << info.err;
  // `available` answers for that path, which is not in the store, deleted or not.
  auto avail = test::narcache({"available", "--store", s, wrong, a.info.fullPath()});
  EXPECT_EQ(avail.out, wrong + ": missing\n" + a.info.fullPath() + ": available\n") << avail.err;
  ASSERT_EQ(
      test::narcache({"mark-deleted", "--store", s, a.info.fullPath(), "--reason", "x"}).exit_code,
      0);
  avail = test::narcache({"available", "--store", s, wrong});
  EXPECT_EQ(avail.out, wrong + ": missing\n") << avail.err;
  del = test::narcache({"mark-deleted", "--store", s, wrong, "--reason", "again"});
  EXPECT_NE(del.exit_code, 0);
  EXPECT_NE(del.err.find("no such item (this hash is " + a.info.fullPath() + ", deleted)"),
            std::string::npos)
      << del.err;
}

// `available` with a path of another store dir says so (not what the base-name reading of it
// would complain about), and takes base names.
TEST(StoreCliTest, AvailableSaysWhyAPathIsNotOfThisStore) {
  test::TempDir dir;
  testing::initStore(dir / "s");
  const std::string s = (dir / "s").string();
  auto other =
      test::narcache({"available", "--store", s, "/gnu/store/00000000000000000000000000000000-x"});
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.err.find("is not in the store '/nix/store'"), std::string::npos) << other.err;
  auto base = test::narcache({"available", "--store", s, "00000000000000000000000000000000-x"});
  EXPECT_EQ(base.exit_code, 0) << base.err;  // answered: the state is the output
  EXPECT_NE(base.out.find("/nix/store/00000000000000000000000000000000-x: missing"),
            std::string::npos)
      << base.out;
}

// serve refuses a GC policy without --gc-interval, which would otherwise be ignored.
TEST(StoreCliTest, ServeRefusesAGcPolicyWithoutAnInterval) {
  test::TempDir dir;
  auto r = test::narcache({"serve", "--store", (dir / "s").string(), "--ttl", "30d"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--ttl requires --gc-interval"), std::string::npos) << r.err;
}

TEST(StoreCliTest, KillDuringAddsLeavesAConsistentStore) {
  test::TempDir dir;
  std::string store = (dir / "s").string();
  ASSERT_EQ(test::narcache({"store", "init", "--store", store}).exit_code, 0);
  // A chain of items, each a few MB (so an add takes a while), added one process at a time and
  // killed with SIGKILL after a varying delay.
  std::vector<testing::TestItem> items;
  std::string big(4 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  for (int i = 0; i < 8; ++i) {
    std::vector<StorePath> refs;
    if (i > 0) refs.push_back(items.back().info.path);
    items.push_back(makeItem("chain" + std::to_string(i), std::to_string(i) + big, refs));
    writeItem(dir, items.back(), "i" + std::to_string(i));
  }
  int killed = 0;
  for (int i = 0; i < 8; ++i) {
    std::vector<std::string> argv = {
        NARCACHE_BIN, "add",
        "--store",    store,
        "--narinfo",  (dir / ("i" + std::to_string(i) + ".narinfo")).string(),
        "--nar",      (dir / ("i" + std::to_string(i) + ".nar")).string()};
    {
      test::BackgroundProcess p(argv);
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + 15 * (i % 4)));
      if (p.stop(SIGKILL) == 128 + SIGKILL) ++killed;
    }
    auto verify = test::narcache({"verify", "--store", store});
    EXPECT_EQ(verify.exit_code, 0) << "after kill " << i << ":\n" << verify.out << verify.err;
    // Finish the add properly (resumes where the killed one stopped).
    auto r = test::narcache({"add", "--store", store, "--narinfo",
                             (dir / ("i" + std::to_string(i) + ".narinfo")).string(), "--nar",
                             (dir / ("i" + std::to_string(i) + ".nar")).string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_GT(killed, 0);
  // Plain --repair leaves the young orphans, and says why and what removes them.
  test::writeFile(dir / "s" / "tmp" / "999-1-1.tmp", "x");
  auto young = test::narcache({"verify", "--store", store, "--repair"});
  EXPECT_EQ(young.exit_code, 0) << young.out << young.err;
  EXPECT_NE(young.out.find("orphan: tmp/999-1-1.tmp\n"), std::string::npos) << young.out;
  EXPECT_NE(young.out.find("those younger than an hour on purpose"), std::string::npos)
      << young.out;
  auto repair = test::narcache({"verify", "--store", store, "--repair", "--all-orphans"});
  EXPECT_EQ(repair.exit_code, 0) << repair.out << repair.err;
  auto verify = test::narcache({"verify", "--store", store});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_NE(verify.out.find("8 items"), std::string::npos) << verify.out;
  EXPECT_NE(verify.out.find(", 0 orphans"), std::string::npos) << verify.out;
}

}  // namespace
}  // namespace narcache::narstore
