#pragma once
// BodyPipe: hands a request body pushed by the HTTP library (a callback per received chunk) to
// a consumer that pulls it as a Source on another thread, through a bounded buffer, so that an
// upload of any size streams to the store in constant memory.
//
// The producer calls push() for every chunk and then close() (whole body received) or
// abort() (connection broken, body truncated); the consumer reads until end of stream, where an
// aborted body reads as an InvalidArgument ("request body truncated": the client's fault, a
// 400). If the consumer gives up early it calls cancel(): further push() calls return false so
// that the producer stops reading.
// Thread-safe between exactly one producer and one consumer.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>

#include "narcache/narinfo/io.h"

namespace narcache::narstore {

class BodyPipe {
 public:
  explicit BodyPipe(std::size_t capacity = 4 << 20) : capacity_(capacity) {}

  // Producer side. push() blocks while the buffer is full; false once the consumer cancelled.
  bool push(const char* data, std::size_t size);
  void close();
  void abort();

  // Consumer side.
  Result<std::size_t> read(MutableBytes out);
  void cancel();

  // A Source reading from the pipe (consumer side).
  class Reader final : public Source {
   public:
    explicit Reader(BodyPipe& pipe) : pipe_(pipe) {}
    Result<std::size_t> read(MutableBytes out) override { return pipe_.read(out); }

   private:
    BodyPipe& pipe_;
  };

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::string> chunks_;  // guarded by mutex_
  std::size_t offset_ = 0;          // read offset into chunks_.front()
  std::size_t buffered_ = 0;
  std::size_t capacity_;
  bool closed_ = false;
  bool aborted_ = false;
  bool cancelled_ = false;
};

}  // namespace narcache::narstore
