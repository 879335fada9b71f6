// Unit tests of the NAR reader, writer, restore and listing: a table of malformed NARs built by
// hand (each with its exact error); restoreNar runs the restore contract of nar_restore_cases.h
// (round trips, hostile NARs that try to escape the destination, bad destinations), which
// narstore's parallel restorer runs too.

#include "narcache/narinfo/nar.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "nar_restore_cases.h"
#include "support/support.h"

namespace narcache {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using namespace testnar;  // NARs built by hand, TrickleSource, dumpToString, makeFile, ...

// ---- Helpers ----

// Logs every event as a line.
class RecordingVisitor final : public NarVisitor {
 public:
  Status directory(std::string_view path) override {
    log += "dir '" + std::string(path) + "'\n";
    return {};
  }
  Status directoryEnd(std::string_view path) override {
    log += "end '" + std::string(path) + "'\n";
    return {};
  }
  Status symlink(std::string_view path, std::string_view target) override {
    log += "link '" + std::string(path) + "' -> '" + std::string(target) + "'\n";
    return {};
  }
  Status fileBegin(std::string_view path, bool executable, std::uint64_t size,
                   std::uint64_t nar_offset) override {
    log += "file '" + std::string(path) + "'" + (executable ? " x" : "") + " size " +
           std::to_string(size) + " at " + std::to_string(nar_offset) + "\n";
    return {};
  }
  Status contents(Bytes chunk) override {
    data.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    return {};
  }
  Status fileEnd() override {
    log += "data '" + data + "'\n";
    data.clear();
    return {};
  }
  std::string log;
  std::string data;
};

Result<std::uint64_t> validate(std::string_view data) {
  MemorySource source(data);
  return validateNar(source);
}

// ---- Dumps ----

TEST(NarDump, SingleFileLayout) {
  TempDir dir;
  makeFile(dir / "f", "hello");
  EXPECT_EQ(dumpToString(dir / "f"), nar(regular("hello")));
  makeFile(dir / "x", "", true);
  EXPECT_EQ(dumpToString(dir / "x"), nar(regular("", true)));
  fs::create_symlink("/nix/store/target", dir / "l");
  EXPECT_EQ(dumpToString(dir / "l"), nar(symlink("/nix/store/target")));
}

TEST(NarDump, DirectorySortedByBytesAndExecBitOnly) {
  TempDir dir;
  fs::path root = dir / "root";
  fs::create_directories(root / "sub" / "empty");
  makeFile(root / "b", "bee");
  makeFile(root / "B", "big bee", true);
  makeFile(root / "\xc3\xa9", "e acute");
  makeFile(root / "a", "0123456789");
  fs::permissions(root / "a", fs::perms(0600));  // only the owner's x bit counts
  fs::create_symlink("../a", root / "sub" / "up");
  std::string expected = nar(directory({
      {"B", regular("big bee", true)},
      {"a", regular("0123456789")},
      {"b", regular("bee")},
      {"sub", directory({{"empty", directory({})}, {"up", symlink("../a")}})},
      {"\xc3\xa9", regular("e acute")},
  }));
  EXPECT_EQ(dumpToString(root), expected);
  auto size = validate(expected);
  ASSERT_TRUE(size) << size.error().message();
  EXPECT_EQ(*size, expected.size());
}

// Into a file or a pipe (an FdSink, bare or buffered), file contents of 16 KiB and more are
// moved by the kernel rather than read: the bytes must be the same as through a string.
TEST(NarDump, ContentsMovedByTheKernelGiveTheSameBytes) {
  TempDir dir;
  fs::path root = dir / "root";
  fs::create_directories(root / "sub");
  std::string big;
  for (int i = 0; big.size() < 300000; ++i) big += std::to_string(i) + ' ';
  makeFile(root / "big", big, true);
  makeFile(root / "at-threshold", std::string(16 << 10, 'a'));
  makeFile(root / "below-threshold", std::string((16 << 10) - 1, 'b'));
  makeFile(root / "sub" / "odd", big.substr(0, 100003));  // its padding follows a span
  makeFile(root / "sub" / "small", "small");
  const std::string expected = dumpToString(root);
  ASSERT_TRUE(validate(expected));

  Fd file(::memfd_create("nar", MFD_CLOEXEC));
  FdSink bare(file.get());
  ASSERT_TRUE(bare.takesSpans());
  ASSERT_TRUE(dumpPath(root, bare));
  Fd buffered_file(::memfd_create("nar", MFD_CLOEXEC));
  FdSink under(buffered_file.get());
  BufferedSink buffered(under);
  ASSERT_TRUE(dumpPath(root, buffered));
  ASSERT_TRUE(buffered.finish());
  for (int fd : {file.get(), buffered_file.get()}) {
    EXPECT_EQ(test::readFile("/proc/self/fd/" + std::to_string(fd)), expected);
  }

  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  Fd read_end(p[0]), write_end(p[1]);
  std::string piped;
  std::thread reader([&] {
    char buf[65536];
    for (ssize_t n; (n = ::read(read_end.get(), buf, sizeof buf)) > 0;) piped.append(buf, n);
  });
  FdSink into_pipe(write_end.get());
  auto st = dumpPath(root, into_pipe);
  write_end.reset();
  reader.join();
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(piped, expected);
}

TEST(NarDump, Errors) {
  TempDir dir;
  StringSink sink;
  auto missing = dumpPath(dir / "missing", sink);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);

  fs::create_directories(dir / "d");
  ASSERT_EQ(::mkfifo((dir / "d" / "fifo").c_str(), 0644), 0);
  auto fifo = dumpPath(dir / "d", sink);
  ASSERT_FALSE(fifo);
  EXPECT_EQ(fifo.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(fifo.error().message().find("fifo' has an unsupported file type"), std::string::npos)
      << fifo.error().message();
}

TEST(NarDump, DepthLimit) {
  TempDir dir;
  fs::path p = dir / "root";
  for (std::size_t i = 0; i < kMaxNarDepth; ++i) p /= "d";
  fs::create_directories(p);
  std::string ok = dumpToString(dir / "root");
  EXPECT_TRUE(validate(ok).has_value());
  fs::create_directories(p / "d");
  StringSink sink;
  auto st = dumpPath(dir / "root", sink);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
}

TEST(NarParse, EventsAndOffsets) {
  std::string data = nar(directory({
      {"a", regular("abc", true)},
      {"d", directory({{"e", regular("")}})},
      {"l", symlink("a")},
  }));
  for (std::size_t step : {1, 5, 1 << 20}) {
    TrickleSource source(data, step);
    RecordingVisitor v;
    auto size = parseNar(source, v);
    ASSERT_TRUE(size) << size.error().message();
    EXPECT_EQ(*size, data.size());
    // kMagic 24; "(" "type" "directory" 56; "entry" "(" "name" "a" "node" 80; "(" "type"
    // "regular" 48; "executable" "" 32; "contents" 16; size 8.
    EXPECT_EQ(v.log,
              "dir ''\n"
              "file 'a' x size 3 at 264\n"
              "data 'abc'\n"
              "dir 'd'\n"
              "file 'd/e' size 0 at 592\n"
              "data ''\n"
              "end 'd'\n"
              "link 'l' -> 'a'\n"
              "end ''\n");
    EXPECT_EQ(data.substr(264, 3), "abc");
  }
}

TEST(NarParse, VisitorErrorStopsParse) {
  class Refuse final : public NarVisitor {
   public:
    Status directory(std::string_view) override { return {}; }
    Status symlink(std::string_view, std::string_view) override {
      return fail(ErrorCode::kConflict, "no links here");
    }
    Status fileBegin(std::string_view, bool, std::uint64_t, std::uint64_t) override { return {}; }
    Status contents(Bytes) override { return {}; }
    Status fileEnd() override { return {}; }
  } visitor;
  std::string data = nar(directory({{"l", symlink("x")}}));
  MemorySource source(data);
  auto r = parseNar(source, visitor);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kConflict);
  EXPECT_EQ(r.error().message(), "no links here");
}

// ---- Malformed NARs ----

struct BadNar {
  std::string name;
  std::string data;
  std::uint64_t offset;  // where the error is reported
  std::string message;   // after "NAR offset N: "
};

std::vector<BadNar> badNars() {
  std::vector<BadNar> cases;
  auto add = [&](std::string name, std::string prefix, std::string rest, std::string message) {
    std::uint64_t offset = prefix.size();
    cases.push_back({std::move(name), prefix + rest, offset, std::move(message)});
  };
  const std::string file_head = kMagic + strs({"(", "type", "regular"});
  const std::string dir_head = kMagic + strs({"(", "type", "directory"});
  auto entry = [](std::string_view name) {
    return strs({"entry", "(", "name"}) + str(name) + str("node");
  };
  const std::string f = regular("x") + str(")");  // a file node closing its entry

  add("Empty", "", "", "unexpected end of NAR");
  add("WrongMagic", "", str("nix-archive-2") + regular("x"), "not a NAR (bad magic)");
  add("HugeMagic", "", u64(1ull << 40), "not a NAR (bad magic)");
  add("MagicPaddingNonZero", u64(13) + "nix-archive-1", std::string("\0\1\0", 3) + regular("x"),
      "non-zero padding");
  add("TruncatedAfterMagic", kMagic, "", "unexpected end of NAR");
  // An early end is reported where the data ends.
  cases.push_back(
      {"TruncatedInLength", kMagic + std::string("\1\0\0", 3), 27, "unexpected end of NAR"});
  add("NoOpenParen", kMagic, strs({"type", "regular"}), "expected \"(\", got \"type\"");
  add("TypeMisspelt", kMagic + str("("), strs({"Type", "regular"}),
      "expected \"type\", got \"Type\"");
  add("UnknownType", kMagic + strs({"(", "type"}), str("fifo") + str(")"),
      "unknown node type \"fifo\"");
  add("KeywordTooLong", kMagic + strs({"(", "type"}), u64(1000),
      "expected a keyword, got a 1000-byte string");
  add("ExecutableNonEmpty", file_head + str("executable"), str("1") + str("contents"),
      "\"executable\" marker has a non-empty value");
  add("ExecutableTwice", file_head + strs({"executable", ""}), strs({"executable", ""}),
      "expected \"contents\", got \"executable\"");
  add("RegularWithoutContents", file_head, str(")"),
      "expected \"executable\" or \"contents\", got \")\"");
  add("RegularWithTarget", file_head, strs({"target", "x"}),
      "expected \"executable\" or \"contents\", got \"target\"");
  add("ContentsTruncated", file_head + str("contents") + u64(10) + "12345", "",
      "unexpected end of NAR");
  add("ContentsHugeLength", file_head + str("contents") + u64(~0ull) + "abc", "",
      "unexpected end of NAR");
  add("ContentsPaddingNonZero", file_head + str("contents") + u64(3) + "abc",
      std::string("\0\0\0\0x", 5) + std::string(3, '\0') + str(")"), "non-zero padding");
  add("ContentsPaddingMissing", file_head + str("contents") + u64(3) + "abc", "",
      "unexpected end of NAR");
  add("ExtraFieldAfterContents", file_head + str("contents") + str("abc"), str("executable"),
      "expected \")\", got \"executable\"");
  add("TrailingData", nar(regular("x")), std::string(1, '\0'),
      "trailing data after the end of the NAR");
  add("TrailingNar", nar(regular("x")), nar(regular("y")),
      "trailing data after the end of the NAR");
  add("SymlinkEmptyTarget", kMagic + strs({"(", "type", "symlink", "target"}), str("") + str(")"),
      "empty symlink target");
  add("SymlinkTargetNul", kMagic + strs({"(", "type", "symlink", "target"}),
      str(std::string("a\0b", 3)) + str(")"), "symlink target contains a NUL byte");
  add("SymlinkTargetTooLong", kMagic + strs({"(", "type", "symlink", "target"}),
      str(std::string(4096, 'a')) + str(")"),
      "symlink target is 4096 bytes long (at most 4095 allowed)");
  add("SymlinkWithoutTarget", kMagic + strs({"(", "type", "symlink"}), str(")"),
      "expected \"target\", got \")\"");
  add("SymlinkExtraField", kMagic + strs({"(", "type", "symlink", "target", "x"}), str("target"),
      "expected \")\", got \"target\"");
  add("DirectoryBadKeyword", dir_head, str("name"), "expected \"entry\" or \")\", got \"name\"");
  add("DirectoryTruncated", dir_head, "", "unexpected end of NAR");
  add("EntryWithoutParen", dir_head + str("entry"), str("name"), "expected \"(\", got \"name\"");
  add("EntryWithoutName", dir_head + strs({"entry", "("}), str("node"),
      "expected \"name\", got \"node\"");
  add("EntryWithoutNode", dir_head + strs({"entry", "(", "name", "a"}), regular("x"),
      "expected \"node\", got \"(\"");
  add("EntryNotClosed", dir_head + entry("a") + regular("x"), str("entry"),
      "expected \")\", got \"entry\"");
  add("NameEmpty", dir_head + strs({"entry", "(", "name"}), str("") + str("node") + f,
      "empty entry name");
  add("NameDot", dir_head + strs({"entry", "(", "name"}), str(".") + str("node") + f,
      "invalid entry name \".\"");
  add("NameDotDot", dir_head + strs({"entry", "(", "name"}), str("..") + str("node") + f,
      "invalid entry name \"..\"");
  add("NameSlash", dir_head + strs({"entry", "(", "name"}), str("../etc") + str("node") + f,
      "entry name \"../etc\" contains '/'");
  add("NameNul", dir_head + strs({"entry", "(", "name"}),
      str(std::string("a\0b", 3)) + str("node") + f, "entry name \"a\\x00b\" contains a NUL byte");
  add("NameTooLong", dir_head + strs({"entry", "(", "name"}),
      str(std::string(256, 'n')) + str("node") + f,
      "entry name is 256 bytes long (at most 255 allowed)");
  add("NameHugeLength", dir_head + strs({"entry", "(", "name"}), u64(~0ull),
      "entry name is 18446744073709551615 bytes long (at most 255 allowed)");
  add("NamesDuplicate", dir_head + entry("a") + f + strs({"entry", "(", "name"}),
      str("a") + str("node") + f, "duplicate entry name \"a\"");
  add("NamesDescending", dir_head + entry("b") + f + strs({"entry", "(", "name"}),
      str("a") + str("node") + f, "entry names not in ascending order (\"a\" after \"b\")");
  // Byte order, not locale order: 'B' (0x42) sorts before 'a' (0x61).
  add("NamesByBytes", dir_head + entry("a") + f + strs({"entry", "(", "name"}),
      str("B") + str("node") + f, "entry names not in ascending order (\"B\" after \"a\")");
  // Bytes >= 0x80 sort after ASCII (unsigned comparison).
  add("NamesHighBytes", dir_head + entry("\xc3\xa9") + f + strs({"entry", "(", "name"}),
      str("z") + str("node") + f,
      "entry names not in ascending order (\"z\" after \"\\xc3\\xa9\")");
  add("NestedDirectoryNotClosed", dir_head + entry("d") + strs({"(", "type", "directory"}), "",
      "unexpected end of NAR");
  {
    // kMaxNarDepth + 1 nested entries; the last "entry" keyword is the error.
    std::string prefix = kMagic + strs({"(", "type", "directory"});
    for (std::size_t i = 0; i < kMaxNarDepth; ++i)
      prefix += entry("d") + strs({"(", "type", "directory"});
    add("TooDeep", prefix, entry("d") + regular("x"), "directories nested more than 256 deep");
  }
  return cases;
}

TEST(NarParse, MalformedTable) {
  for (const auto& c : badNars()) {
    SCOPED_TRACE(c.name);
    std::string expected = "NAR offset " + std::to_string(c.offset) + ": " + c.message;
    for (std::size_t step : {std::size_t{1}, std::size_t{1} << 20}) {
      TrickleSource source(c.data, step);
      auto r = validateNar(source);
      ASSERT_FALSE(r) << "accepted";
      EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
      EXPECT_EQ(r.error().message(), expected);
    }
    MemorySource listing_source(c.data);
    auto listing = narListing(listing_source);
    ASSERT_FALSE(listing);
    EXPECT_EQ(listing.error().message(), expected);
  }
}

TEST(NarParse, LimitsAreInclusive) {
  std::string deep = regular("x");
  for (std::size_t i = 0; i < kMaxNarDepth; ++i) deep = directory({{"d", deep}});
  auto r = validate(nar(deep));
  EXPECT_TRUE(r) << r.error().message();
  EXPECT_TRUE(validate(nar(symlink(std::string(kMaxNarTargetLength, 't')))));
  EXPECT_TRUE(validate(nar(directory({{std::string(kMaxNarNameLength, 'n'), regular("")}}))));
  EXPECT_TRUE(validate(nar(directory({}))));
}

TEST(NarParse, SourceErrorKeepsCode) {
  class Broken final : public Source {
   public:
    Result<std::size_t> read(MutableBytes) override {
      return fail(ErrorCode::kIoError, "read: disk on fire");
    }
  } source;
  auto r = validateNar(source);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kIoError);
  EXPECT_EQ(r.error().message(), "NAR offset 0: read: disk on fire");
}

// ---- Restore: the contract every restorer keeps (nar_restore_cases.h) ----

INSTANTIATE_TEST_SUITE_P(Sequential, RestoreContract,
                         ::testing::Values(RestoreImpl{"restoreNar", restoreNar}), restoreImplName);

// ---- Listing ----

TEST(NarListing, Format) {
  std::string data = nar(directory({
      {"bin", directory({{"run", regular("#!", true)}})},
      {"empty", directory({})},
      {"f", regular("1234567")},
      {"l", symlink("f")},
  }));
  MemorySource source(data);
  auto listing = narListing(source);
  ASSERT_TRUE(listing) << listing.error().message();
  EXPECT_EQ(*listing,
            "{\"version\":1,\"root\":{\"type\":\"directory\",\"entries\":{"
            "\"bin\":{\"type\":\"directory\",\"entries\":{\"run\":{\"type\":\"regular\",\"size\":"
            "2,\"executable\":true,\"narOffset\":400}}},"
            "\"empty\":{\"type\":\"directory\",\"entries\":{}},"
            "\"f\":{\"type\":\"regular\",\"size\":7,\"narOffset\":792},"
            "\"l\":{\"type\":\"symlink\",\"target\":\"f\"}}}}");
  EXPECT_EQ(data.substr(400, 2), "#!");
  EXPECT_EQ(data.substr(792, 7), "1234567");
  auto json = nlohmann::json::parse(*listing);
  EXPECT_EQ(json["root"]["entries"]["f"]["size"], 7);

  std::string file = nar(regular("1234567"));
  MemorySource single(file);
  EXPECT_EQ(narListing(single).value(),
            "{\"version\":1,\"root\":{\"type\":\"regular\",\"size\":7,\"narOffset\":96}}");
}

TEST(NarListing, HeaderExample) {
  std::string data = nar(directory({{"f", regular("1234567", true)}, {"l", symlink("f")}}));
  MemorySource source(data);
  EXPECT_EQ(narListing(source).value(),
            "{\"version\":1,\"root\":{\"type\":\"directory\",\"entries\":{\"f\":{\"type\":"
            "\"regular\",\"size\":7,\"executable\":true,\"narOffset\":264},\"l\":{\"type\":"
            "\"symlink\",\"target\":\"f\"}}}}");
}

TEST(NarListing, EscapesLikeNix) {
  std::string data = nar(directory({
      {std::string("\x01\b\t\n\f\r\x1f", 7), regular("")},
      {"q\"b\\s", symlink("t\"\\\x7f")},
      {"\xc3\xa9\xff", regular("")},
  }));
  MemorySource source(data);
  auto listing = narListing(source);
  ASSERT_TRUE(listing) << listing.error().message();
  EXPECT_NE(listing->find("\"\\u0001\\u0008\\t\\n\\u000c\\r\\u001f\":"), std::string::npos)
      << *listing;
  EXPECT_NE(listing->find("\"q\\\"b\\\\s\":{\"type\":\"symlink\",\"target\":\"t\\\"\\\\\x7f\"}"),
            std::string::npos)
      << *listing;
  EXPECT_NE(listing->find("\"\xc3\xa9\xff\":"), std::string::npos) << *listing;
}

}  // namespace
}  // namespace narcache
