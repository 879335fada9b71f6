#pragma once
// Error and Result: the one error value type of every narcache module.
//
// A Result<T> holds either a T or an Error. Expected outcomes (a cache miss, a duplicate upload,
// malformed input) are returned as values; exceptions never cross a module's public API.
// An Error carries a code that callers branch on and a message for humans that names the
// context, e.g. "x.narinfo line 3: NarHash: not a sha256 hash". Thread-compatible value types.

#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <utility>

namespace narcache {

enum class ErrorCode {
  kNotFound,
  kAlreadyExists,
  kInvalidArgument,  // malformed input: narinfo, NAR, URL, flag
  kCorruption,       // stored or transferred data does not match its hash/size
  kIoError,
  kResourceExhausted,  // disk full, map full, too large
  kUnavailable,        // network peer down; worth retrying
  kPermissionDenied,   // missing or wrong credentials
  kConflict,           // consistent request that contradicts the current state
  kInternal,
};

// Short lowercase name of a code ("not found", "invalid argument", ...).
std::string_view errorCodeName(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "<context>: <message>"; the code is kept.
  Error withContext(std::string_view context) const;

 private:
  ErrorCode code_;
  std::string message_;
};

template <typename T>
using Result = tl::expected<T, Error>;

// Result of an operation that yields nothing but may fail.
using Status = Result<void>;

inline tl::unexpected<Error> fail(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error(code, std::move(message)));
}
inline tl::unexpected<Error> fail(Error error) {
  return tl::unexpected<Error>(std::move(error));
}

}  // namespace narcache

// Propagates an error: `NARCACHE_TRY(status_expr);` returns the Error from the enclosing function.
// The temporary is named after the line so that nested uses (in a lambda) do not shadow it.
#define NARCACHE_TRY_CONCAT_(a, b) a##b
#define NARCACHE_TRY_NAME_(line) NARCACHE_TRY_CONCAT_(narcache_try_result_, line)
#define NARCACHE_TRY(expr) NARCACHE_TRY_IMPL_(expr, NARCACHE_TRY_NAME_(__LINE__))
#define NARCACHE_TRY_IMPL_(expr, name)                  \
  do {                                                  \
    auto&& name = (expr);                               \
    if (!name) {                                        \
      return ::narcache::fail(std::move(name).error()); \
    }                                                   \
  } while (0)
