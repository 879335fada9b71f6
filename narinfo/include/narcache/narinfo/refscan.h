#pragma once
// Reference scanning: which of a set of candidate store path hash parts occur in a byte stream,
// as Nix finds the references of a build output (it scans the NAR for the 32-char nix32 hash
// parts of candidate paths). Matches across write() boundaries are found. Throughput is in the
// GB/s class: the scanner skips ahead over bytes that cannot be inside a hash part.
// Single-threaded Sink.

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
  void scan(const char* data, std::size_t size);

  std::unordered_set<std::string> pending_;
  std::unordered_set<std::string> found_;
  std::string tail_;  // last up-to-31 bytes of the previous write, for boundary matches
};

}  // namespace narcache
