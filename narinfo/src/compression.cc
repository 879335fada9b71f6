#include "narcache/narinfo/compression.h"

#include <archive.h>
#include <archive_entry.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace narcache {

namespace {

constexpr std::size_t kLibarchiveReadChunk = 64 * 1024;

struct MethodInfo {
  Compression method;
  std::string_view name;
  std::string_view extension;
};

constexpr std::array<MethodInfo, 6> kMethods = {{
    {Compression::kNone, "none", ""},
    {Compression::kZstd, "zstd", ".zst"},
    {Compression::kXz, "xz", ".xz"},
    {Compression::kBzip2, "bzip2", ".bz2"},
    {Compression::kGzip, "gzip", ".gz"},
    {Compression::kLzip, "lzip", ".lz"},
}};

const MethodInfo& infoOf(Compression c) {
  for (const auto& info : kMethods) {
    if (info.method == c) return info;
  }
  return kMethods[0];  // unreachable for valid enum values
}

std::string prefixed(Compression c, std::string_view what) {
  return std::string(compressionName(c)) + ": " + std::string(what);
}

// ---------------------------------------------------------------------------------------------
// none

// Forwards writes to `out`; finish() does not finish `out`, like every compressor here.
class PassthroughSink final : public Sink {
 public:
  explicit PassthroughSink(Sink& out) : out_(out) {}
  Status write(Bytes data) override {
    if (finished_) return fail(ErrorCode::kInvalidArgument, "none: write after finish");
    return out_.write(data);
  }
  Status finish() override {
    finished_ = true;
    return {};
  }

 private:
  Sink& out_;
  bool finished_ = false;
};

class PassthroughSource final : public Source {
 public:
  explicit PassthroughSource(Source& in) : in_(in) {}
  Result<std::size_t> read(MutableBytes out) override { return in_.read(out); }

 private:
  Source& in_;
};

// ---------------------------------------------------------------------------------------------
// zstd (libzstd's streaming API)

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// Compresses through one ZSTD_CCtx; the output buffer is ZSTD_CStreamOutSize() bytes, whatever
// the size of the writes, so memory stays constant (plus zstd's own window and worker buffers).
class ZstdCompressor final : public Sink {
 public:
  ZstdCompressor(std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx, Sink& out)
      : cctx_(std::move(cctx)), out_(out), buf_(ZSTD_CStreamOutSize()) {}

  Status write(Bytes data) override {
    if (finished_) return fail(ErrorCode::kInvalidArgument, "zstd: write after finish");
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (in.pos < in.size) {
      NARCACHE_TRY(step(in, ZSTD_e_continue));
    }
    return {};
  }

  Status finish() override {
    if (finished_) return {};
    ZSTD_inBuffer in{nullptr, 0, 0};
    for (;;) {
      auto remaining = step(in, ZSTD_e_end);
      if (!remaining) return fail(remaining.error());
      if (*remaining == 0) break;
    }
    finished_ = true;
    return {};
  }

 private:
  // One ZSTD_compressStream2 call; writes what it produced. Returns zstd's "bytes left to
  // flush" hint (0 once a ZSTD_e_end frame is complete).
  Result<std::size_t> step(ZSTD_inBuffer& in, ZSTD_EndDirective directive) {
    ZSTD_outBuffer o{buf_.data(), buf_.size(), 0};
    std::size_t ret = ZSTD_compressStream2(cctx_.get(), &o, &in, directive);
    if (ZSTD_isError(ret)) {
      return fail(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(ret));
    }
    if (o.pos > 0) NARCACHE_TRY(out_.write(Bytes(buf_.data(), o.pos)));
    return ret;
  }

  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx_;
  Sink& out_;
  std::vector<std::byte> buf_;
  bool finished_ = false;
};

// Decompresses one or more concatenated zstd frames (skippable frames are skipped). The input
// buffer is ZSTD_DStreamInSize() bytes; output goes straight into the caller's buffer.
class ZstdDecompressor final : public Source {
 public:
  ZstdDecompressor(std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx, Source& in)
      : dctx_(std::move(dctx)), in_(in), buf_(ZSTD_DStreamInSize()) {}

  Result<std::size_t> read(MutableBytes out) override {
    if (out.empty() || done_) return 0;
    for (;;) {
      if (input_.pos == input_.size && !source_eof_) {
        auto n = in_.read(buf_);
        if (!n) return fail(n.error());
        if (*n == 0) {
          source_eof_ = true;
        } else {
          input_ = {buf_.data(), *n, 0};
          saw_input_ = true;
        }
      }
      // Called even without new input: zstd may hold decoded bytes that did not fit last time.
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      std::size_t consumed_before = input_.pos;
      std::size_t ret = ZSTD_decompressStream(dctx_.get(), &o, &input_);
      if (ZSTD_isError(ret)) {
        // A bad magic number after a complete frame: what follows the stream is not zstd.
        if (ZSTD_getErrorCode(ret) == ZSTD_error_prefix_unknown && frames_ended_) {
          return fail(ErrorCode::kInvalidArgument,
                      "zstd: corrupt data: trailing bytes after the end of the stream");
        }
        return fail(ErrorCode::kInvalidArgument,
                    std::string("zstd: corrupt data: ") + ZSTD_getErrorName(ret));
      }
      // ret == 0: a frame ended and everything it decoded has been flushed. A call that did
      // nothing says nothing about it (past a frame's end, zstd asks for the next header).
      if (input_.pos != consumed_before || o.pos > 0) frame_complete_ = ret == 0;
      frames_ended_ = frames_ended_ || frame_complete_;
      if (o.pos > 0) return o.pos;
      if (input_.pos == input_.size && source_eof_) {
        if (!saw_input_ || !frame_complete_) {
          return fail(ErrorCode::kInvalidArgument, "zstd: truncated stream");
        }
        done_ = true;
        return 0;
      }
    }
  }

 private:
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx_;
  Source& in_;
  std::vector<std::byte> buf_;
  ZSTD_inBuffer input_{nullptr, 0, 0};
  bool source_eof_ = false;
  bool saw_input_ = false;
  bool frame_complete_ = false;
  bool frames_ended_ = false;
  bool done_ = false;
};

Result<std::unique_ptr<Sink>> makeZstdCompressor(Sink& out, const CompressOptions& options) {
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  if (!cctx) return fail(ErrorCode::kResourceExhausted, "zstd: cannot allocate a context");
  int level = options.level == -1 ? 3 : options.level;
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
    return fail(ErrorCode::kInvalidArgument, "zstd: compression level " + std::to_string(level) +
                                                 " is out of range (" +
                                                 std::to_string(ZSTD_minCLevel()) + ".." +
                                                 std::to_string(ZSTD_maxCLevel()) + ")");
  }
  std::size_t ret = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  if (ZSTD_isError(ret)) {
    return fail(ErrorCode::kInvalidArgument,
                std::string("zstd: compression level: ") + ZSTD_getErrorName(ret));
  }
  // A content checksum per frame (as the zstd CLI writes by default), so corruption is caught.
  ret = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  if (ZSTD_isError(ret)) {
    return fail(ErrorCode::kInternal, std::string("zstd: checksum: ") + ZSTD_getErrorName(ret));
  }
  if (options.threads < 0) {
    return fail(ErrorCode::kInvalidArgument,
                "zstd: thread count " + std::to_string(options.threads) + " is negative");
  }
  if (options.threads > 0) {
    ret = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers, options.threads);
    if (ZSTD_isError(ret)) {
      return fail(ErrorCode::kInvalidArgument, "zstd: cannot use " +
                                                   std::to_string(options.threads) +
                                                   " threads: " + ZSTD_getErrorName(ret));
    }
  }
  return std::make_unique<ZstdCompressor>(std::move(cctx), out);
}

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE, as gzip uses it), slicing-by-8. libarchive's gzip reader does not check the
// gzip trailer's CRC (its consume_trailer() says "XXX TODO: Verify the length and CRC"), so
// the gzip decompressor checks it itself.

struct Crc32Tables {
  std::uint32_t t[8][256];
  Crc32Tables() {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};

const Crc32Tables& crcTables() {
  static const Crc32Tables tables;
  return tables;
}

std::uint32_t crc32Update(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  const auto& t = crcTables().t;
  crc = ~crc;
  while (n >= 8) {
    std::uint32_t lo = crc ^ (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 |
                              std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24);
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// ---------------------------------------------------------------------------------------------
// xz, bzip2, gzip, lzip (libarchive's raw format with one compression filter)

struct ArchiveWriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ArchiveReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};

std::string archiveMessage(archive* a) {
  const char* s = archive_error_string(a);
  return s != nullptr && *s != '\0' ? s : "unknown libarchive error";
}

// Writes one raw-format entry through a libarchive compression filter whose output goes to
// `out` via the write callback. libarchive is unblocked (bytes_per_block 0), so nothing is
// padded and output reaches `out` as the filter produces it.
class ArchiveCompressor final : public Sink {
 public:
  ArchiveCompressor(Compression method, Sink& out) : method_(method), out_(out) {}

  Status open(int level) {
    a_.reset(archive_write_new());
    if (!a_) return fail(ErrorCode::kResourceExhausted, prefixed(method_, "out of memory"));
    int r = ARCHIVE_FATAL;
    switch (method_) {
      case Compression::kXz: r = archive_write_add_filter_xz(a_.get()); break;
      case Compression::kBzip2: r = archive_write_add_filter_bzip2(a_.get()); break;
      case Compression::kGzip: r = archive_write_add_filter_gzip(a_.get()); break;
      case Compression::kLzip: r = archive_write_add_filter_lzip(a_.get()); break;
      default: break;
    }
    if (r != ARCHIVE_OK) return archiveError(ErrorCode::kInternal);
    if (level != -1) {
      std::string value = std::to_string(level);
      if (archive_write_set_filter_option(a_.get(), nullptr, "compression-level", value.c_str()) !=
          ARCHIVE_OK) {
        return fail(
            ErrorCode::kInvalidArgument,
            prefixed(method_, "compression level " + value + ": " + archiveMessage(a_.get())));
      }
    }
    if (method_ == Compression::kGzip) {
      // Reproducible output: no modification time in the gzip header (best effort; older
      // libarchive has no such option).
      (void)archive_write_set_filter_option(a_.get(), "gzip", "timestamp", nullptr);
    }
    if (archive_write_set_format_raw(a_.get()) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(a_.get(), 0) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(a_.get(), 1) != ARCHIVE_OK) {
      return archiveError(ErrorCode::kInternal);
    }
    if (archive_write_open(a_.get(), this, nullptr, &ArchiveCompressor::writeCallback, nullptr) !=
        ARCHIVE_OK) {
      return archiveError(ErrorCode::kIoError);
    }
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(archive_entry_new(),
                                                                        &archive_entry_free);
    if (!entry) return fail(ErrorCode::kResourceExhausted, prefixed(method_, "out of memory"));
    archive_entry_set_filetype(entry.get(), AE_IFREG);
    archive_entry_set_pathname(entry.get(), "data");
    if (archive_write_header(a_.get(), entry.get()) != ARCHIVE_OK) {
      return archiveError(ErrorCode::kIoError);
    }
    return {};
  }

  Status write(Bytes data) override {
    if (finished_)
      return fail(ErrorCode::kInvalidArgument, prefixed(method_, "write after finish"));
    while (!data.empty()) {
      la_ssize_t n = archive_write_data(a_.get(), data.data(), data.size());
      if (n < 0) return archiveError(ErrorCode::kIoError);
      if (n == 0) return fail(ErrorCode::kInternal, prefixed(method_, "no progress writing"));
      data = data.subspan(static_cast<std::size_t>(n));
    }
    return {};
  }

  Status finish() override {
    if (finished_) return {};
    finished_ = true;
    if (archive_write_close(a_.get()) != ARCHIVE_OK) return archiveError(ErrorCode::kIoError);
    return {};
  }

 private:
  static la_ssize_t writeCallback(archive* a, void* client, const void* buffer,
                                  std::size_t length) {
    auto* self = static_cast<ArchiveCompressor*>(client);
    auto status = self->out_.write(Bytes(static_cast<const std::byte*>(buffer), length));
    if (!status) {
      self->sink_error_ = status.error();
      archive_set_error(a, EIO, "%s", "output sink failed");
      return -1;
    }
    return static_cast<la_ssize_t>(length);
  }

  // The sink's own error when it caused the failure, else libarchive's message.
  tl::unexpected<Error> archiveError(ErrorCode code) {
    if (sink_error_) return fail(std::move(*sink_error_));
    return fail(code, prefixed(method_, archiveMessage(a_.get())));
  }

  Compression method_;
  Sink& out_;
  std::unique_ptr<archive, ArchiveWriteDeleter> a_;
  std::optional<Error> sink_error_;
  bool finished_ = false;
};

int archiveFilterCode(Compression method) {
  switch (method) {
    case Compression::kXz: return ARCHIVE_FILTER_XZ;
    case Compression::kBzip2: return ARCHIVE_FILTER_BZIP2;
    case Compression::kGzip: return ARCHIVE_FILTER_GZIP;
    case Compression::kLzip: return ARCHIVE_FILTER_LZIP;
    default: return ARCHIVE_FILTER_NONE;
  }
}

// Reads the raw-format entry of a compressed stream through libarchive. The filter is
// appended explicitly (archive_read_append_filter), which bypasses libarchive's bidding: data
// that is not in the expected format is an error instead of being passed through, and a
// stream that decompresses to something compressed is not decompressed a second time.
//
// Empty output: libarchive's raw format refuses to bid on empty data, so the "empty" format
// is registered too and an empty entry reads as end of stream; then the absence of a filter
// error is what tells an empty stream from a broken one (see checkEmpty()).
class ArchiveDecompressor final : public Source {
 public:
  ArchiveDecompressor(Compression method, Source& in)
      : method_(method), in_(in), buf_(kLibarchiveReadChunk) {}

  // Sets libarchive up; nothing is read from the source until the first read().
  Status open() {
    a_.reset(archive_read_new());
    if (!a_) return fail(ErrorCode::kResourceExhausted, prefixed(method_, "out of memory"));
    if (archive_read_append_filter(a_.get(), archiveFilterCode(method_)) != ARCHIVE_OK ||
        archive_read_support_format_raw(a_.get()) != ARCHIVE_OK ||
        archive_read_support_format_empty(a_.get()) != ARCHIVE_OK) {
      return corrupt();
    }
    return {};
  }

  Result<std::size_t> read(MutableBytes out) override {
    if (out.empty() || eof_) return 0;
    if (!started_) {
      started_ = true;
      NARCACHE_TRY(start());
      if (eof_) return 0;
    }
    la_ssize_t n = archive_read_data(a_.get(), out.data(), out.size());
    if (n < 0) return corrupt();
    if (n == 0) {
      eof_ = true;
      NARCACHE_TRY(checkNothingFollows());
      NARCACHE_TRY(verifyGzipTrailer());
      return 0;
    }
    if (method_ == Compression::kGzip) {
      crc_ = crc32Update(crc_, reinterpret_cast<const unsigned char*>(out.data()),
                         static_cast<std::size_t>(n));
    }
    total_out_ += static_cast<std::uint64_t>(n);
    return static_cast<std::size_t>(n);
  }

 private:
  // Opens the archive and reads the raw entry's header (the first compressed bytes).
  Status start() {
    if (archive_read_open(a_.get(), this, nullptr, &ArchiveDecompressor::readCallback, nullptr) !=
        ARCHIVE_OK) {
      return corrupt();
    }
    // Opening runs the filter over the first input, and libarchive reports a failure there
    // only through the error string (archive_read_open still returns ARCHIVE_OK, and the
    // empty format then wins the format bidding). next_header() clears the string.
    if (const char* msg = archive_error_string(a_.get()); msg != nullptr) {
      open_error_ = msg;
    }
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(a_.get(), &entry);
    if (source_error_) return fail(std::move(*source_error_));
    NARCACHE_TRY(checkMagic());
    if (r == ARCHIVE_EOF) {
      NARCACHE_TRY(checkEmpty());
      eof_ = true;
    } else if (r != ARCHIVE_OK) {
      return corrupt();
    }
    return {};
  }

  static la_ssize_t readCallback(archive* a, void* client, const void** buffer) {
    auto* self = static_cast<ArchiveDecompressor*>(client);
    auto n = self->in_.read(self->buf_);
    if (!n) {
      self->source_error_ = n.error();
      archive_set_error(a, EIO, "%s", "input source failed");
      return -1;
    }
    if (*n == 0) self->source_eof_ = true;
    *buffer = self->buf_.data();
    self->total_in_ += *n;
    self->noteInput(*n);
    return static_cast<la_ssize_t>(*n);
  }

  // Remembers what the checks below need from the compressed input: its first bytes (the
  // format's magic), its last 8 bytes (a gzip trailer) and, for gzip, whether another member
  // header may follow the first (then the trailer is only the last member's).
  void noteInput(std::size_t n) {
    const auto* p = reinterpret_cast<const unsigned char*>(buf_.data());
    std::uint64_t before = total_in_ - n;
    for (std::size_t i = 0; head_len_ < head_.size() && i < n; ++i) head_[head_len_++] = p[i];
    if (method_ == Compression::kGzip && !second_member_) {
      static constexpr unsigned char kMagic[3] = {0x1f, 0x8b, 0x08};
      // A header straddling the previous read: the previous last 2 bytes + 2 new ones.
      std::array<unsigned char, 4> joined{};
      std::size_t carried = static_cast<std::size_t>(std::min<std::uint64_t>(before, 2));
      std::memcpy(joined.data(), last2_.data() + (2 - carried), carried);
      std::size_t took = std::min<std::size_t>(n, 2);
      std::memcpy(joined.data() + carried, p, took);
      for (std::size_t i = 0; i < carried && i + 3 <= carried + took; ++i) {
        if (std::memcmp(joined.data() + i, kMagic, 3) == 0 && before - carried + i > 0) {
          second_member_ = true;
        }
      }
      const unsigned char* end = p + n;
      for (const unsigned char* q = p; q < end; ++q) {
        q = static_cast<const unsigned char*>(
            std::memchr(q, 0x1f, static_cast<std::size_t>(end - q)));
        if (q == nullptr) break;
        if (end - q >= 3 && q[1] == 0x8b && q[2] == 0x08 && before + (q - p) > 0) {
          second_member_ = true;
          break;
        }
      }
      if (n >= 2) {
        last2_ = {p[n - 2], p[n - 1]};
      } else if (n == 1) {
        last2_ = {last2_[1], p[0]};
      }
    }
    rememberTail(n);
  }

  // The input must start with the method's magic bytes (libarchive, told which filter to use,
  // does not always check them itself).
  Status checkMagic() {
    std::string_view magic;
    switch (method_) {
      case Compression::kXz:
        magic = std::string_view(
            "\xFD"
            "7zXZ\0",
            6);
        break;
      case Compression::kBzip2: magic = "BZh"; break;
      case Compression::kGzip: magic = "\x1f\x8b\x08"; break;
      case Compression::kLzip: magic = "LZIP"; break;
      default: return {};
    }
    std::size_t n = std::min(head_len_, magic.size());
    if (std::memcmp(head_.data(), magic.data(), n) != 0) {
      return fail(ErrorCode::kInvalidArgument,
                  prefixed(method_, "corrupt data: not in " +
                                        std::string(compressionName(method_)) + " format"));
    }
    if (n < magic.size()) {
      return fail(ErrorCode::kInvalidArgument, prefixed(method_, "truncated stream"));
    }
    // bzip2's block size digit: libarchive takes a bad one for the end of the data.
    if (method_ == Compression::kBzip2 && head_len_ > 3 && (head_[3] < '1' || head_[3] > '9')) {
      return fail(ErrorCode::kInvalidArgument, "bzip2: corrupt data: bad block size");
    }
    return {};
  }

  // Keeps the last 36 bytes of compressed input: a gzip stream's trailer is the last 8, an empty
  // lzip member all 36.
  void rememberTail(std::size_t n) {
    if (n >= tail_.size()) {
      std::memcpy(tail_.data(), buf_.data() + n - tail_.size(), tail_.size());
    } else {
      std::memmove(tail_.data(), tail_.data() + n, tail_.size() - n);
      std::memcpy(tail_.data() + tail_.size() - n, buf_.data(), n);
    }
  }

  // An empty entry is fine only if the filter decoded a complete stream without error. An
  // empty compressed stream (0 bytes) is truncated for every method, as for the CLI tools.
  Status checkEmpty() {
    if (source_error_) return fail(std::move(*source_error_));
    if (total_in_ == 0) {
      return fail(ErrorCode::kInvalidArgument, prefixed(method_, "truncated stream"));
    }
    if (open_error_) return corruptWith(open_error_->c_str());
    // The smallest complete stream of nothing; libarchive reports some shorter ones as empty.
    std::uint64_t min_size = 0;
    switch (method_) {
      case Compression::kXz: min_size = 32; break;
      case Compression::kBzip2: min_size = 14; break;
      case Compression::kGzip: min_size = 20; break;
      case Compression::kLzip: min_size = 36; break;
      default: break;
    }
    if (total_in_ < min_size) {
      return fail(ErrorCode::kInvalidArgument, prefixed(method_, "truncated stream"));
    }
    if (archive_errno(a_.get()) != 0 || archive_error_string(a_.get()) != nullptr) {
      return corrupt();
    }
    NARCACHE_TRY(checkNothingFollows());
    return verifyGzipTrailer();
  }

  // After the last stream or member, the input must end. libarchive's bzip2, gzip and lzip
  // readers stop at the first bytes that do not start another member and ignore the rest
  // (xz's liblzma calls them corrupt), so a stream with garbage appended would pass. What the
  // filter consumed from the input is the client pseudo-filter's position (filter -1).
  Status checkNothingFollows() {
    if (!source_eof_) {
      auto n = in_.read(buf_);
      if (!n) return fail(n.error());
      if (*n > 0) return trailingBytes();
      source_eof_ = true;
    }
    std::uint64_t consumed = static_cast<std::uint64_t>(archive_filter_bytes(a_.get(), -1));
    std::uint64_t unconsumed = total_in_ > consumed ? total_in_ - consumed : 0;
    if (unconsumed == 0 || (unconsumed == kLzipTrailer && isEmptyLzipTrailer())) return {};
    return trailingBytes();
  }

  tl::unexpected<Error> trailingBytes() const {
    return fail(ErrorCode::kInvalidArgument,
                prefixed(method_, "corrupt data: trailing bytes after the end of the stream"));
  }

  // libarchive leaves the trailer of an lzip member that decodes to nothing unread (it reads a
  // trailer only after output), so a last empty member ends in 20 unconsumed bytes: the CRC-32
  // and size of no data (both 0) and the member's size, 36 (an empty member: the 6-byte header,
  // 10 bytes of LZMA end marker, the trailer), the member starting with "LZIP". It also stops
  // reading there: members after an empty one are refused as trailing bytes, not dropped.
  bool isEmptyLzipTrailer() const {
    if (method_ != Compression::kLzip || total_in_ < kEmptyLzipMember) return false;
    const std::byte* member = tail_.data() + tail_.size() - kEmptyLzipMember;
    const std::byte* t = tail_.data() + tail_.size() - kLzipTrailer;
    std::uint64_t member_size = 0;
    for (int i = 7; i >= 0; --i) {
      member_size = member_size << 8 | std::to_integer<unsigned>(t[12 + i]);
    }
    return std::memcmp(member, "LZIP", 4) == 0 &&
           std::all_of(t, t + 12, [](std::byte b) { return b == std::byte{0}; }) &&
           member_size == kEmptyLzipMember;
  }

  // A single-member gzip stream ends with the CRC-32 and size (mod 2^32) of all the output.
  // When the input holds another gzip member header (or bytes that look like one), the
  // trailer covers only the last member and is not checked: libarchive does not check any.
  Status verifyGzipTrailer() {
    if (method_ != Compression::kGzip || second_member_) return {};
    auto le32 = [](const std::byte* p) {
      return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
             std::uint32_t(p[3]) << 24;
    };
    const std::byte* trailer = tail_.data() + tail_.size() - 8;
    std::uint32_t stored_crc = le32(trailer);
    std::uint32_t stored_size = le32(trailer + 4);
    if (stored_size != static_cast<std::uint32_t>(total_out_)) {
      return fail(ErrorCode::kInvalidArgument, "gzip: corrupt data: size mismatch");
    }
    if (stored_crc != crc_) {
      return fail(ErrorCode::kInvalidArgument, "gzip: corrupt data: CRC-32 mismatch");
    }
    return {};
  }

  tl::unexpected<Error> corrupt() { return corruptWith(archive_error_string(a_.get())); }

  tl::unexpected<Error> corruptWith(const char* msg) {
    if (source_error_) return fail(std::move(*source_error_));
    if (isTruncationMessage(msg)) {
      return fail(ErrorCode::kInvalidArgument, prefixed(method_, "truncated stream"));
    }
    return fail(ErrorCode::kInvalidArgument,
                prefixed(method_, std::string("corrupt data: ") + msg));
  }

  // libarchive reports some truncations with a message ("truncated gzip input", "Lzip: Remaining
  // data is less bytes") and some with none at all (a missing gzip trailer).
  static bool isTruncationMessage(const char* msg) {
    if (msg == nullptr || *msg == '\0') return true;
    std::string m(msg);
    for (auto& c : m) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return m.find("truncated") != std::string::npos ||
           m.find("premature end") != std::string::npos ||
           m.find("remaining data is less") != std::string::npos ||
           m.find("unexpected end") != std::string::npos ||
           m.find("no progress is possible") != std::string::npos;
  }

  Compression method_;
  Source& in_;
  std::vector<std::byte> buf_;
  std::unique_ptr<archive, ArchiveReadDeleter> a_;
  std::optional<Error> source_error_;
  std::optional<std::string> open_error_;
  std::array<unsigned char, 6> head_{};
  std::size_t head_len_ = 0;
  std::array<unsigned char, 2> last2_{};
  bool second_member_ = false;
  static constexpr std::size_t kLzipTrailer = 20;
  static constexpr std::size_t kEmptyLzipMember = 36;
  std::array<std::byte, kEmptyLzipMember> tail_{};
  std::uint64_t total_in_ = 0;
  std::uint64_t total_out_ = 0;
  std::uint32_t crc_ = 0;
  bool source_eof_ = false;
  bool started_ = false;
  bool eof_ = false;
};

}  // namespace

Result<Compression> parseCompression(std::string_view name) {
  for (const auto& info : kMethods) {
    if (info.name == name) return info.method;
  }
  if (name == "br") {
    return fail(ErrorCode::kInvalidArgument, "compression 'br' is not supported");
  }
  std::string supported;
  for (const auto& info : kMethods) {
    if (!supported.empty()) supported += ", ";
    supported += info.name;
  }
  return fail(ErrorCode::kInvalidArgument,
              "unknown compression '" + std::string(name) + "' (supported: " + supported + ")");
}

std::string_view compressionName(Compression c) {
  return infoOf(c).name;
}

std::string_view compressionExtension(Compression c) {
  return infoOf(c).extension;
}

Result<std::unique_ptr<Sink>> makeCompressor(Compression method, Sink& out,
                                             CompressOptions options) {
  switch (method) {
    case Compression::kNone: return std::make_unique<PassthroughSink>(out);
    case Compression::kZstd: return makeZstdCompressor(out, options);
    case Compression::kXz:
    case Compression::kBzip2:
    case Compression::kGzip:
    case Compression::kLzip: {
      auto c = std::make_unique<ArchiveCompressor>(method, out);
      NARCACHE_TRY(c->open(options.level));
      return std::unique_ptr<Sink>(std::move(c));
    }
  }
  return fail(ErrorCode::kInvalidArgument, "unknown compression method");
}

Result<std::unique_ptr<Source>> makeDecompressor(Compression method, Source& in) {
  switch (method) {
    case Compression::kNone: return std::make_unique<PassthroughSource>(in);
    case Compression::kZstd: {
      std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
      if (!dctx) return fail(ErrorCode::kResourceExhausted, "zstd: cannot allocate a context");
      return std::make_unique<ZstdDecompressor>(std::move(dctx), in);
    }
    case Compression::kXz:
    case Compression::kBzip2:
    case Compression::kGzip:
    case Compression::kLzip: {
      auto d = std::make_unique<ArchiveDecompressor>(method, in);
      NARCACHE_TRY(d->open());
      return std::unique_ptr<Source>(std::move(d));
    }
  }
  return fail(ErrorCode::kInvalidArgument, "unknown compression method");
}

}  // namespace narcache
