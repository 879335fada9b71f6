// Parsing and formatting of GC policy values (see gc.h).

#include <charconv>
#include <cstdio>

#include "narcache/gc/gc.h"

namespace narcache::gc {

Result<std::int64_t> parseDuration(std::string_view text) {
  auto bad = [&] {
    return fail(ErrorCode::kInvalidArgument,
                "'" + std::string(text.substr(0, 100)) +
                    "' is not a duration (like 30d, 12h, 90m, 45s, 2w or seconds)");
  };
  if (text.empty()) return bad();
  std::int64_t unit = 1;
  std::string_view digits = text;
  switch (text.back()) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    case 'w': unit = 7 * 86400; break;
    default:
      if (text.back() < '0' || text.back() > '9') return bad();
      digits = text;
      unit = 1;
      break;
  }
  if (text.back() < '0' || text.back() > '9') digits = text.substr(0, text.size() - 1);
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size() || v < 0) {
    return bad();
  }
  if (v > (std::int64_t{1} << 40) / unit) return bad();
  return v * unit;
}

Result<std::uint64_t> parseSize(std::string_view text) {
  auto bad = [&] {
    return fail(ErrorCode::kInvalidArgument, "'" + std::string(text.substr(0, 100)) +
                                                 "' is not a size (like 10G, 500M, 64K or bytes)");
  };
  std::string_view s = text;
  if (s.size() >= 2 && (s.substr(s.size() - 2) == "iB" || s.substr(s.size() - 2) == "ib")) {
    s.remove_suffix(2);
  } else if (!s.empty() && (s.back() == 'B' || s.back() == 'b')) {
    s.remove_suffix(1);
  }
  if (s.empty()) return bad();
  int shift = 0;
  switch (s.back()) {
    case 'K':
    case 'k': shift = 10; break;
    case 'M':
    case 'm': shift = 20; break;
    case 'G':
    case 'g': shift = 30; break;
    case 'T':
    case 't': shift = 40; break;
    default: break;
  }
  if (shift != 0) s.remove_suffix(1);
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return bad();
  if (shift != 0 && v > (std::uint64_t{1} << (63 - shift))) return bad();
  return v << shift;
}

std::string formatBytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

std::string formatDuration(std::int64_t seconds) {
  if (seconds % 86400 == 0 && seconds != 0) return std::to_string(seconds / 86400) + "d";
  if (seconds % 3600 == 0 && seconds != 0) return std::to_string(seconds / 3600) + "h";
  if (seconds % 60 == 0 && seconds != 0) return std::to_string(seconds / 60) + "m";
  return std::to_string(seconds) + "s";
}

}  // namespace narcache::gc
