#pragma once
// Byte streams: the only I/O the formats layer knows. Every format (NAR, compression, hashing)
// reads from a Source and writes to a Sink, so all of them run in constant memory whatever the
// size of the data. Sources and Sinks are single-threaded objects; none is thread-safe.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "narcache/narinfo/error.h"

namespace narcache {

using Bytes = std::span<const std::byte>;
using MutableBytes = std::span<std::byte>;

inline Bytes asBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// A byte range of an open file (the fd is not owned).
struct FileSpan {
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

// A stream of bytes to read from.
class Source {
 public:
  virtual ~Source() = default;
  // Reads up to out.size() bytes; returns how many were read, 0 only at end of stream.
  virtual Result<std::size_t> read(MutableBytes out) = 0;
  // Reads exactly out.size() bytes; a stream that ends early is an InvalidArgument error
  // ("unexpected end of stream").
  Status readExact(MutableBytes out);

  // Zero-copy reading, offered by sources that are a mapped file (MappedFileSource):
  // readsInPlace() says so, and readInPlace() then returns up to `max` bytes where they are and
  // consumes them (empty at the end). Those bytes stay readable, from any thread, for the
  // source's lifetime; release(p) says the bytes before `p` will not be read again, so their
  // memory may be given back. fileSpan(bytes) says where bytes that readInPlace returned lie in
  // the file, so that they can be copied by the kernel (sendfile) without being read through
  // the mapping at all. Other sources: false, an empty span, no-op, none; use read().
  virtual bool readsInPlace() const { return false; }
  virtual Bytes readInPlace(std::size_t /*max*/) { return {}; }
  virtual void release(const std::byte* /*p*/) {}
  virtual std::optional<FileSpan> fileSpan(Bytes /*in_place*/) const { return std::nullopt; }
};

// A stream of bytes to write to. `finish()` marks the end of the stream: sinks that frame or
// compress flush their trailer there; writing after finish() is an error. Sinks that own
// nothing at the end may leave finish() as a no-op.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual Status write(Bytes data) = 0;
  virtual Status finish() { return {}; }

  // Sinks into which the kernel can move a file's bytes directly (FdSink, and a BufferedSink
  // over one) say so; writeSpan then appends the span's bytes without them passing through
  // this process, and returns how many it wrote: fewer than span.size only when the file ended
  // first. Other sinks: false, and writeSpan is an Internal error (read the file and write()).
  virtual bool takesSpans() const { return false; }
  virtual Result<std::uint64_t> writeSpan(const FileSpan& span);
};

// Writes all of `data` to `fd`, retrying EINTR and short writes: 0, or the errno of the failure.
int writeAll(int fd, Bytes data);

// What copySpan did: the bytes copied and, when it failed, the errno and whether reading the
// span (or else writing) failed.
struct SpanCopy {
  std::uint64_t bytes = 0;
  int error = 0;
  bool reading = false;
};

// Appends the span `from` to the fd `to`, at its offset: copied by the kernel (sendfile), or
// by pread and write where the kernel cannot splice into `to` (e.g. an O_APPEND file). Stops
// early, without error, when the file ends first. Retries EINTR and short writes. `from.fd`'s
// own offset is left alone.
SpanCopy copySpan(const FileSpan& from, int to);

// When `fd` is a pipe, asks the kernel to give it a buffer of up to 1 MiB (the default 64 KiB
// makes a fast writer and its reader wake each other up 16 times as often: `nar dump` into a
// pipe took 3x as long). Best effort: nothing happens otherwise.
void growPipe(int fd);

// Owns a file descriptor and closes it on destruction (or reset()). Move-only. -1 = none.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Reads a file descriptor (not owned, not closed). Retries EINTR.
class FdSource final : public Source {
 public:
  explicit FdSource(int fd) : fd_(fd) {}
  Result<std::size_t> read(MutableBytes out) override;

 private:
  int fd_;
};

// A regular file read through a read-only shared mapping, from the fd's offset to the file's
// end as it was when mapped: it reads in place and gives file spans (see Source). release()
// unmaps the pages behind the reader (they stay in the page cache), so the process's memory
// stays bounded by what is in use rather than by the file's size. The fd is not owned, must
// stay open while the source lives, and its offset is left alone. The file must not shrink
// while mapped: touching a page past its new end raises SIGBUS.
class MappedFileSource final : public Source {
 public:
  // nullptr when `fd` cannot be mapped (not a regular file, nothing past its offset, mmap
  // refused): read it with an FdSource instead.
  static std::unique_ptr<MappedFileSource> tryMap(int fd);
  ~MappedFileSource() override;
  MappedFileSource(const MappedFileSource&) = delete;
  MappedFileSource& operator=(const MappedFileSource&) = delete;

  Result<std::size_t> read(MutableBytes out) override;
  bool readsInPlace() const override { return true; }
  Bytes readInPlace(std::size_t max) override;
  void release(const std::byte* p) override;
  std::optional<FileSpan> fileSpan(Bytes in_place) const override;

 private:
  MappedFileSource(int fd, std::byte* map, std::size_t map_size, std::size_t start)
      : fd_(fd), map_(map), map_size_(map_size), pos_(start) {}
  int fd_;
  std::byte* map_;
  std::size_t map_size_;
  std::size_t pos_;           // next byte to hand out
  std::size_t released_ = 0;  // bytes before this (page-aligned) were given back
};

// Writes to a file descriptor (not owned, not closed). Retries EINTR and short writes;
// ENOSPC comes back as ResourceExhausted.
class FdSink final : public Sink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  Status write(Bytes data) override;
  bool takesSpans() const override { return true; }
  Result<std::uint64_t> writeSpan(const FileSpan& span) override;

 private:
  int fd_;
};

// Reads from memory that outlives it.
class MemorySource final : public Source {
 public:
  explicit MemorySource(Bytes data) : data_(data) {}
  explicit MemorySource(std::string_view data) : data_(asBytes(data)) {}
  Result<std::size_t> read(MutableBytes out) override;

 private:
  Bytes data_;
  std::size_t pos_ = 0;
};

// Appends everything to a string.
class StringSink final : public Sink {
 public:
  Status write(Bytes data) override {
    text.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }
  std::string text;
};

// Counts bytes and discards them.
class CountingSink final : public Sink {
 public:
  Status write(Bytes data) override {
    count += data.size();
    return {};
  }
  std::uint64_t count = 0;
};

// Writes everything to two sinks (neither owned); finish() finishes both.
class TeeSink final : public Sink {
 public:
  TeeSink(Sink& a, Sink& b) : a_(a), b_(b) {}
  Status write(Bytes data) override;
  Status finish() override;

 private:
  Sink& a_;
  Sink& b_;
};

// Gathers small writes into a buffer of `capacity` bytes before passing them to `out` (not
// owned); writes larger than the buffer go straight through. finish() flushes and finishes `out`.
// Destroying it without finish() or flush() drops what is buffered.
class BufferedSink final : public Sink {
 public:
  explicit BufferedSink(Sink& out, std::size_t capacity = 1 << 20);
  Status write(Bytes data) override;
  // A span goes straight to `out` when it takes spans (after what is buffered).
  bool takesSpans() const override { return out_.takesSpans(); }
  Result<std::uint64_t> writeSpan(const FileSpan& span) override;
  Status flush();
  Status finish() override;

 private:
  Sink& out_;
  std::string buffer_;
  std::size_t capacity_;
};

// Copies a whole source into a sink in buffered chunks (does not call finish()).
// Returns the number of bytes copied.
Result<std::uint64_t> copyStream(Source& from, Sink& to);

// The whole contents of a file (a small one: a .drv, a key, a token). NotFound when it does not
// exist, IoError otherwise; the message names the file and the system's reason.
Result<std::string> readFileContents(const std::string& path);

}  // namespace narcache
