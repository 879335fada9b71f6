#include "body_pipe.h"

#include <algorithm>
#include <cstring>

namespace narcache::narstore {

bool BodyPipe::push(const char* data, std::size_t size) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return cancelled_ || buffered_ < capacity_; });
  if (cancelled_) return false;
  chunks_.emplace_back(data, size);
  buffered_ += size;
  changed_.notify_all();
  return true;
}

void BodyPipe::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  changed_.notify_all();
}

void BodyPipe::abort() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  aborted_ = true;
  changed_.notify_all();
}

void BodyPipe::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  chunks_.clear();
  buffered_ = 0;
  changed_.notify_all();
}

Result<std::size_t> BodyPipe::read(MutableBytes out) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !chunks_.empty() || closed_; });
  if (chunks_.empty()) {
    if (aborted_) return fail(ErrorCode::kInvalidArgument, "request body truncated");
    return 0;
  }
  std::size_t done = 0;
  while (done < out.size() && !chunks_.empty()) {
    const std::string& chunk = chunks_.front();
    std::size_t n = std::min(out.size() - done, chunk.size() - offset_);
    std::memcpy(out.data() + done, chunk.data() + offset_, n);
    done += n;
    offset_ += n;
    buffered_ -= n;
    if (offset_ == chunk.size()) {
      chunks_.pop_front();
      offset_ = 0;
    }
  }
  changed_.notify_all();
  return done;
}

}  // namespace narcache::narstore
