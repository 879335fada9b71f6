#pragma once
// Reference scanning: which of a set of candidate store path hash parts occur in a byte stream,
// as Nix finds the references of a build output (it scans the NAR for the 32-char nix32 hash
// parts of candidate paths). Matches across write() boundaries are found. Throughput is in the
// GB/s class: the scanner skips ahead over bytes that cannot be inside a hash part.
// Single-threaded Sink.

#include <cstdint>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache {

class RefScanner final : public Sink {
 public:
  // Each candidate must be a 32-char nix32 hash part (InvalidArgument otherwise, from create()).
  static Result<RefScanner> create(const std::vector<std::string>& candidate_hash_parts);

  Status write(Bytes data) override;
  // The candidates seen so far, sorted.
  std::set<std::string> found() const { return {found_.begin(), found_.end()}; }

 private:
  RefScanner() = default;
  void scan(const unsigned char* data, std::size_t size);
  void check(const unsigned char* window);

  // The candidates, 32 bytes each, back to back.
  std::string candidates_;
  // Bit i is set when some candidate's first 8 bytes hash to i: rejects most windows with one
  // load from a table that stays in L1.
  std::vector<std::uint64_t> filter_;
  unsigned filter_shift_ = 0;  // 64 - log2(filter bits)
  // Open addressing by the same hash: candidate index + 1, 0 for an empty slot.
  std::vector<std::uint32_t> slots_;
  unsigned slot_shift_ = 0;  // 64 - log2(slots)
  std::unordered_set<std::string> found_;
  std::string tail_;  // last up-to-31 bytes written so far, for matches across writes
};

}  // namespace narcache
