// The agent's local store marks (agent/src/local_store.h): a refused mark() leaves nothing that
// condemns a valid path, a dead build's leftover goes once, a live build's output is left alone,
// canonicalise() makes a tree read-only with mtime 1, and a dead process's scratch directory is
// swept while a live or kept one stays.
#include "local_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

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

// A build process marks its output, writes half of it and dies without clearing anything.
void markWriteHalfAndDie(const fs::path& store, const std::string& base) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto marked = PendingOutputs::mark(store, {base});
    if (!marked) ::_exit(1);
    fs::create_directories(store / base / "sub");
    ::chmod((store / base / "sub").c_str(), 0555);
    ::_exit(0);  // no destructor: the mark stays, unlocked
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(LocalStoreTest, ADeadBuildsLeftoverGoesAndALiveOnesStays) {
  test::TempDir dir;
  const fs::path store = dir / "store";
  fs::create_directories(store);
  markWriteHalfAndDie(store, "c-half");
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

  // Whoever marks a dead build's path next takes its mark over and its leftover goes: what is
  // at a marked path is then either valid or the marker's own.
  markWriteHalfAndDie(store, "e-half");
  ASSERT_TRUE(fs::exists(store / "e-half" / "sub"));
  auto taken = PendingOutputs::mark(store, {"e-half"});
  ASSERT_TRUE(taken) << taken.error().message();
  EXPECT_FALSE(fs::exists(store / "e-half"));
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

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(LocalStoreTest, AScratchDirGoesWithItsOwnerAndOnlyADeadOwnersIsSwept) {
  test::TempDir dir;
  // A process that makes a scratch dir, fills it (read-only in part) and dies without a
  // destructor; its path comes back through a pipe.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto made = ScratchDir::create(dir.path(), "narcache-build-x-");
    if (!made) ::_exit(1);
    fs::create_directories(made->path() / "build" / "sub");
    ::chmod((made->path() / "build").c_str(), 0555);
    const std::string path = made->path().string();
    if (::write(fds[1], path.data(), path.size()) != static_cast<ssize_t>(path.size())) ::_exit(2);
    ::_exit(0);
  }
  ::close(fds[1]);
  char buf[4096];
  ssize_t n = ::read(fds[0], buf, sizeof buf);
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_GT(n, 0);
  const fs::path dead(std::string(buf, static_cast<std::size_t>(n)));
  ASSERT_TRUE(fs::is_directory(dead / "build" / "sub"));

  // A live one, one kept, and another prefix's, beside it.
  std::optional<ScratchDir> live;
  {
    auto made = ScratchDir::create(dir.path(), "narcache-build-y-");
    ASSERT_TRUE(made) << made.error().message();
    live.emplace(std::move(*made));
  }
  EXPECT_TRUE(live->path().filename().string().starts_with("narcache-build-y-"));
  EXPECT_TRUE(fs::is_directory(live->path()));
  EXPECT_EQ((fs::status(live->path()).permissions() & fs::perms::all), fs::perms::owner_all);
  fs::path kept;
  {
    auto k = ScratchDir::create(dir.path(), "narcache-build-z-");
    ASSERT_TRUE(k);
    kept = k->path();
    k->keep();
  }
  EXPECT_TRUE(fs::is_directory(kept));
  std::optional<ScratchDir> reserved;
  {
    auto made = ScratchDir::reserve(dir.path(), ".narcache-sub-");
    ASSERT_TRUE(made) << made.error().message();
    reserved.emplace(std::move(*made));
  }
  EXPECT_FALSE(fs::exists(reserved->path()));  // the caller makes it
  test::writeFile(reserved->path(), "being restored");
  ASSERT_EQ(entries(dir.path()).size(), 7u);  // 4 entries, the owner files of all but the kept

  EXPECT_EQ(removeAbandonedDirs(dir.path(), {"narcache-build-", ".narcache-sub-"}), 1u);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_FALSE(fs::exists(dead.string() + ".owner"));
  EXPECT_TRUE(fs::is_directory(live->path()));
  EXPECT_TRUE(fs::is_directory(kept));
  EXPECT_TRUE(fs::exists(reserved->path()));
  EXPECT_EQ(removeAbandonedDirs(dir.path(), {"narcache-build-", ".narcache-sub-"}), 0u);

  const fs::path live_path = live->path();
  live.reset();  // the destructor removes the directory and its owner file
  reserved.reset();
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{kept.filename().string()});
  EXPECT_FALSE(fs::exists(live_path));
}

TEST(LocalStoreTest, ConcurrentBuildsGetDistinctBuildUsers) {
  test::TempDir dir;
  auto a = BuildUser::acquire(dir.path(), 30005, 30006);
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->uid(), 30005u);
  std::optional<BuildUser> b;
  {
    auto got = BuildUser::acquire(dir.path(), 30005, 30006);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->uid(), 30006u);
    b.emplace(std::move(*got));
  }
  auto none = BuildUser::acquire(dir.path(), 30005, 30006);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(none.error().message().find("all build users (uids 30005-30006) are busy"),
            std::string::npos);
  b.reset();  // released: free again
  auto again = BuildUser::acquire(dir.path(), 30005, 30006);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->uid(), 30006u);
}

}  // namespace
}  // namespace narcache::agent
