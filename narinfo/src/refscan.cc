#include "narcache/narinfo/refscan.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "narcache/narinfo/encoding.h"

namespace narcache {

namespace {

constexpr std::size_t kHashLen = 32;  // nix32 characters of a store path hash part

// kIsNix32[c] is true for the 32 characters of the nix32 alphabet.
constexpr std::array<bool, 256> makeNix32Table() {
  std::array<bool, 256> table{};
  for (char c : kNix32Alphabet) table[static_cast<unsigned char>(c)] = true;
  return table;
}
constexpr std::array<bool, 256> kIsNix32 = makeNix32Table();

// Hash of a window's first 8 bytes; the top bits index the filter and the slot table. The
// 8 characters carry 40 bits of a (uniformly random) store path hash, plenty to spread 1,000s.
inline std::uint64_t prefixHash(const unsigned char* p) {
  std::uint64_t x;
  std::memcpy(&x, p, sizeof x);
  return x * 0x9E3779B97F4A7C15ull;
}

unsigned log2Ceil(std::size_t n) {
  unsigned bits = 0;
  while ((std::size_t{1} << bits) < n) ++bits;
  return bits;
}

}  // namespace

Result<RefScanner> RefScanner::create(const std::vector<std::string>& candidate_hash_parts) {
  RefScanner scanner;
  std::vector<std::string> unique;
  for (const auto& c : candidate_hash_parts) {
    bool ok = c.size() == kHashLen && std::all_of(c.begin(), c.end(), [](char ch) {
                return kIsNix32[static_cast<unsigned char>(ch)];
              });
    if (!ok) {
      return fail(ErrorCode::kInvalidArgument,
                  "reference candidate '" + c + "': not a 32-character nix32 hash part");
    }
    unique.push_back(c);
  }
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());

  // 64 filter bits per candidate (at least 2^16): ~1.5% of windows pass to the slot table.
  unsigned filter_bits = std::max(16u, log2Ceil(unique.size() * 64));
  scanner.filter_.assign((std::size_t{1} << filter_bits) / 64, 0);
  scanner.filter_shift_ = 64 - filter_bits;
  // Slot table at most half full.
  unsigned slot_bits = std::max(4u, log2Ceil(unique.size() * 2));
  scanner.slots_.assign(std::size_t{1} << slot_bits, 0);
  scanner.slot_shift_ = 64 - slot_bits;
  std::size_t slot_mask = scanner.slots_.size() - 1;

  for (std::size_t i = 0; i < unique.size(); ++i) {
    scanner.candidates_ += unique[i];
    auto h = prefixHash(reinterpret_cast<const unsigned char*>(unique[i].data()));
    std::uint64_t bit = h >> scanner.filter_shift_;
    scanner.filter_[bit / 64] |= std::uint64_t{1} << (bit % 64);
    std::size_t slot = h >> scanner.slot_shift_;
    while (scanner.slots_[slot] != 0) slot = (slot + 1) & slot_mask;
    scanner.slots_[slot] = static_cast<std::uint32_t>(i + 1);
  }
  return scanner;
}

Status RefScanner::write(Bytes data) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t n = data.size();
  if (n == 0 || candidates_.empty()) return {};
  if (!tail_.empty()) {
    // Windows that start in the previous writes and end in this one: the tail (< 32 bytes)
    // joined with at most 31 new bytes holds all of them.
    std::size_t take = std::min(n, kHashLen - 1);
    std::array<unsigned char, 2 * kHashLen> joined;
    std::memcpy(joined.data(), tail_.data(), tail_.size());
    std::memcpy(joined.data() + tail_.size(), p, take);
    scan(joined.data(), tail_.size() + take);
  }
  scan(p, n);
  if (n >= kHashLen - 1) {
    tail_.assign(reinterpret_cast<const char*>(p + n - (kHashLen - 1)), kHashLen - 1);
  } else {
    tail_.append(reinterpret_cast<const char*>(p), n);
    if (tail_.size() > kHashLen - 1) tail_.erase(0, tail_.size() - (kHashLen - 1));
  }
  return {};
}

// Looks a 32-byte window of nix32 characters up among the candidates.
inline void RefScanner::check(const unsigned char* window) {
  auto h = prefixHash(window);
  std::uint64_t bit = h >> filter_shift_;
  if ((filter_[bit / 64] & (std::uint64_t{1} << (bit % 64))) == 0) return;
  std::size_t mask = slots_.size() - 1;
  for (std::size_t slot = h >> slot_shift_; slots_[slot] != 0; slot = (slot + 1) & mask) {
    const char* c = candidates_.data() + (slots_[slot] - 1) * kHashLen;
    if (std::memcmp(c, window, kHashLen) == 0) {
      found_.emplace(c, kHashLen);
      return;
    }
  }
}

// Nix's scan (libstore/references.cc), plus a run mode. To test the window starting at i,
// look backwards from its last byte: a non-nix32 byte at i + j rules out every window
// starting at or before it, so jump to i + j + 1 (32 bytes at a time over ordinary text).
// Once a whole window is nix32, slide one byte at a time checking only the byte that enters,
// so long runs of nix32 characters (hex, base32, lowercase words) cost one lookup per byte.
void RefScanner::scan(const unsigned char* data, std::size_t size) {
  std::size_t i = 0;
  while (i + kHashLen <= size) {
    std::size_t j = kHashLen;
    while (j > 0 && kIsNix32[data[i + j - 1]]) --j;
    if (j > 0) {
      i += j;
      continue;
    }
    for (;;) {
      check(data + i);
      if (i + kHashLen >= size) return;
      if (!kIsNix32[data[i + kHashLen]]) {
        i += kHashLen + 1;
        break;
      }
      ++i;
    }
  }
}

}  // namespace narcache
