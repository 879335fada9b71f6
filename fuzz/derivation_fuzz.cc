// libFuzzer target for parseDerivation. Whatever the input, parsing must not crash; when it
// succeeds, writing must give the input back byte for byte (the parser accepts only the
// canonical form), and the store path computations must not crash either.
// Seed corpus: tests/data/fuzz/derivation/.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "narcache/narinfo/derivation.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto drv = narcache::parseDerivation(text);
  if (!drv) return 0;
  const std::string written = narcache::writeDerivation(*drv);
  if (written != text) {
    std::fprintf(stderr, "round trip differs\n--- input ---\n%.*s\n--- written ---\n%s\n",
                 static_cast<int>(text.size()), text.data(), written.c_str());
    std::abort();
  }
  (void)narcache::derivationStorePath(*drv, "/nix/store");
  (void)narcache::hashDerivationModulo(*drv, "/nix/store", nullptr, true);
  return 0;
}
