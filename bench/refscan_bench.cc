// Measures RefScanner throughput against a naive scan in the same run.
//
//   bench_refscan_bench [SIZE_MB] [CANDIDATES]     (defaults: 1024 MB, 1000 candidates)
//
// Two inputs of SIZE_MB each: "text" (pseudo-random printable text with paths, as in a NAR of
// scripts and binaries) and "nix32" (every byte a nix32 character: the worst case, where no
// window can be skipped). Each has a few candidate hashes embedded. The naive scan looks up
// every 32-byte window in an unordered_set<string_view>; both must find the same hashes.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/refscan.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string randomHash(std::mt19937_64& rng) {
  std::string s(32, '0');
  for (auto& c : s) c = narcache::kNix32Alphabet[rng() % narcache::kNix32Alphabet.size()];
  return s;
}

std::string makeInput(std::size_t size, bool dense, const std::vector<std::string>& cands,
                      std::mt19937_64& rng) {
  std::string text(size, ' ');
  if (dense) {
    for (auto& c : text) c = narcache::kNix32Alphabet[rng() & 31];
  } else {
    // Words of mixed case and punctuation: runs of nix32 characters are short, as in text.
    static const std::string kAlphabet =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n/-._=:;\"'()";
    std::uint64_t bits = 0;
    int left = 0;
    for (auto& c : text) {
      if (left == 0) {
        bits = rng();
        left = 9;
      }
      c = kAlphabet[(bits & 127) % kAlphabet.size()];
      bits >>= 7;
      --left;
    }
    for (std::size_t pos = 0; pos + 64 < size; pos += 4096 + rng() % 8192) {
      std::string path = "/nix/store/" + randomHash(rng) + "-x";
      text.replace(pos, path.size(), path);
    }
  }
  // A few real references.
  for (int i = 0; i < 8 && size > 64; ++i) {
    std::size_t pos = rng() % (size - 40);
    text.replace(pos, 32, cands[rng() % cands.size()]);
  }
  return text;
}

std::set<std::string> naiveScan(std::string_view text,
                                const std::unordered_set<std::string_view>& cands) {
  std::set<std::string> found;
  for (std::size_t i = 0; i + 32 <= text.size(); ++i) {
    auto it = cands.find(text.substr(i, 32));
    if (it != cands.end()) found.emplace(*it);
  }
  return found;
}

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int run(std::size_t size_mb, std::size_t n_cands) {
  std::mt19937_64 rng(1);
  std::vector<std::string> cands;
  for (std::size_t i = 0; i < n_cands; ++i) cands.push_back(randomHash(rng));
  std::unordered_set<std::string_view> cand_set(cands.begin(), cands.end());
  auto scanner_or = narcache::RefScanner::create(cands);
  if (!scanner_or) {
    std::fprintf(stderr, "create: %s\n", scanner_or.error().message().c_str());
    return 1;
  }
  const std::size_t size = size_mb << 20;
  const double gb = static_cast<double>(size) / 1e9;
  std::printf("refscan: %zu MB input, %zu candidates\n", size_mb, n_cands);

  int status = 0;
  for (bool dense : {false, true}) {
    std::string text = makeInput(size, dense, cands, rng);

    auto scanner = narcache::RefScanner::create(cands).value();
    auto t0 = Clock::now();
    // 1 MiB writes, as a NAR stream arrives.
    constexpr std::size_t kChunk = 1 << 20;
    for (std::size_t pos = 0; pos < text.size(); pos += kChunk) {
      auto piece = std::string_view(text).substr(pos, kChunk);
      if (!scanner.write(narcache::asBytes(piece))) return 1;
    }
    auto t1 = Clock::now();
    auto found = scanner.found();

    auto t2 = Clock::now();
    auto naive = naiveScan(text, cand_set);
    auto t3 = Clock::now();

    double fast = gb / seconds(t0, t1);
    double slow = gb / seconds(t2, t3);
    std::printf(
        "  %-6s RefScanner %7.2f GB/s   naive unordered_set %6.2f GB/s   ratio %6.1fx   "
        "found %zu (naive %zu)%s\n",
        dense ? "nix32" : "text", fast, slow, fast / slow, found.size(), naive.size(),
        found == naive ? "" : "  MISMATCH");
    if (found != naive) status = 1;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::size_t size_mb = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1024;
    std::size_t n_cands = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1000;
    if (size_mb == 0 || n_cands == 0) {
      std::fprintf(stderr, "usage: %s [SIZE_MB] [CANDIDATES]\n", argv[0]);
      return 2;
    }
    return run(size_mb, n_cands);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
