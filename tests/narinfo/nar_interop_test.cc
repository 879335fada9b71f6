// NAR interop with the real Nix client (Debian nix-bin 2.8): `nix-store --dump` must equal
// dumpPath byte for byte, each side must restore the other's NARs to the same tree, and
// narListing must equal the `.ls` file `nix copy ... ?write-nar-listing=true` writes.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "narcache/narinfo/nar.h"
#include "support/support.h"

namespace narcache {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

void makeFile(const fs::path& path, const std::string& contents, bool executable = false) {
  test::writeFile(path, contents);
  fs::permissions(path, executable ? fs::perms(0755) : fs::perms(0644));
}

// Deterministic bytes that do not compress to nothing.
std::string noise(std::size_t n, std::uint64_t seed) {
  std::string out(n, '\0');
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x);
  }
  return out;
}

// A tree exercising everything a NAR can hold, and names whose byte order differs from any
// locale's collation order.
void makeTree(const fs::path& root) {
  fs::create_directories(root / "empty-dir");
  makeFile(root / "empty-file", "");
  makeFile(root / "exec", "#!/bin/sh\necho hi\n", true);
  makeFile(root / "exec-empty", "", true);
  std::size_t sizes[] = {1, 7, 8, 9, 255, 4095, 4096, 65537, (1 << 20) + 3};
  fs::create_directories(root / "sizes");
  for (std::size_t n : sizes) makeFile(root / "sizes" / std::to_string(n), noise(n, n));
  // Owner's x bit only, other bits ignored.
  makeFile(root / "group-exec", "g");
  fs::permissions(root / "group-exec", fs::perms(0651));
  makeFile(root / "owner-exec-only", "o");
  fs::permissions(root / "owner-exec-only", fs::perms(0700));
  makeFile(root / "read-only", "r");
  fs::permissions(root / "read-only", fs::perms(0444));

  fs::create_symlink("exec", root / "rel-link");
  fs::create_symlink("../../exec", root / "sizes" / "up-link");
  fs::create_symlink("/nix/store/00000000000000000000000000000000-absent", root / "abs-link");
  fs::create_symlink("/", root / "root-link");
  fs::create_symlink("empty-dir", root / "dir-link");
  fs::create_symlink("does/not/exist", root / "dangling");

  fs::path deep = root / "deep";
  for (int i = 0; i < 40; ++i) deep /= "level" + std::to_string(i);
  fs::create_directories(deep);
  makeFile(deep / "bottom", "bottom", true);

  fs::path names = root / "names";
  fs::create_directories(names);
  for (const char* name : {"B",
                           "a",
                           "A",
                           "b",
                           "_under",
                           "-dash",
                           "Z",
                           "z",
                           "10",
                           "9",
                           "a.b",
                           "a-b",
                           "aB",
                           "ab",
                           "\xc3\xa4",
                           "\xc3\xa9t\xc3\xa9",
                           "\xe6\x97\xa5\xe6\x9c\xac",
                           "\xf0\x9f\x98\x80",
                           "\xff\xfe-not-utf8",
                           "~tilde",
                           " space",
                           "tab\tname",
                           "new\nline",
                           "quote\"d",
                           "back\\slash",
                           "\x01\x02\x1f",
                           "bell\x07",
                           "ff\x0c",
                           "del\x7f"}) {
    makeFile(names / name, name);
  }
  fs::create_directories(names / "\xc3\xa4-dir" / "sub");
  makeFile(names / "\xc3\xa4-dir" / "sub" / "x", "x", true);
  makeFile(names / std::string(255, 'L'), "long name");
}

std::string dumpToString(const fs::path& path) {
  StringSink sink;
  auto st = dumpPath(path, sink);
  EXPECT_TRUE(st.has_value()) << st.error().message();
  return sink.text;
}

std::string nixDump(const fs::path& path) {
  auto r = test::run({"nix-store", "--dump", path.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

void dumpToFile(const fs::path& path, const fs::path& out) {
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  FdSink sink(fd);
  auto st = dumpPath(path, sink);
  ::close(fd);
  ASSERT_TRUE(st) << st.error().message();
}

Status restoreFromFile(const fs::path& nar, const fs::path& dest) {
  int fd = ::open(nar.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(ErrorCode::kIoError, "open " + nar.string());
  FdSource source(fd);
  auto st = restoreNar(source, dest);
  ::close(fd);
  return st;
}

void nixRestore(const fs::path& nar, const fs::path& dest) {
  auto r = test::sh("nix-store --restore '" + dest.string() + "' < '" + nar.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

// Type, permission bits and symlink target of every path; with `diff -r` for contents this
// pins down a restored tree completely.
std::string describe(const fs::path& root) {
  auto r =
      test::sh("cd '" + root.string() + "' && find . -printf '%y %m %p -> %l\\n' | LC_ALL=C sort");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

void expectSameTree(const fs::path& a, const fs::path& b) {
  auto diff = test::run({"diff", "-r", "--no-dereference", a.string(), b.string()});
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
  EXPECT_EQ(describe(a), describe(b));
}

test::RunOptions toFile(const fs::path& out) {
  test::RunOptions options;
  options.stdout_file = out;
  return options;
}

class NarInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::haveNix()) GTEST_SKIP() << "nix-store not installed";
  }
};

TEST_F(NarInterop, DumpEqualsNixStoreDump) {
  TempDir dir;
  fs::path root = dir / "tree";
  makeTree(root);
  std::string ours = dumpToString(root);
  std::string theirs = nixDump(root);
  ASSERT_EQ(ours.size(), theirs.size());
  EXPECT_TRUE(ours == theirs) << "NARs differ";
  // Roots that are not directories.
  for (const char* p :
       {"exec", "empty-file", "read-only", "abs-link", "dangling", "empty-dir", "sizes"}) {
    SCOPED_TRACE(p);
    EXPECT_TRUE(dumpToString(root / p) == nixDump(root / p));
  }
  auto size = [&] {
    MemorySource source(ours);
    return validateNar(source);
  }();
  ASSERT_TRUE(size) << size.error().message();
  EXPECT_EQ(*size, ours.size());
}

TEST_F(NarInterop, RestoresAgreeBothWays) {
  TempDir dir;
  fs::path root = dir / "tree";
  makeTree(root);
  fs::path ours_nar = dir / "ours.nar", nix_nar = dir / "nix.nar";
  dumpToFile(root, ours_nar);
  ASSERT_EQ(test::run({"nix-store", "--dump", root.string()}, toFile(nix_nar)).exit_code, 0);
  // Nix restores our NAR; we restore our NAR and Nix's.
  nixRestore(ours_nar, dir / "by-nix");
  ASSERT_TRUE(restoreFromFile(ours_nar, dir / "by-us"));
  ASSERT_TRUE(restoreFromFile(nix_nar, dir / "by-us-from-nix"));
  expectSameTree(dir / "by-nix", dir / "by-us");
  expectSameTree(dir / "by-nix", dir / "by-us-from-nix");
  // Both restores dump back to the original NAR.
  EXPECT_TRUE(dumpToString(dir / "by-us") == test::readFile(ours_nar));
  EXPECT_TRUE(nixDump(dir / "by-us") == test::readFile(nix_nar));
}

// The .ls files Nix writes for a directory, a file and a symlink root.
TEST_F(NarInterop, ListingEqualsNixLs) {
  TempDir dir;
  makeTree(dir / "tree");
  makeFile(dir / "file", "just a file", true);
  fs::create_symlink("/somewhere/else", dir / "link");
  test::NixEnv nix;
  fs::path store = nix.newStore("store");
  fs::path cache = nix.dir() / "cache-out";
  for (const char* name : {"tree", "file", "link"}) {
    SCOPED_TRACE(name);
    auto add = nix.run({"nix-store", "--store", store.string(), "--add", (dir / name).string()});
    ASSERT_EQ(add.exit_code, 0) << add.err;
    std::string store_path = add.out.substr(0, add.out.find('\n'));
    ASSERT_EQ(store_path.rfind("/nix/store/", 0), 0u) << store_path;
    auto copy = nix.run({"nix", "copy", "--store", store.string(), "--to",
                         "file://" + cache.string() + "?compression=none&write-nar-listing=true",
                         store_path});
    ASSERT_EQ(copy.exit_code, 0) << copy.err;
    std::string hash_part = store_path.substr(11, 32);
    std::string expected = test::readFile(cache / (hash_part + ".ls"));

    std::string nar = dumpToString(dir / name);
    MemorySource source(nar);
    auto listing = narListing(source);
    ASSERT_TRUE(listing) << listing.error().message();
    EXPECT_EQ(*listing, expected);
    if (std::string(name) == "file") {
      // Cross-check a narOffset against the NAR itself.
      auto json = nlohmann::json::parse(*listing);
      auto offset = json["root"]["narOffset"].get<std::uint64_t>();
      EXPECT_EQ(nar.substr(offset, 11), "just a file");
    }
  }
}

// Several hundred MB: byte-identical dumps, identical restores, and timings for the record.
TEST_F(NarInterop, LargeTree) {
  TempDir dir;
  fs::path root = dir / "big";
  fs::create_directories(root / "small");
  {
    // 300 MiB: 1 MiB noise blocks, each stamped with its index; every 16th block is a hole.
    constexpr std::size_t kBlock = 1 << 20;
    std::string block = noise(kBlock, 42);
    int fd = ::open((root / "huge").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    ASSERT_GE(fd, 0);
    for (std::uint64_t i = 0; i < 300; ++i) {
      if (i % 16 == 5) continue;
      std::memcpy(block.data(), &i, sizeof i);
      ASSERT_EQ(::pwrite(fd, block.data(), kBlock, static_cast<off_t>(i * kBlock)),
                static_cast<ssize_t>(kBlock));
    }
    ASSERT_EQ(::ftruncate(fd, 300 * kBlock + 77), 0);
    ::close(fd);
  }
  for (int i = 0; i < 500; ++i) {
    makeFile(root / "small" / ("f" + std::to_string(i)), noise(100 + i * 37, i), i % 7 == 0);
  }

  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  fs::path ours_nar = dir / "ours.nar", nix_nar = dir / "nix.nar";
  auto t0 = Clock::now();
  dumpToFile(root, ours_nar);
  double ours_dump = seconds(t0);
  t0 = Clock::now();
  ASSERT_EQ(test::run({"nix-store", "--dump", root.string()}, toFile(nix_nar)).exit_code, 0);
  double nix_dump = seconds(t0);
  auto cmp = test::run({"cmp", ours_nar.string(), nix_nar.string()});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out << cmp.err;

  t0 = Clock::now();
  ASSERT_TRUE(restoreFromFile(ours_nar, dir / "by-us"));
  double ours_restore = seconds(t0);
  t0 = Clock::now();
  nixRestore(ours_nar, dir / "by-nix");
  double nix_restore = seconds(t0);
  expectSameTree(dir / "by-us", dir / "by-nix");

  double mb = static_cast<double>(fs::file_size(ours_nar)) / 1e6;
  std::cout << "NAR " << mb << " MB: dump " << ours_dump << " s (nix-store --dump " << nix_dump
            << " s), restore " << ours_restore << " s (nix-store --restore " << nix_restore
            << " s)\n";
}

}  // namespace
}  // namespace narcache
