#pragma once
// Guarded<T>: a value reachable only while holding its mutex. lock() returns a handle that
// behaves like a pointer to the value and releases the mutex when it goes out of scope.
// Thread-safe by construction.

#include <mutex>
#include <utility>

namespace narcache::narstore {

template <typename T>
class Guarded {
 public:
  class Locked {
   public:
    explicit Locked(Guarded& g) : lock_(g.mutex_), value_(&g.value_) {}
    T& operator*() { return *value_; }
    T* operator->() { return value_; }

   private:
    std::unique_lock<std::mutex> lock_;
    T* value_;
  };

  Guarded() = default;
  explicit Guarded(T value) : value_(std::move(value)) {}
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;

  Locked lock() { return Locked(*this); }

 private:
  std::mutex mutex_;
  T value_;
};

}  // namespace narcache::narstore
