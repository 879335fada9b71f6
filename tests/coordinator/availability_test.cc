// Both Availability implementations against the real thing: the local Store, and a real
// `narcache serve` child process asked over HTTP (POST /api/available with the upload token).

#include "narcache/coordinator/availability.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "narcache/coordinator/coordinator.h"
#include "narstore/helpers.h"
#include "support/served_store.h"
#include "support/support.h"

namespace narcache::coordinator {
namespace {

using narstore::ItemState;
using ::testing::HasSubstr;

std::vector<ItemState> statesOf(const std::vector<narstore::ItemStatus>& statuses) {
  std::vector<ItemState> states;
  for (const auto& s : statuses) states.push_back(s.state);
  return states;
}

TEST(AvailabilityTest, LocalAndRemoteAgreeOnAvailableDeletedIncompleteMissing) {
  test::TempDir dir;
  test::writeFile(dir / "token", "upload-secret\n");
  test::ServedStore served(dir / "store", {"--upload-token-file", (dir / "token").string()});
  narstore::StoreOptions so;
  so.root = dir / "store";
  auto store = narstore::Store::open(so);
  ASSERT_TRUE(store.has_value()) << store.error().message();
  auto base = narstore::testing::makeItem("base", "base");
  auto top = narstore::testing::makeItem("top", "top", {base.info.path});
  ASSERT_TRUE(narstore::testing::addItem(**store, base).has_value());
  ASSERT_TRUE(narstore::testing::addItem(**store, top).has_value());
  auto gone = narstore::testing::makeItem("gone", "gone");
  ASSERT_TRUE(narstore::testing::addItem(**store, gone).has_value());
  ASSERT_TRUE((*store)->markDeleted(gone.info.path, {0, "test", "test"}).has_value());
  std::vector<std::string> paths = {top.info.path.fullPath("/nix/store"),
                                    gone.info.path.fullPath("/nix/store"),
                                    narstore::testing::pathFor("never").fullPath("/nix/store")};
  std::vector<ItemState> expected = {ItemState::kAvailable, ItemState::kDeleted,
                                     ItemState::kMissing};

  auto local = localAvailability(**store);
  auto l = local->check(paths);
  ASSERT_TRUE(l.has_value()) << l.error().message();
  EXPECT_EQ(statesOf(*l), expected);

  auto remote_or = remoteAvailability({served.url() + "/", "upload-secret", 5});
  ASSERT_TRUE(remote_or.has_value()) << remote_or.error().message();
  auto& remote = *remote_or;
  auto r = remote->check(paths);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(statesOf(*r), expected);
  // The deleted one's tombstone comes along, both ways (the coordinator compares its time with
  // the producer's last success).
  for (const auto* answer : {&*l, &*r}) {
    ASSERT_TRUE((*answer)[1].tombstone);
    EXPECT_EQ((*answer)[1].tombstone->when, (*l)[1].tombstone->when);
    EXPECT_GT((*answer)[1].tombstone->when, 0);
  }

  // top's closure loses base: incomplete, both ways.
  ASSERT_TRUE((*store)->markDeleted(base.info.path, {0, "test", "test"}).has_value());
  EXPECT_EQ(local->check({paths[0]})->at(0).state, ItemState::kIncomplete);
  EXPECT_EQ(remote->check({paths[0]})->at(0).state, ItemState::kIncomplete);

  auto denied = (*remoteAvailability({served.url(), "wrong", 5}))->check(paths);
  ASSERT_FALSE(denied.has_value());
  EXPECT_EQ(denied.error().code(), ErrorCode::kUnavailable);
  EXPECT_THAT(denied.error().message(), HasSubstr("HTTP 401"));

  // A path of another store dir is refused alike (InvalidArgument: the path is at fault).
  const std::string gnu = "/gnu/store/" + std::string(32, 'a') + "-x";
  auto bad_path = local->check({gnu});
  ASSERT_FALSE(bad_path.has_value());
  EXPECT_EQ(bad_path.error().code(), ErrorCode::kInvalidArgument);
  auto bad_remote = remote->check({paths[0], gnu});
  ASSERT_FALSE(bad_remote.has_value());
  EXPECT_EQ(bad_remote.error().code(), ErrorCode::kInvalidArgument) << bad_remote.error().message();
  EXPECT_THAT(bad_remote.error().message(), HasSubstr("/gnu/store"));
}

// A build with many inputs: more paths than a query string can carry (the server's URL limit is
// 8 KiB), with long names, in more than one batch.
TEST(AvailabilityTest, ManyLongPathsAreAskedInOneGo) {
  test::TempDir dir;
  test::writeFile(dir / "token", "upload-secret\n");
  test::ServedStore served(dir / "store", {"--upload-token-file", (dir / "token").string()});
  auto item = narstore::testing::makeItem("here", "here");
  {
    narstore::StoreOptions so;
    so.root = dir / "store";
    auto store = narstore::Store::open(so);
    ASSERT_TRUE(store.has_value()) << store.error().message();
    ASSERT_TRUE(narstore::testing::addItem(**store, item).has_value());
  }
  std::vector<std::string> paths;
  std::vector<ItemState> expected;
  for (int i = 0; i < 2500; ++i) {
    auto name = "input-" + std::to_string(i) + "-" + std::string(150, 'x');
    paths.push_back(narstore::testing::pathFor(name).fullPath("/nix/store"));
    expected.push_back(ItemState::kMissing);
  }
  paths[1234] = item.info.path.fullPath("/nix/store");
  expected[1234] = ItemState::kAvailable;
  auto remote = remoteAvailability({served.url(), "upload-secret", 5});
  ASSERT_TRUE(remote.has_value()) << remote.error().message();
  auto r = (*remote)->check(paths);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(statesOf(*r), expected);
}

TEST(AvailabilityTest, UnreachableCacheIsUnavailable) {
  auto remote = remoteAvailability({"http://127.0.0.1:1", "", 2});
  ASSERT_TRUE(remote.has_value());
  auto r = (*remote)->check({narstore::testing::pathFor("x").fullPath("/nix/store")});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable);
}

TEST(AvailabilityTest, MalformedCacheUrlIsRefused) {
  for (const char* url : {"127.0.0.1:8080", "ftp://cache", "http://", "http:///x"}) {
    auto remote = remoteAvailability({url, "", 2});
    ASSERT_FALSE(remote.has_value()) << url;
    EXPECT_EQ(remote.error().code(), ErrorCode::kInvalidArgument) << url;
    EXPECT_THAT(remote.error().message(), HasSubstr("cache URL")) << url;
  }
}

}  // namespace
}  // namespace narcache::coordinator
