#include "narcache/narinfo/compression.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "support/support.h"

namespace narcache {
namespace {

const std::vector<Compression> kAllMethods = {Compression::kNone, Compression::kZstd,
                                              Compression::kXz,   Compression::kBzip2,
                                              Compression::kGzip, Compression::kLzip};
const std::vector<Compression> kCompressing = {Compression::kZstd, Compression::kXz,
                                               Compression::kBzip2, Compression::kGzip,
                                               Compression::kLzip};

std::string randomBytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    std::uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<std::size_t>(8, n - i));
  }
  return s;
}

// Text-like data that compresses well but not trivially.
std::string compressibleBytes(std::size_t n, std::uint64_t seed) {
  static const std::vector<std::string> kWords = {
      "/nix/store/", "lib", "share", "bin",  "-2.8.1", "glibc", "gcc",    "\n",
      "include",     ".so", "doc",   "man1", " ",      "perl",  "python", "0123456789"};
  std::mt19937_64 rng(seed);
  std::string s;
  s.reserve(n + 16);
  while (s.size() < n) s += kWords[rng() % kWords.size()];
  s.resize(n);
  return s;
}

// Compresses `data`, writing it in chunks of `chunk` bytes.
std::string compress(Compression method, const std::string& data, std::size_t chunk = 65536,
                     CompressOptions options = {}) {
  StringSink out;
  auto c = makeCompressor(method, out, options);
  EXPECT_TRUE(c) << c.error().message();
  if (!c) return {};
  for (std::size_t pos = 0; pos < data.size(); pos += chunk) {
    auto n = std::min(chunk, data.size() - pos);
    auto st = (*c)->write(asBytes(std::string_view(data).substr(pos, n)));
    EXPECT_TRUE(st) << st.error().message();
  }
  auto st = (*c)->finish();
  EXPECT_TRUE(st) << st.error().message();
  return out.text;
}

// Decompresses reading into a buffer of `buffer` bytes.
Result<std::string> decompress(Compression method, const std::string& data,
                               std::size_t buffer = 65536) {
  MemorySource in(data);
  auto d = makeDecompressor(method, in);
  if (!d) return fail(d.error());
  std::string result;
  std::vector<std::byte> buf(buffer);
  for (;;) {
    auto n = (*d)->read(buf);
    if (!n) return fail(n.error());
    if (*n == 0) break;
    EXPECT_LE(*n, buffer);
    result.append(reinterpret_cast<const char*>(buf.data()), *n);
  }
  // End of stream is sticky.
  auto again = (*d)->read(buf);
  if (!again) return fail(again.error());
  EXPECT_EQ(*again, 0u);
  return result;
}

std::string describe(Compression m) {
  return std::string(compressionName(m));
}

TEST(CompressionNames, ParseAndName) {
  for (auto m : kAllMethods) {
    auto parsed = parseCompression(compressionName(m));
    ASSERT_TRUE(parsed) << describe(m);
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_EQ(compressionExtension(Compression::kNone), "");
  EXPECT_EQ(compressionExtension(Compression::kZstd), ".zst");
  EXPECT_EQ(compressionExtension(Compression::kXz), ".xz");
  EXPECT_EQ(compressionExtension(Compression::kBzip2), ".bz2");
  EXPECT_EQ(compressionExtension(Compression::kGzip), ".gz");
  EXPECT_EQ(compressionExtension(Compression::kLzip), ".lz");
}

TEST(CompressionNames, UnsupportedAndUnknown) {
  auto br = parseCompression("br");
  ASSERT_FALSE(br);
  EXPECT_EQ(br.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(br.error().message(), "compression 'br' is not supported");

  auto unknown = parseCompression("lz4");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(unknown.error().message(),
            "unknown compression 'lz4' (supported: none, zstd, xz, bzip2, gzip, lzip)");
  EXPECT_FALSE(parseCompression(""));
  EXPECT_FALSE(parseCompression("XZ"));
}

class CompressionRoundTrip : public ::testing::TestWithParam<Compression> {};

TEST_P(CompressionRoundTrip, Empty) {
  auto m = GetParam();
  std::string c = compress(m, "");
  if (m != Compression::kNone) {
    EXPECT_FALSE(c.empty());
  }
  auto d = decompress(m, c);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(*d, "");
}

TEST_P(CompressionRoundTrip, SmallInOddChunks) {
  auto m = GetParam();
  const std::string data = "Hello, nix-archive-1!\n" + compressibleBytes(3000, 1);
  for (std::size_t chunk : {1u, 7u, 1000u, 100000u}) {
    std::string c = compress(m, data, chunk);
    for (std::size_t buffer : {1u, 13u, 4099u}) {
      auto d = decompress(m, c, buffer);
      ASSERT_TRUE(d) << describe(m) << " chunk " << chunk << ": " << d.error().message();
      EXPECT_EQ(*d, data) << describe(m) << " chunk " << chunk << " buffer " << buffer;
    }
  }
}

TEST_P(CompressionRoundTrip, MultiMegabyteRandom) {
  auto m = GetParam();
  const std::string data = randomBytes(3 * 1024 * 1024 + 17, 2);
  std::string c = compress(m, data, 4093);
  for (std::size_t buffer : {4099u, 1024u * 1024u + 3u}) {
    auto d = decompress(m, c, buffer);
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_TRUE(*d == data) << describe(m) << " buffer " << buffer;
  }
}

TEST_P(CompressionRoundTrip, MultiMegabyteCompressible) {
  auto m = GetParam();
  const std::string data = compressibleBytes(6 * 1024 * 1024 + 5, 3);
  std::string c = compress(m, data, 65537);
  if (m != Compression::kNone) {
    EXPECT_LT(c.size(), data.size() / 2) << describe(m);
  }
  auto d = decompress(m, c, 7919);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_TRUE(*d == data) << describe(m);
}

TEST_P(CompressionRoundTrip, Levels) {
  auto m = GetParam();
  if (m == Compression::kNone) GTEST_SKIP() << "no levels";
  const std::string data = compressibleBytes(200000, 4);
  for (int level : {1, 9}) {
    CompressOptions options;
    options.level = level;
    std::string c = compress(m, data, 65536, options);
    auto d = decompress(m, c);
    ASSERT_TRUE(d) << describe(m) << " level " << level << ": " << d.error().message();
    EXPECT_EQ(*d, data);
  }
  StringSink out;
  CompressOptions bad;
  bad.level = 1000;
  auto c = makeCompressor(m, out, bad);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(c.error().message().rfind(describe(m) + ": ", 0), 0u) << c.error().message();
}

TEST_P(CompressionRoundTrip, WriteAfterFinishIsAnError) {
  StringSink out;
  auto c = makeCompressor(GetParam(), out);
  ASSERT_TRUE(c);
  ASSERT_TRUE((*c)->write(asBytes("abc")));
  ASSERT_TRUE((*c)->finish());
  EXPECT_FALSE((*c)->write(asBytes("def")));
}

TEST_P(CompressionRoundTrip, SinkErrorPropagates) {
  class FailingSink final : public Sink {
   public:
    Status write(Bytes) override { return fail(ErrorCode::kResourceExhausted, "disk full"); }
  };
  FailingSink out;
  auto c = makeCompressor(GetParam(), out);
  ASSERT_TRUE(c);
  const std::string data = randomBytes(4 * 1024 * 1024, 5);
  Status st = (*c)->write(asBytes(data));
  if (st) st = (*c)->finish();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kResourceExhausted) << st.error().message();
}

TEST_P(CompressionRoundTrip, SourceErrorPropagates) {
  class FailingSource final : public Source {
   public:
    Result<std::size_t> read(MutableBytes) override {
      return fail(ErrorCode::kIoError, "read: connection reset");
    }
  };
  FailingSource in;
  auto d = makeDecompressor(GetParam(), in);
  std::vector<std::byte> buf(100);
  Result<std::size_t> n = d ? (*d)->read(buf) : fail(d.error());
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code(), ErrorCode::kIoError) << n.error().message();
}

INSTANTIATE_TEST_SUITE_P(AllMethods, CompressionRoundTrip, ::testing::ValuesIn(kAllMethods),
                         [](const auto& param_info) { return describe(param_info.param); });

// ---------------------------------------------------------------------------------------------
// Corrupt and truncated input

class CompressionCorrupt : public ::testing::TestWithParam<Compression> {};

void expectInvalid(Compression m, const Result<std::string>& r, const std::string& what) {
  ASSERT_FALSE(r) << describe(m) << ": " << what << " decoded without error";
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << r.error().message();
  EXPECT_EQ(r.error().message().rfind(describe(m) + ": ", 0), 0u) << r.error().message();
}

TEST_P(CompressionCorrupt, EveryTruncation) {
  auto m = GetParam();
  const std::string data = compressibleBytes(5000, 6) + randomBytes(500, 6);
  const std::string c = compress(m, data);
  for (std::size_t len = 0; len < c.size(); ++len) {
    auto r = decompress(m, c.substr(0, len));
    expectInvalid(m, r, "prefix of " + std::to_string(len) + "/" + std::to_string(c.size()));
    if (!r && len > 0 && len + 1 < c.size()) {
      // Truncations are reported as such (libarchive sometimes calls them corrupt).
      EXPECT_NE(r.error().message().find(describe(m) + ": "), std::string::npos);
    }
  }
  auto empty = decompress(m, "");
  expectInvalid(m, empty, "empty input");
  EXPECT_EQ(empty.error().message(), describe(m) + ": truncated stream");
  auto cut = decompress(m, c.substr(0, c.size() - 1));
  ASSERT_FALSE(cut);
}

TEST_P(CompressionCorrupt, TruncatedEmptyStream) {
  auto m = GetParam();
  const std::string c = compress(m, "");
  for (std::size_t len = 0; len < c.size(); ++len) {
    expectInvalid(m, decompress(m, c.substr(0, len)), "prefix " + std::to_string(len));
  }
}

TEST_P(CompressionCorrupt, FlippedBytes) {
  auto m = GetParam();
  const std::string data = compressibleBytes(100000, 7);
  const std::string c = compress(m, data);
  // Header, a few places in the body, trailer.
  std::vector<std::size_t> positions = {
      0, 1, 3, c.size() / 3, c.size() / 2, c.size() * 3 / 4, c.size() - 5, c.size() - 1};
  for (std::size_t pos : positions) {
    for (unsigned char mask : {0x01, 0x80, 0xff}) {
      std::string bad = c;
      bad[pos] = static_cast<char>(bad[pos] ^ mask);
      auto r = decompress(m, bad);
      if (r && *r == data) continue;  // a bit nobody reads (e.g. unused header flags)
      expectInvalid(m, r, "flip at " + std::to_string(pos) + "/" + std::to_string(c.size()));
    }
  }
}

TEST_P(CompressionCorrupt, NotCompressedAtAll) {
  auto m = GetParam();
  // libarchive would pass unrecognised data through if it were left to bid on the format.
  const std::string plain = compressibleBytes(10000, 8);
  expectInvalid(m, decompress(m, plain), "plain text");
}

TEST_P(CompressionCorrupt, DoublyCompressedIsDecodedOnce) {
  auto m = GetParam();
  const std::string data = compressibleBytes(10000, 9);
  const std::string inner = compress(m, data);
  auto r = decompress(m, compress(m, inner));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, inner);
}

INSTANTIATE_TEST_SUITE_P(Compressing, CompressionCorrupt, ::testing::ValuesIn(kCompressing),
                         [](const auto& param_info) { return describe(param_info.param); });

TEST_P(CompressionCorrupt, TrailingBytesAreRefused) {
  auto m = GetParam();
  // libarchive's bzip2, gzip and lzip readers stop at bytes that do not start another member,
  // and the gzip trailer check would read the garbage as a trailer.
  const std::string data = compressibleBytes(100000, 16);
  for (const std::string& c : {compress(m, data), compress(m, "")}) {
    for (const std::string& trailer :
         {std::string("garbage!"), std::string("BZh9 not quite"), randomBytes(200000, 16)}) {
      auto r = decompress(m, c + trailer);
      expectInvalid(m, r, std::to_string(trailer.size()) + " trailing bytes");
      // liblzma reads on and calls them corrupt input.
      if (r || m == Compression::kXz) continue;
      EXPECT_EQ(r.error().message(),
                describe(m) + ": corrupt data: trailing bytes after the end of the stream");
    }
    expectInvalid(m, decompress(m, c + "x"), "one trailing byte");
  }
}

TEST(CompressionCorrupt, LzipMembersAfterAnEmptyOneAreRefusedNotDropped) {
  // libarchive stops at an lzip member that decodes to nothing; it used to return the output
  // so far as the whole stream.
  const std::string data = compressibleBytes(50000, 17);
  const std::string empty = compress(Compression::kLzip, "");
  const std::string full = compress(Compression::kLzip, data);
  auto last_empty = decompress(Compression::kLzip, full + empty);
  ASSERT_TRUE(last_empty) << last_empty.error().message();
  EXPECT_TRUE(*last_empty == data);
  expectInvalid(Compression::kLzip, decompress(Compression::kLzip, empty + full), "empty, full");
  expectInvalid(Compression::kLzip, decompress(Compression::kLzip, empty + empty), "empty, empty");
  // Twenty bytes shaped like an empty member's trailer are not one without its member.
  std::string fake(12, '\0');
  fake += std::string("\x1a\0\0\0\0\0\0\0", 8);  // member size 26
  expectInvalid(Compression::kLzip, decompress(Compression::kLzip, full + fake), "fake trailer");
  fake[12] = '\x24';  // 36
  expectInvalid(Compression::kLzip, decompress(Compression::kLzip, full + fake), "fake trailer");
}

// ---------------------------------------------------------------------------------------------
// zstd specifics

TEST(Zstd, ConcatenatedFramesDecode) {
  const std::string a = compressibleBytes(300000, 10);
  const std::string b = randomBytes(70000, 11);
  const std::string e;
  auto r = decompress(Compression::kZstd,
                      compress(Compression::kZstd, a) + compress(Compression::kZstd, e) +
                          compress(Compression::kZstd, b),
                      1000);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(*r == a + b);
}

TEST(Zstd, SkippableFrameIsSkipped) {
  std::string skippable(
      "\x50\x2a\x4d\x18\x04\x00\x00\x00"
      "abcd",
      12);
  auto r = decompress(Compression::kZstd, skippable + compress(Compression::kZstd, "payload"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, "payload");
}

TEST(Zstd, MultiThreaded) {
  const std::string data = compressibleBytes(24 * 1024 * 1024, 12) + randomBytes(3000000, 12);
  CompressOptions options;
  options.threads = 4;
  const std::string c = compress(Compression::kZstd, data, 1 << 20, options);
  auto r = decompress(Compression::kZstd, c);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(*r == data);

  CompressOptions negative;
  negative.threads = -1;
  StringSink out;
  auto bad = makeCompressor(Compression::kZstd, out, negative);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Interop with the command-line tools

struct Tool {
  Compression method;
  std::string program;
};
const std::vector<Tool> kTools = {{Compression::kZstd, "zstd"},
                                  {Compression::kXz, "xz"},
                                  {Compression::kBzip2, "bzip2"},
                                  {Compression::kGzip, "gzip"},
                                  {Compression::kLzip, "lzip"}};

bool onPath(const std::string& program) {
  return test::sh("command -v " + program + " >/dev/null").exit_code == 0;
}

class CompressionInterop : public ::testing::TestWithParam<Tool> {};

TEST_P(CompressionInterop, ToolDecompressesOurOutput) {
  const auto& tool = GetParam();
  if (!onPath(tool.program)) GTEST_SKIP() << tool.program << " is not installed";
  for (const std::string& data :
       {std::string(), compressibleBytes(2 * 1024 * 1024, 13), randomBytes(300000, 13)}) {
    test::RunOptions options;
    options.stdin_data = compress(tool.method, data, 12345);
    auto r = test::run({tool.program, "-d", "-c"}, options);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(r.out == data) << tool.program << " size " << data.size();
  }
}

TEST_P(CompressionInterop, WeDecompressToolOutput) {
  const auto& tool = GetParam();
  if (!onPath(tool.program)) GTEST_SKIP() << tool.program << " is not installed";
  for (const std::string& data :
       {std::string(), compressibleBytes(2 * 1024 * 1024, 14), randomBytes(300000, 14)}) {
    test::RunOptions options;
    options.stdin_data = data;
    auto r = test::run({tool.program, "-c"}, options);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto d = decompress(tool.method, r.out, 5003);
    ASSERT_TRUE(d) << tool.program << ": " << d.error().message();
    EXPECT_TRUE(*d == data) << tool.program << " size " << data.size();
  }
}

TEST_P(CompressionInterop, WeDecompressConcatenatedToolOutput) {
  const auto& tool = GetParam();
  if (!onPath(tool.program)) GTEST_SKIP() << tool.program << " is not installed";
  // Every one of these formats allows concatenated streams/members (`cat a.gz b.gz`).
  std::string both, expected;
  for (const std::string& part : {compressibleBytes(100000, 15), randomBytes(5000, 15)}) {
    test::RunOptions options;
    options.stdin_data = part;
    auto r = test::run({tool.program, "-c"}, options);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    both += r.out;
    expected += part;
  }
  auto d = decompress(tool.method, both);
  ASSERT_TRUE(d) << tool.program << ": " << d.error().message();
  EXPECT_TRUE(*d == expected) << tool.program;
}

INSTANTIATE_TEST_SUITE_P(Tools, CompressionInterop, ::testing::ValuesIn(kTools),
                         [](const auto& param_info) { return param_info.param.program; });

// ---------------------------------------------------------------------------------------------
// Constant memory

// Yields `size` bytes: a 1 MiB pseudo-random block repeated (compressible by a 2 MiB+ window).
class PatternSource final : public Source {
 public:
  explicit PatternSource(std::uint64_t size) : size_(size), block_(randomBytes(1 << 20, 16)) {}
  Result<std::size_t> read(MutableBytes out) override {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), size_ - pos_));
    for (std::size_t done = 0; done < n;) {
      std::size_t off = static_cast<std::size_t>((pos_ + done) % block_.size());
      std::size_t k = std::min(n - done, block_.size() - off);
      std::memcpy(out.data() + done, block_.data() + off, k);
      done += k;
    }
    pos_ += n;
    return n;
  }
  const std::string& block() const { return block_; }

 private:
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
  std::string block_;
};

// Records the largest single write.
class MaxWriteSink final : public Sink {
 public:
  Status write(Bytes data) override {
    max_write = std::max(max_write, data.size());
    text.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }
  std::size_t max_write = 0;
  std::string text;
};

// Records the largest single read request.
class MaxReadSource final : public Source {
 public:
  explicit MaxReadSource(Source& in) : in_(in) {}
  Result<std::size_t> read(MutableBytes out) override {
    max_request = std::max(max_request, out.size());
    return in_.read(out);
  }
  std::size_t max_request = 0;

 private:
  Source& in_;
};

long maxRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// Streams `size` bytes through compressor and decompressor; the compressed form is kept in
// memory (it is small: the data repeats), the plain form never is.
void streamThrough(Compression m, std::uint64_t size, CompressOptions options = {}) {
  PatternSource plain(size);
  MaxWriteSink compressed;
  {
    auto c = makeCompressor(m, compressed, options);
    ASSERT_TRUE(c);
    auto copied = copyStream(plain, **c);
    ASSERT_TRUE(copied) << copied.error().message();
    ASSERT_EQ(*copied, size);
    ASSERT_TRUE((*c)->finish());
  }
  EXPECT_LE(compressed.max_write, 4u << 20) << describe(m);

  MemorySource mem(compressed.text);
  MaxReadSource in(mem);
  auto d = makeDecompressor(m, in);
  ASSERT_TRUE(d);
  std::vector<std::byte> buf(1 << 20);
  std::uint64_t total = 0;
  const std::string& block = plain.block();
  for (;;) {
    auto n = (*d)->read(buf);
    ASSERT_TRUE(n) << n.error().message();
    if (*n == 0) break;
    std::size_t off = static_cast<std::size_t>(total % block.size());
    ASSERT_EQ(std::memcmp(buf.data(), block.data() + off, std::min(*n, block.size() - off)), 0)
        << "at " << total;
    total += *n;
  }
  EXPECT_EQ(total, size);
  // The decompressor pulls its input in bounded chunks, whatever the stream size.
  EXPECT_GT(in.max_request, 0u);
  if (m == Compression::kNone) {
    EXPECT_LE(in.max_request, buf.size());  // passes the caller's buffer through
  } else {
    EXPECT_LE(in.max_request, 256u * 1024) << describe(m);
  }
}

TEST(CompressionMemory, Zstd200MiBStreamsInConstantMemory) {
  streamThrough(Compression::kZstd, 200ull << 20);
  if (!kSanitized) {
    EXPECT_LT(maxRssMiB(), 120) << "200 MiB went through; was it buffered?";
  }
}

TEST(CompressionMemory, ZstdThreaded200MiBStreamsInConstantMemory) {
  CompressOptions options;
  options.threads = 2;
  streamThrough(Compression::kZstd, 200ull << 20, options);
  if (!kSanitized) {
    EXPECT_LT(maxRssMiB(), 150) << "200 MiB went through; was it buffered?";
  }
}

TEST(CompressionMemory, EveryMethodBoundedChunks) {
  for (auto m : kAllMethods) {
    SCOPED_TRACE(describe(m));
    streamThrough(m, 8ull << 20);
  }
  if (!kSanitized) {
    EXPECT_LT(maxRssMiB(), 120);
  }
}

}  // namespace
}  // namespace narcache
