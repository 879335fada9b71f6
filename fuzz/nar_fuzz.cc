// libFuzzer target for the NAR reader: validateNar and narListing on arbitrary bytes. Both must
// return a value or an error, never crash, and agree on whether the input is a NAR.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "narcache/narinfo/io.h"
#include "narcache/narinfo/nar.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  narcache::MemorySource validate_source(input);
  auto valid = narcache::validateNar(validate_source);
  narcache::MemorySource listing_source(input);
  auto listing = narcache::narListing(listing_source);
  if (valid.has_value() != listing.has_value()) std::abort();
  if (valid && *valid != size) std::abort();
  if (!valid && valid.error().message() != listing.error().message()) std::abort();
  return 0;
}
