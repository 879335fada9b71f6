#include "narcache/narinfo/io.h"

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
