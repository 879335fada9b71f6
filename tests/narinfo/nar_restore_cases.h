#pragma once
// NARs built by hand, and the contract of a NAR restorer as a parameterized suite: every
// restorer (narinfo's restoreNar, narstore's restoreNarParallel with several worker counts)
// must pass the same round trips, hostile NARs, bad destinations and error cases, each with
// its exact error and nothing written outside the destination.
//
// Include it in one test file per executable and instantiate the suite there:
//   INSTANTIATE_TEST_SUITE_P(Seq, RestoreContract, ::testing::Values(RestoreImpl{"seq", fn}),
//                            restoreImplName);

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "narcache/narinfo/nar.h"
#include "support/support.h"

namespace narcache::testnar {

namespace fs = std::filesystem;

// ---- Building NARs by hand ----

inline std::string u64(std::uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}

inline std::string pad(std::size_t len) {
  return std::string((8 - len % 8) % 8, '\0');
}

// One NAR string: length, bytes, zero padding.
inline std::string str(std::string_view s) {
  return u64(s.size()) + std::string(s) + pad(s.size());
}

inline std::string strs(std::initializer_list<std::string_view> list) {
  std::string out;
  for (auto s : list) out += str(s);
  return out;
}

inline const std::string kMagic = str("nix-archive-1");

inline std::string regular(std::string_view contents, bool executable = false) {
  std::string out = strs({"(", "type", "regular"});
  if (executable) out += strs({"executable", ""});
  return out + str("contents") + str(contents) + str(")");
}

inline std::string symlink(std::string_view target) {
  return strs({"(", "type", "symlink", "target"}) + str(target) + str(")");
}

// Entries are written in the order given, sorted or not.
inline std::string directory(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out = strs({"(", "type", "directory"});
  for (const auto& [name, node] : entries) {
    out += strs({"entry", "(", "name"}) + str(name) + str("node") + node + str(")");
  }
  return out + str(")");
}

inline std::string nar(const std::string& node) {
  return kMagic + node;
}

// ---- Helpers ----

// Hands out at most `step` bytes per read, to exercise every buffer boundary.
class TrickleSource final : public Source {
 public:
  TrickleSource(std::string_view data, std::size_t step) : data_(data), step_(step) {}
  Result<std::size_t> read(MutableBytes out) override {
    std::size_t n = std::min({out.size(), step_, data_.size() - pos_});
    std::memcpy(out.data(), data_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  std::string_view data_;
  std::size_t step_;
  std::size_t pos_ = 0;
};

inline std::string dumpToString(const fs::path& path) {
  StringSink sink;
  auto st = dumpPath(path, sink);
  EXPECT_TRUE(st.has_value()) << st.error().message();
  return sink.text;
}

// What the parser alone says about `data` (the error every restorer must pass on unchanged).
inline std::string parseError(std::string_view data) {
  MemorySource source(data);
  auto r = validateNar(source);
  return r ? "" : r.error().message();
}

inline void makeFile(const fs::path& path, const std::string& contents, bool executable = false) {
  test::writeFile(path, contents);
  fs::permissions(path, executable ? fs::perms(0755) : fs::perms(0644));
}

inline mode_t modeOf(const fs::path& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// All paths below `root`, relative, sorted.
inline std::vector<std::string> listTree(const fs::path& root) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    out.push_back(e.path().lexically_relative(root).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A sandbox with `dest` to restore into and `outside`, a sibling that must stay untouched.
struct Sandbox {
  test::TempDir dir;
  fs::path dest = dir / "dest";
  fs::path outside = dir / "outside";
  Sandbox() { fs::create_directories(outside); }
  // Everything in the sandbox except the destination's own tree.
  std::vector<std::string> outsideView() const {
    std::vector<std::string> out;
    for (const auto& p : listTree(dir.path())) {
      if (p != "dest" && p.rfind("dest/", 0) != 0) out.push_back(p);
    }
    return out;
  }
};

// A generated tree: `dirs` directories of `files` files (sizes 0 to ~20 KB, every 7th
// executable), a symlink per directory, empty files and directories, and files of 1 MiB - 1,
// 1 MiB, 1 MiB + 1 and 3 MiB + 5 bytes (the parallel restorer's small/streamed boundary).
inline void makeBigTree(const fs::path& root, int dirs, int files) {
  fs::create_directories(root / "empty-dir" / "nested-empty");
  makeFile(root / "empty-file", "");
  std::uint32_t seed = 12345;
  auto next = [&] { return seed = seed * 1103515245u + 12345u; };
  for (int d = 0; d < dirs; ++d) {
    fs::path dir = root / ("d" + std::to_string(d));
    fs::create_directories(dir);
    for (int f = 0; f < files; ++f) {
      std::string data(next() % 20000, '\0');
      for (auto& c : data) c = static_cast<char>(next() >> 24);
      makeFile(dir / ("f" + std::to_string(f)), data, f % 7 == 0);
    }
    fs::create_symlink("f0", dir / "link");
    fs::create_symlink("/abs/" + std::to_string(d), dir / "abs");
  }
  for (std::size_t size : {(std::size_t{1} << 20) - 1, std::size_t{1} << 20,
                           (std::size_t{1} << 20) + 1, (std::size_t{3} << 20) + 5}) {
    std::string data(size, '\0');
    for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 7919 + size) >> 3);
    makeFile(root / ("big" + std::to_string(size)), data, size % 2 == 1);
  }
}

// ---- The contract ----

struct RestoreImpl {
  std::string name;
  std::function<Status(Source&, const fs::path&)> restore;
};

// Names the parameter in gtest's output (instead of a byte dump).
inline void PrintTo(const RestoreImpl& impl, std::ostream* os) {
  *os << impl.name;
}

inline std::string restoreImplName(const ::testing::TestParamInfo<RestoreImpl>& info) {
  return info.param.name;
}

class RestoreContract : public ::testing::TestWithParam<RestoreImpl> {
 protected:
  Status restore(Source& source, const fs::path& dest) { return GetParam().restore(source, dest); }
  Status restoreString(std::string_view data, const fs::path& dest) {
    MemorySource source(data);
    return restore(source, dest);
  }
};

TEST_P(RestoreContract, TreeSurvivesDumpRestoreDump) {
  test::TempDir dir;
  fs::path root = dir / "root";
  fs::create_directories(root / "a" / "b" / "c");
  fs::create_directories(root / "empty");
  makeFile(root / "a" / "b" / "c" / "deep", "deep");
  makeFile(root / "run", "#!/bin/sh\n", true);
  makeFile(root / "empty-file", "");
  std::string big(3 * 1024 * 1024 + 5, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7919) >> 3);
  makeFile(root / "big", big);
  fs::create_symlink("/absolute/target", root / "abs");
  fs::create_symlink("a/b", root / "rel");
  fs::create_symlink("dangling", root / "dangle");

  std::string first = dumpToString(root);
  auto st = restoreString(first, dir / "copy");
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(dumpToString(dir / "copy"), first);
  EXPECT_EQ(modeOf(dir / "copy"), 0755u);
  EXPECT_EQ(modeOf(dir / "copy" / "run"), 0755u);
  EXPECT_EQ(modeOf(dir / "copy" / "big"), 0644u);
  EXPECT_EQ(modeOf(dir / "copy" / "empty"), 0755u);
  EXPECT_EQ(fs::read_symlink(dir / "copy" / "abs"), "/absolute/target");
  EXPECT_EQ(test::readFile(dir / "copy" / "big"), big);

  // The same through a source that trickles bytes in odd-sized pieces.
  for (std::size_t step : {1, 3, 7, 8, 13, 4096}) {
    if (step < 8) fs::remove(root / "big");  // byte by byte: keep it quick
    std::string data = dumpToString(root);
    TrickleSource source(data, step);
    fs::path dest = dir / ("trickle" + std::to_string(step));
    auto r = restore(source, dest);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(dumpToString(dest), data);
  }
}

TEST_P(RestoreContract, ManyFilesRoundTripByteForByte) {
  test::TempDir dir;
  makeBigTree(dir / "root", 12, 60);
  std::string data = dumpToString(dir / "root");
  auto st = restoreString(data, dir / "copy");
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(dumpToString(dir / "copy"), data);
  EXPECT_EQ(listTree(dir / "copy"), listTree(dir / "root"));
  EXPECT_EQ(modeOf(dir / "copy" / "d3" / "f7"), 0755u);
  EXPECT_EQ(modeOf(dir / "copy" / "d3" / "f8"), 0644u);
}

TEST_P(RestoreContract, RootFileAndRootSymlink) {
  test::TempDir dir;
  ASSERT_TRUE(restoreString(nar(regular("data", true)), dir / "f"));
  EXPECT_EQ(test::readFile(dir / "f"), "data");
  EXPECT_EQ(modeOf(dir / "f"), 0755u);
  ASSERT_TRUE(restoreString(nar(symlink("/etc/passwd")), dir / "l"));
  EXPECT_EQ(fs::read_symlink(dir / "l"), "/etc/passwd");
  std::string big(2 * 1024 * 1024, 'b');
  ASSERT_TRUE(restoreString(nar(regular(big)), dir / "big"));
  EXPECT_EQ(test::readFile(dir / "big"), big);
}

TEST_P(RestoreContract, ModesIgnoreUmask) {
  test::TempDir dir;
  mode_t old = ::umask(077);
  auto st =
      restoreString(nar(directory({{"f", regular("x")}, {"x", regular("y", true)}})), dir / "t");
  ::umask(old);
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(modeOf(dir / "t"), 0755u);
  EXPECT_EQ(modeOf(dir / "t" / "f"), 0644u);
  EXPECT_EQ(modeOf(dir / "t" / "x"), 0755u);
}

TEST_P(RestoreContract, HostileNarsWriteNothingOutside) {
  const std::string evil_file = regular("pwned");
  const std::string ok = regular("ok");
  const std::string big_ok = regular(std::string(1536 * 1024, 'k'));
  struct Case {
    std::string name;
    std::string data;
    std::string message;  // the parser's, after "NAR offset N: "
  };
  const std::vector<Case> cases = {
      {"SlashInName", nar(directory({{"a", ok}, {"../outside/x", evil_file}})),
       "entry name \"../outside/x\" contains '/'"},
      {"SlashInFirstName", nar(directory({{"../outside/x", evil_file}})),
       "entry name \"../outside/x\" contains '/'"},
      {"DotDot", nar(directory({{"..", directory({{"outside", directory({{"x", evil_file}})}})}})),
       "invalid entry name \"..\""},
      {"Dot", nar(directory({{".", evil_file}})), "invalid entry name \".\""},
      {"AbsoluteName", nar(directory({{"/tmp/x", evil_file}})),
       "entry name \"/tmp/x\" contains '/'"},
      // A symlink to the outside, then the same name again as a directory with a file in it.
      {"SymlinkThenDirectory",
       nar(directory({{"a", symlink("../outside")}, {"a", directory({{"x", evil_file}})}})),
       "duplicate entry name \"a\""},
      {"SymlinkThenFile", nar(directory({{"a", symlink("../outside/x")}, {"a", evil_file}})),
       "duplicate entry name \"a\""},
      {"SymlinkThenBigFile",
       nar(directory({{"a", symlink("../outside/x")}, {"a", regular(std::string(3 << 20, 'p'))}})),
       "duplicate entry name \"a\""},
      {"DuplicateFiles", nar(directory({{"a", regular("one")}, {"a", evil_file}})),
       "duplicate entry name \"a\""},
      {"SymlinkThenPathThroughIt",
       nar(directory({{"a", symlink("../outside")}, {"a/x", evil_file}})),
       "entry name \"a/x\" contains '/'"},
      {"NulInName", nar(directory({{std::string("x\0/../../outside/x", 18), evil_file}})),
       "entry name \"x\\x00/../../outside/x\" contains '/'"},
      {"NulInNameOnly", nar(directory({{std::string("x\0y", 3), evil_file}})),
       "entry name \"x\\x00y\" contains a NUL byte"},
      {"TrailingGarbage", nar(directory({{"a", regular("ok")}})) + "junk",
       "trailing data after the end of the NAR"},
      {"Truncated", nar(directory({{"a", ok}, {"b", big_ok}})).substr(0, 1200000),
       "unexpected end of NAR"},
      {"BadPadding",
       [&] {
         std::string d = nar(directory({{"a", ok}, {"b", evil_file}}));
         d[d.find(u64(2) + "ok") + 8 + 2 + 5] = '\1';  // the padding after "ok"
         return d;
       }(),
       "non-zero padding"},
      {"BadPaddingAfterBigFile",
       [&] {
         std::string d = nar(directory({{"a", big_ok}, {"b", ok}}));
         std::string marker = str("b");
         auto at = d.find(strs({"entry", "(", "name"}) + marker);
         d[at - 1] = 'x';  // the padding of the ")" closing entry "a"
         return d;
       }(),
       "non-zero padding"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Sandbox box;
    auto before = box.outsideView();
    std::string expected = parseError(c.data);
    ASSERT_NE(expected, "") << "the parser accepts this case";
    ASSERT_GE(expected.size(), c.message.size());
    EXPECT_EQ(expected.substr(expected.size() - c.message.size()), c.message) << expected;
    auto st = restoreString(c.data, box.dest);
    ASSERT_FALSE(st) << "restore accepted a hostile NAR";
    EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(st.error().message(), expected);
    EXPECT_EQ(box.outsideView(), before);
    EXPECT_TRUE(fs::is_empty(box.outside));
  }
}

TEST_P(RestoreContract, SymlinksAreCreatedButNeverFollowed) {
  Sandbox box;
  // Valid NAR: links pointing outside, and sibling entries that sort after them.
  std::string data = nar(directory({
      {"a", symlink("../outside")},
      {"b", symlink("/")},
      {"c", directory({{"x", regular("inside")}})},
      {"d", symlink("../outside/big")},
      {"e", directory({{"big", regular(std::string(3 << 20, 'i'))}})},
  }));
  ASSERT_TRUE(restoreString(data, box.dest));
  EXPECT_EQ(fs::read_symlink(box.dest / "a"), "../outside");
  EXPECT_EQ(test::readFile(box.dest / "c" / "x"), "inside");
  EXPECT_EQ(fs::file_size(box.dest / "e" / "big"), std::uintmax_t{3} << 20);
  EXPECT_TRUE(fs::is_empty(box.outside));
}

TEST_P(RestoreContract, RefusesExistingDestination) {
  Sandbox box;
  std::string data = nar(directory({{"x", regular("pwned")}}));
  const std::string exists = "restore: '" + box.dest.string() + "' already exists";
  // An existing directory.
  fs::create_directories(box.dest);
  auto st = restoreString(data, box.dest);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(st.error().message(), exists);
  EXPECT_TRUE(fs::is_empty(box.dest));
  fs::remove(box.dest);
  // A symlink planted at the destination, to a directory and dangling.
  fs::create_directory_symlink(box.outside, box.dest);
  st = restoreString(data, box.dest);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), exists);
  fs::remove(box.dest);
  fs::create_symlink(box.outside / "new", box.dest);
  st = restoreString(nar(regular("pwned")), box.dest);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(st.error().message(), exists);
  EXPECT_TRUE(fs::is_empty(box.outside));
}

TEST_P(RestoreContract, BadDestinations) {
  test::TempDir dir;
  std::string data = nar(regular("x"));
  auto no_parent = restoreString(data, dir / "missing" / "dest");
  ASSERT_FALSE(no_parent);
  EXPECT_EQ(no_parent.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(no_parent.error().message(),
            "restore: cannot open '" + (dir / "missing").string() + "': No such file or directory");
  auto dotdot = restoreString(data, dir / "..");
  ASSERT_FALSE(dotdot);
  EXPECT_EQ(dotdot.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(dotdot.error().message(),
            "restore: '" + (dir / "..").string() + "' does not name a new directory entry");
  // A trailing slash names the same entry.
  ASSERT_TRUE(restoreString(nar(directory({})), (dir / "slash").string() + "/"));
  EXPECT_TRUE(fs::is_directory(dir / "slash"));
}

TEST_P(RestoreContract, ErrorLeavesPartialTreeInsideDest) {
  Sandbox box;
  std::string data = nar(directory({{"a", regular("ok")}, {"b", regular("truncated")}}));
  data.resize(data.size() - 40);
  auto st = restoreString(data, box.dest);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), parseError(data));
  EXPECT_EQ(test::readFile(box.dest / "a"), "ok");
  EXPECT_TRUE(fs::is_empty(box.outside));
}

}  // namespace narcache::testnar
