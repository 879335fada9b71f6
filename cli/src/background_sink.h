#pragma once
// BackgroundSink: passes everything written to it on to another Sink on a worker thread, so that
// producing the bytes (e.g. reading a file tree for a NAR) and consuming them (hashing,
// writing to a pipe) overlap on two cores. Writes are gathered into buffers of `buffer_size`
// bytes; at most `depth` full buffers wait for the worker, so memory stays bounded.
// Thread-safety: write()/finish() from one producer thread only. The first error of the
// downstream sink is returned by a later write() or by finish(). finish() does not finish the
// downstream sink. The destructor stops and joins the worker.

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "narcache/narinfo/io.h"

namespace narcache::cli {

class BackgroundSink final : public Sink {
 public:
  explicit BackgroundSink(Sink& out, std::size_t buffer_size = 1 << 20, std::size_t depth = 4);
  ~BackgroundSink() override;
  BackgroundSink(const BackgroundSink&) = delete;
  BackgroundSink& operator=(const BackgroundSink&) = delete;

  Status write(Bytes data) override;
  // Waits until the worker has written everything; returns the first downstream error.
  Status finish() override;

 private:
  Status handOver();  // queues current_ for the worker
  void work();

  Sink& out_;
  std::size_t buffer_size_;
  std::size_t depth_;
  std::string current_;  // producer-owned buffer being filled

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::string> queue_;  // guarded by mutex_
  std::optional<Error> error_;     // guarded by mutex_
  bool closing_ = false;           // guarded by mutex_
  bool busy_ = false;              // guarded by mutex_: worker is writing a buffer
  std::jthread worker_;
};

}  // namespace narcache::cli
