#include "narcache/narinfo/io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace narcache {

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Status Source::readExact(MutableBytes out) {
  std::size_t done = 0;
  while (done < out.size()) {
    auto n = read(out.subspan(done));
    if (!n) return fail(n.error());
    if (*n == 0) return fail(ErrorCode::kInvalidArgument, "unexpected end of stream");
    done += *n;
  }
  return {};
}

std::unique_ptr<MappedFileSource> MappedFileSource::tryMap(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return nullptr;
  off_t offset = ::lseek(fd, 0, SEEK_CUR);
  if (offset < 0 || offset >= st.st_size) return nullptr;
  auto size = static_cast<std::size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return nullptr;
  ::madvise(map, size, MADV_SEQUENTIAL);
  return std::unique_ptr<MappedFileSource>(new MappedFileSource(
      fd, static_cast<std::byte*>(map), size, static_cast<std::size_t>(offset)));
}

MappedFileSource::~MappedFileSource() {
  ::munmap(map_, map_size_);
}

Result<std::size_t> MappedFileSource::read(MutableBytes out) {
  Bytes in = readInPlace(out.size());
  if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
  return in.size();
}

Bytes MappedFileSource::readInPlace(std::size_t max) {
  std::size_t n = std::min(max, map_size_ - pos_);
  Bytes out(map_ + pos_, n);
  pos_ += n;
  return out;
}

void MappedFileSource::release(const std::byte* p) {
  static const auto kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  auto at = reinterpret_cast<std::uintptr_t>(p), base = reinterpret_cast<std::uintptr_t>(map_);
  if (at < base || at > base + map_size_) return;  // not in the mapping
  std::size_t end = (at - base) / kPage * kPage;
  if (end > released_) {
    ::madvise(map_ + released_, end - released_, MADV_DONTNEED);
    released_ = end;
  }
}

std::optional<FileSpan> MappedFileSource::fileSpan(Bytes in_place) const {
  auto at = reinterpret_cast<std::uintptr_t>(in_place.data());
  auto base = reinterpret_cast<std::uintptr_t>(map_);
  if (at < base || at - base > map_size_ || in_place.size() > map_size_ - (at - base)) {
    return std::nullopt;  // not bytes of the mapping
  }
  return FileSpan{fd_, at - base, in_place.size()};
}

Result<std::size_t> FdSource::read(MutableBytes out) {
  for (;;) {
    ssize_t n = ::read(fd_, out.data(), out.size());
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    return fail(ErrorCode::kIoError, std::string("read: ") + std::strerror(errno));
  }
}

namespace {

// "write: <text>" (ResourceExhausted for a full disk or quota, else IoError), or "read: ...".
Error ioError(int err, bool reading = false) {
  bool full = !reading && (err == ENOSPC || err == EDQUOT);
  return Error(full ? ErrorCode::kResourceExhausted : ErrorCode::kIoError,
               std::string(reading ? "read: " : "write: ") + std::strerror(err));
}

}  // namespace

int writeAll(int fd, Bytes data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data = data.subspan(static_cast<std::size_t>(n));
  }
  return 0;
}

Result<std::uint64_t> Sink::writeSpan(const FileSpan&) {
  return fail(ErrorCode::kInternal, "this sink takes no file spans");
}

SpanCopy copySpan(const FileSpan& from, int to) {
  SpanCopy done;
  auto offset = static_cast<off_t>(from.offset);
  std::vector<std::byte> buffer;  // once the kernel has refused to splice into `to`
  while (done.bytes < from.size) {
    // At most 1 GiB a call (sendfile moves less than 2 GiB).
    auto want = static_cast<std::size_t>(
        std::min<std::uint64_t>(from.size - done.bytes, std::uint64_t{1} << 30));
    ssize_t n = 0;
    if (buffer.empty()) {
      n = ::sendfile(to, from.fd, &offset, want);
      if (n < 0 && (errno == EINVAL || errno == ENOSYS) && done.bytes == 0) {
        buffer.resize(std::size_t{256} << 10);
        continue;
      }
      if (n < 0 && errno != EINTR) {
        done.error = errno;
        return done;
      }
    } else {
      n = ::pread(from.fd, buffer.data(), std::min(want, buffer.size()), offset);
      if (n < 0 && errno != EINTR) {
        done.error = errno;
        done.reading = true;
        return done;
      }
      if (n > 0) {
        done.error = writeAll(to, Bytes(buffer.data(), static_cast<std::size_t>(n)));
        if (done.error != 0) return done;
        offset += n;
      }
    }
    if (n == 0) return done;  // the file ended
    if (n > 0) done.bytes += static_cast<std::uint64_t>(n);
  }
  return done;
}

void growPipe(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  if (::fcntl(fd, F_GETPIPE_SZ) < (1 << 20)) ::fcntl(fd, F_SETPIPE_SZ, 1 << 20);
}

Status FdSink::write(Bytes data) {
  if (int err = writeAll(fd_, data); err != 0) return fail(ioError(err));
  return {};
}

Result<std::uint64_t> FdSink::writeSpan(const FileSpan& span) {
  SpanCopy done = copySpan(span, fd_);
  if (done.error != 0) return fail(ioError(done.error, done.reading));
  return done.bytes;
}

Result<std::size_t> MemorySource::read(MutableBytes out) {
  std::size_t n = std::min(out.size(), data_.size() - pos_);
  std::memcpy(out.data(), data_.data() + pos_, n);
  pos_ += n;
  return n;
}

Status TeeSink::write(Bytes data) {
  NARCACHE_TRY(a_.write(data));
  return b_.write(data);
}

Status TeeSink::finish() {
  NARCACHE_TRY(a_.finish());
  return b_.finish();
}

BufferedSink::BufferedSink(Sink& out, std::size_t capacity) : out_(out), capacity_(capacity) {
  buffer_.reserve(capacity);
}

Status BufferedSink::write(Bytes data) {
  if (buffer_.size() + data.size() > capacity_) {
    NARCACHE_TRY(flush());
    if (data.size() >= capacity_) return out_.write(data);
  }
  buffer_.append(reinterpret_cast<const char*>(data.data()), data.size());
  return {};
}

Result<std::uint64_t> BufferedSink::writeSpan(const FileSpan& span) {
  NARCACHE_TRY(flush());
  return out_.writeSpan(span);
}

Status BufferedSink::flush() {
  if (buffer_.empty()) return {};
  NARCACHE_TRY(out_.write(asBytes(buffer_)));
  buffer_.clear();
  return {};
}

Status BufferedSink::finish() {
  NARCACHE_TRY(flush());
  return out_.finish();
}

Result<std::uint64_t> copyStream(Source& from, Sink& to) {
  std::vector<std::byte> buf(256 * 1024);
  std::uint64_t total = 0;
  for (;;) {
    auto n = from.read(buf);
    if (!n) return fail(n.error());
    if (*n == 0) return total;
    NARCACHE_TRY(to.write(Bytes(buf.data(), *n)));
    total += *n;
  }
}

Result<std::string> readFileContents(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    return fail(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                "cannot open '" + path + "': " + std::strerror(err));
  }
  FdSource source(fd.get());
  StringSink sink;
  auto copied = copyStream(source, sink);
  if (!copied) return fail(copied.error().withContext(path));
  return std::move(sink.text);
}

}  // namespace narcache
