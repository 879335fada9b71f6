// `narcache serve` as a child process on 127.0.0.1, driven with curl: what the server keeps in
// memory between requests (the signed-narinfo cache) never outlives what the store holds, and
// what dead processes leave in the database (reader slots) does not stay for the server's life.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "helpers.h"
#include "support/served_store.h"
#include "support/support.h"

namespace narcache::narstore {
namespace {

using testing::addItem;
using testing::initStore;
using testing::makeItem;

const char* kToken = "server-test-token";

using Http = test::CurlReply;

// A request with the upload token.
Http curl(const std::string& url, std::vector<std::string> args = {}) {
  args.insert(args.begin(), {"-H", std::string("Authorization: Bearer ") + kToken});
  return test::curlRequest(url, args);
}

// PUTs the nar file and the narinfo of `item`, as `nix copy --to http://` does.
void upload(const test::ServedStore& served, const test::TempDir& dir,
            const testing::TestItem& item) {
  test::writeFile(dir / "upload.nar", item.file);
  test::writeFile(dir / "upload.narinfo", item.info.toString());
  Http nar = curl(served.url("/" + item.info.url),
                  {"-X", "PUT", "--data-binary", "@" + (dir / "upload.nar").string()});
  ASSERT_EQ(nar.status, 200) << nar.body;
  Http narinfo = curl(served.url("/" + item.info.path.hashPart() + ".narinfo"),
                      {"-X", "PUT", "--data-binary", "@" + (dir / "upload.narinfo").string()});
  ASSERT_EQ(narinfo.status, 200) << narinfo.body;
}

std::string line(const std::string& text, const std::string& key) {
  auto at = text.find("\n" + key + ": ");
  if (at == std::string::npos) return "";
  at += 1;
  return text.substr(at, text.find('\n', at) - at);
}

// An item marked deleted and uploaded again with the same NarHash but other References and
// Deriver is served as uploaded the second time. The server signs (no stored Sigs either
// time), so an entry of the signed-narinfo cache keyed on NarHash, URL and Sigs alone served
// the first text: references that were then deleted, under a valid signature.
TEST(ServerTest, ASignedNarInfoIsNeverServedFromAnOlderUpload) {
  test::TempDir dir;
  std::string public_key;
  auto served =
      test::ServedStore::signing(dir.path(), "/nix/store", "server-test-1", kToken, public_key);
  auto first_dep = makeItem("first-dep", "first-dep");
  auto second_dep = makeItem("second-dep", "second-dep");
  auto top = makeItem("top", "top", {first_dep.info.path});
  top.info.deriver = testing::pathFor("top.drv");
  for (const auto* item : {&first_dep, &second_dep, &top}) upload(*served, dir, *item);

  const std::string top_url = served->url("/" + top.info.path.hashPart() + ".narinfo");
  Http before = curl(top_url);
  ASSERT_EQ(before.status, 200) << before.body;
  EXPECT_EQ(line(before.body, "References"), "References: " + first_dep.info.path.baseName());
  EXPECT_NE(line(before.body, "Sig"), "") << before.body;

  auto mark_deleted = [&](const testing::TestItem& item) {
    Http h = curl(served->url("/api/mark-deleted"),
                  {"-X", "POST", "-H", "Content-Type: application/json", "--data",
                   R"({"paths": [")" + item.info.fullPath() + R"("], "reason": "test"})"});
    ASSERT_EQ(h.status, 200) << h.body;
  };
  mark_deleted(top);
  EXPECT_EQ(curl(top_url).status, 404);
  auto again = top;  // same nar, same NarHash: another closure and deriver
  again.info.references = {second_dep.info.path};
  again.info.deriver = testing::pathFor("top-again.drv");
  upload(*served, dir, again);
  mark_deleted(first_dep);

  Http after = curl(top_url);
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(line(after.body, "References"), "References: " + second_dep.info.path.baseName())
      << after.body;
  EXPECT_EQ(line(after.body, "Deriver"), "Deriver: " + again.info.deriver->baseName());
  EXPECT_NE(line(after.body, "Sig"), "") << after.body;
  EXPECT_NE(line(after.body, "Sig"), line(before.body, "Sig"));  // it signs another fingerprint
  // Every reference served is served.
  EXPECT_EQ(curl(served->url("/" + second_dep.info.path.hashPart() + ".narinfo")).status, 200);
  served->stop(SIGTERM);
}

// A process killed while it reads the store (kill -9, or Ctrl-C of a CLI command) leaves its
// LMDB reader slot behind; the snapshot of that slot pins the pages it saw, so every later
// write takes new pages and the data file grows for as long as the slot stays. LMDB frees such
// slots when a process opens the database, which a running server never does again: the
// server frees them itself every 10 s.
TEST(ServerTest, TheReaderSlotOfAProcessKilledWhileReadingIsFreed) {
  test::TempDir dir;
  {
    auto store = initStore(dir / "s");
    ASSERT_TRUE(store);
    ASSERT_TRUE(addItem(*store, makeItem("read", "read")));
  }  // closed: the reader below must open the database itself
  test::ServedStore served(dir / "s");

  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t reader = ::fork();
  ASSERT_GE(reader, 0);
  if (reader == 0) {  // the child: reads the store and stays in its read transaction
    ::close(ready[0]);
    StoreOptions options;
    options.root = dir / "s";
    auto store = Store::open(options);
    if (!store) ::_exit(1);
    (void)(*store)->forEachItem([&](const StoredItem&) {
      const char byte = 'r';
      if (::write(ready[1], &byte, 1) != 1) ::_exit(1);
      for (;;) ::pause();
      return false;
    });
    ::_exit(1);
  }
  ::close(ready[1]);
  char byte = 0;
  const bool reading = ::read(ready[0], &byte, 1) == 1;
  ::close(ready[0]);
  ::kill(reader, SIGKILL);
  ::waitpid(reader, nullptr, 0);
  ASSERT_TRUE(reading) << "the reader did not start";

  const std::string cleared = "narcache_store_stale_readers_cleared_total 1\n";
  std::string metrics;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    metrics = test::curlRequest(served.url("/metrics")).body;
    if (metrics.find(cleared) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_NE(metrics.find(cleared), std::string::npos) << metrics;
  EXPECT_NE(served.log().find("freed 1 database reader slot(s) of processes that died"),
            std::string::npos)
      << served.log();
  EXPECT_EQ(served.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace narcache::narstore
