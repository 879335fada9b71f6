#include "narcache/narinfo/io.h"

#include <sys/mman.h>
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

Status FdSink::write(Bytes data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      return fail(
          err == ENOSPC || err == EDQUOT ? ErrorCode::kResourceExhausted : ErrorCode::kIoError,
          std::string("write: ") + std::strerror(err));
    }
    data = data.subspan(static_cast<std::size_t>(n));
  }
  return {};
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

}  // namespace narcache
