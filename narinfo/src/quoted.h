#pragma once
// quoted(text): "'text'", for error messages that name a value, with control bytes (NUL, CR,
// newline, ESC...) shown as \xNN so that a message stays one readable line whatever the value
// holds (a NUL would end it where printed with %s). Private to narinfo/src.

#include <string>
#include <string_view>

namespace narcache {

inline std::string quoted(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  out += "'";
  return out;
}

}  // namespace narcache
