#include "narcache/narinfo/error.h"

namespace narcache {

std::string_view errorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kAlreadyExists: return "already exists";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kCorruption: return "corruption";
    case ErrorCode::kIoError: return "I/O error";
    case ErrorCode::kResourceExhausted: return "resource exhausted";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kPermissionDenied: return "permission denied";
    case ErrorCode::kConflict: return "conflict";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

Error Error::withContext(std::string_view context) const {
  std::string message(context);
  message += ": ";
  message += message_;
  return Error(code_, std::move(message));
}

}  // namespace narcache
