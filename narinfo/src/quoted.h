#pragma once
// quoted(text): "'text'", for error messages that name a value. Private to narinfo/src.

#include <string>
#include <string_view>

namespace narcache {

inline std::string quoted(std::string_view text) {
  std::string out = "'";
  out += text;
  out += "'";
  return out;
}

}  // namespace narcache
