// The agent's local store marks (agent/src/local_store.h): a refused mark() leaves nothing that
// condemns a valid path, a dead build's leftover goes once, a live build's output is left alone,
// and canonicalise() makes a tree read-only with mtime 1.
#include "local_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <optional>

#include "support/support.h"

namespace narcache::agent {
namespace {

namespace fs = std::filesystem;

TEST(LocalStoreTest, ARefusedMarkLeavesNothingThatCondemnsAValidPath) {
  test::TempDir dir;
  const fs::path store = dir / "store";
  fs::create_directories(store);
  test::writeFile(store / "a-valid", "valid");
  auto held = PendingOutputs::mark(store, {"b-building"});  // another build makes b
  ASSERT_TRUE(held) << held.error().message();
  auto refused = PendingOutputs::mark(store, {"a-valid", "b-building"});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(refused.error().message().find("'b-building' is being built by another build"),
            std::string::npos)
      << refused.error().message();
  auto a = localState(store, "a-valid");
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(*a, LocalState::kValid);
  EXPECT_TRUE(fs::exists(store / "a-valid"));
  auto b = localState(store, "b-building");
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, LocalState::kBeingBuilt);
}

TEST(LocalStoreTest, ADeadBuildsLeftoverGoesAndALiveOnesStays) {
  test::TempDir dir;
  const fs::path store = dir / "store";
  fs::create_directories(store);
  // A build process marks its output, writes half of it and dies without clearing anything.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto marked = PendingOutputs::mark(store, {"c-half"});
    if (!marked) ::_exit(1);
    fs::create_directories(store / "c-half" / "sub");
    ::chmod((store / "c-half" / "sub").c_str(), 0555);
    ::_exit(0);  // no destructor: the mark stays, unlocked
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_TRUE(fs::exists(store / "c-half"));
  auto c = localState(store, "c-half");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(*c, LocalState::kAbsent);
  EXPECT_FALSE(fs::exists(store / "c-half"));
  EXPECT_FALSE(fs::exists(store / ".narcache-pending" / "c-half"));

  // A live build's output in the making is neither valid nor removed.
  auto marked = PendingOutputs::mark(store, {"d-live"});
  ASSERT_TRUE(marked);
  std::optional<PendingOutputs> live(std::move(*marked));
  test::writeFile(store / "d-live", "half");
  auto d = localState(store, "d-live");
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, LocalState::kBeingBuilt);
  EXPECT_TRUE(fs::exists(store / "d-live"));
  live.reset();  // cleared: valid from now on
  d = localState(store, "d-live");
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, LocalState::kValid);
}

TEST(LocalStoreTest, CanonicaliseMakesATreeReadOnlyWithMtimeOne) {
  test::TempDir dir;
  const fs::path out = dir / "out";
  fs::create_directories(out / "d");
  test::writeFile(out / "d" / "f", "x");
  test::writeFile(out / "run", "#!/bin/sh\n");
  ::chmod((out / "run").c_str(), 0755);
  fs::create_symlink("d/f", out / "link");
  ASSERT_TRUE(canonicalise(out));
  auto st = [&](const fs::path& p) {
    struct stat s {};
    EXPECT_EQ(::lstat(p.c_str(), &s), 0) << p;
    return s;
  };
  EXPECT_EQ(st(out).st_mode & 07777, 0555u);
  EXPECT_EQ(st(out / "d").st_mode & 07777, 0555u);
  EXPECT_EQ(st(out / "d" / "f").st_mode & 07777, 0444u);
  EXPECT_EQ(st(out / "run").st_mode & 07777, 0555u);
  for (const auto& p : {out, out / "d", out / "d" / "f", out / "run", out / "link"}) {
    EXPECT_EQ(st(p).st_mtime, 1) << p;
  }
  removeTree(out);  // read-only directories and all
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace narcache::agent
