#include "background_sink.h"

namespace narcache::cli {

BackgroundSink::BackgroundSink(Sink& out, std::size_t buffer_size, std::size_t depth)
    : out_(out), buffer_size_(buffer_size), depth_(depth) {
  current_.reserve(buffer_size_);
  worker_ = std::jthread([this] { work(); });
}

BackgroundSink::~BackgroundSink() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  changed_.notify_all();
}  // worker_ joins here, after draining the queue

Status BackgroundSink::write(Bytes data) {
  while (!data.empty()) {
    std::size_t n = std::min(data.size(), buffer_size_ - current_.size());
    current_.append(reinterpret_cast<const char*>(data.data()), n);
    data = data.subspan(n);
    if (current_.size() == buffer_size_) NARCACHE_TRY(handOver());
  }
  return {};
}

Status BackgroundSink::handOver() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return queue_.size() < depth_ || error_; });
  if (error_) return fail(*error_);
  queue_.push_back(std::move(current_));
  changed_.notify_all();
  lock.unlock();
  current_ = std::string();
  current_.reserve(buffer_size_);
  return {};
}

Status BackgroundSink::finish() {
  if (!current_.empty()) NARCACHE_TRY(handOver());
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return (queue_.empty() && !busy_) || error_; });
  if (error_) return fail(*error_);
  return {};
}

void BackgroundSink::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return !queue_.empty() || closing_; });
    if (queue_.empty()) return;  // closing and drained
    std::string buffer = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    const bool failed = error_.has_value();  // after an error, drain without writing
    changed_.notify_all();
    lock.unlock();
    Status s = failed ? Status{} : out_.write(asBytes(buffer));
    lock.lock();
    busy_ = false;
    if (!s && !error_) error_ = s.error();
    changed_.notify_all();
  }
}

}  // namespace narcache::cli
