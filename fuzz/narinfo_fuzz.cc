// libFuzzer target for NarInfo::parse. Whatever the input, parse must not crash; when it
// succeeds, serialising and re-parsing must be a fixed point: parse(toString()) succeeds, gives
// the same text again and the same fingerprint. Seed corpus: tests/data/fuzz/narinfo/.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "narcache/narinfo/narinfo.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto info = narcache::NarInfo::parse(text, "fuzz.narinfo");
  if (!info) return 0;
  const std::string first = info->toString();
  auto again = narcache::NarInfo::parse(first, "fuzz.narinfo");
  if (!again) {
    std::fprintf(stderr, "serialised narinfo does not parse: %s\n--- text ---\n%s",
                 again.error().message().c_str(), first.c_str());
    std::abort();
  }
  if (again->toString() != first || again->fingerprint() != info->fingerprint()) {
    std::fprintf(stderr, "round trip is not stable\n--- first ---\n%s--- second ---\n%s",
                 first.c_str(), again->toString().c_str());
    std::abort();
  }
  return 0;
}
