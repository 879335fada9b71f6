// A disk that fills mid-upload: the store lives on a tiny tmpfs; an upload larger than the free
// space gets 507 with a log line, leaves no file behind, and the store stays consistent and
// keeps accepting uploads that fit. Needs root (mount); skipped otherwise.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <string>
#include <thread>

#include "support/served_store.h"
#include "support/support.h"

namespace narcache::test {
namespace {

namespace fs = std::filesystem;

class DiskFull : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(mount_point_);
    if (::mount("tmpfs", mount_point_.c_str(), "tmpfs", 0, "size=4m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << std::strerror(errno);
    }
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount2(mount_point_.c_str(), MNT_DETACH);
  }

  TempDir tmp_;
  fs::path mount_point_ = tmp_ / "small";
  bool mounted_ = false;
};

// PUTs `file` as /nar/<its sha256>.nar with the token; returns the HTTP status.
int putNar(const ServedStore& served, const fs::path& file) {
  auto hash = narcache({"hash", "file", file.string()});
  EXPECT_EQ(hash.exit_code, 0) << hash.err;
  std::string nix32 = hash.out.substr(7, 52);
  auto r = run({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "-X",
                "PUT", "-H", "Authorization: Bearer tok", "--data-binary", "@" + file.string(),
                served.url("/nar/" + nix32 + ".nar")});
  return std::atoi(r.out.c_str());
}

std::size_t entries(const fs::path& dir) {
  std::size_t n = 0;
  for (auto it = fs::directory_iterator(dir); it != fs::directory_iterator(); ++it) ++n;
  return n;
}

TEST_F(DiskFull, UploadThatDoesNotFitIs507AndLeavesNothing) {
  writeFile(tmp_ / "token", "tok\n");
  fs::path store = mount_point_ / "store";
  ServedStore served(store, {"--upload-token-file", (tmp_ / "token").string()});
  ASSERT_GT(served.port(), 0);

  ASSERT_EQ(sh("head -c 6000000 /dev/urandom > " + (tmp_ / "big").string()).exit_code, 0);
  EXPECT_EQ(putNar(served, tmp_ / "big"), 507);
  EXPECT_EQ(entries(store / "tmp"), 0u);
  EXPECT_EQ(entries(store / "nar"), 0u);
  // The server logs a response after sending it: give the line a moment to arrive.
  for (int i = 0; i < 100 && served.log().find("507") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(served.log().find("507"), std::string::npos) << served.log();

  // The space is back: an upload that fits is stored.
  ASSERT_EQ(sh("head -c 100000 /dev/urandom > " + (tmp_ / "fits").string()).exit_code, 0);
  int status = putNar(served, tmp_ / "fits");
  EXPECT_TRUE(status == 200 || status == 201 || status == 204) << status;
  EXPECT_EQ(entries(store / "nar"), 1u);

  served.stop(SIGTERM);
  auto verify = narcache({"verify", "--store", store.string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

// Uploads leave a reserve (1% of the file system here) so that the database can still commit,
// GC included: an upload that would eat into it is refused while the disk still has room.
TEST_F(DiskFull, AnUploadThatWouldEatTheReserveIs507WhileSpaceIsLeft) {
  writeFile(tmp_ / "token", "tok\n");
  fs::path store = mount_point_ / "store";
  ServedStore served(store, {"--upload-token-file", (tmp_ / "token").string()});
  ASSERT_GT(served.port(), 0);
  auto freeBytes = [&] {
    struct statvfs st {};
    EXPECT_EQ(::statvfs(mount_point_.c_str(), &st), 0);
    return std::uint64_t(st.f_bavail) * st.f_frsize;
  };
  const std::uint64_t fs_size = 4ULL << 20;  // the tmpfs
  const std::uint64_t kept = fs_size / 100;
  const std::uint64_t size = freeBytes() - kept / 2;  // fits the disk, not the reserve
  ASSERT_EQ(sh("head -c " + std::to_string(size) + " /dev/urandom > " + (tmp_ / "almost").string())
                .exit_code,
            0);
  EXPECT_EQ(putNar(served, tmp_ / "almost"), 507);
  EXPECT_GT(freeBytes(), kept / 2);  // refused before the disk filled up
  for (int i = 0;
       i < 100 && served.log().find("KiB kept for the database and GC") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(served.log().find("the store's file system is full"), std::string::npos)
      << served.log();
  EXPECT_EQ(entries(store / "tmp"), 0u);
  served.stop(SIGTERM);
}

}  // namespace
}  // namespace narcache::test
