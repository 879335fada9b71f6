#pragma once
// The text of an errno value ("No such file or directory"), for the agent's error messages.
// Through std::generic_category rather than strerror, which is not thread-safe.

#include <string>
#include <system_error>

namespace narcache::agent {

inline std::string errnoText(int err) {
  return std::error_code(err, std::generic_category()).message();
}

}  // namespace narcache::agent
