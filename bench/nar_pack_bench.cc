// Measures what `narcache build` does with each output, in one pass as the agent does it:
// NAR serialisation + SHA-256 (NarHash/NarSize) + reference scanning + zstd (level 3, one
// thread) + SHA-256 of the compressed bytes (FileHash/FileSize). Also times the parts alone.
//
//   bench_nar_pack_bench PATH [CANDIDATES] [OUT] [ZSTD_THREADS]
//   (defaults: 1000 candidates, OUT /dev/null, 0 zstd worker threads = compress inline)

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "narcache/narinfo/compression.h"
#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/nar.h"
#include "narcache/narinfo/refscan.h"

namespace {

using namespace narcache;
using Clock = std::chrono::steady_clock;

class Fanout final : public Sink {
 public:
  explicit Fanout(std::vector<Sink*> sinks) : sinks_(std::move(sinks)) {}
  Status write(Bytes data) override {
    for (Sink* s : sinks_) NARCACHE_TRY(s->write(data));
    return {};
  }

 private:
  std::vector<Sink*> sinks_;
};

void check(const Status& s, const char* what) {
  if (!s) {
    std::fprintf(stderr, "%s: %s\n", what, s.error().message().c_str());
    std::exit(1);
  }
}

double timed(const char* label, std::uint64_t bytes, const std::function<void()>& f) {
  auto start = Clock::now();
  f();
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("%-44s %7.3f s  %7.1f MB/s\n", label, s, bytes / s / 1e6);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PATH [CANDIDATES] [OUT]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const int n_candidates = argc > 2 ? std::atoi(argv[2]) : 1000;
  const std::string out_path = argc > 3 ? argv[3] : "/dev/null";
  CompressOptions zstd_options;
  zstd_options.threads = argc > 4 ? std::atoi(argv[4]) : 0;
  std::mt19937_64 rng(42);
  std::vector<std::string> candidates;
  for (int i = 0; i < n_candidates; ++i) {
    std::string h(32, '0');
    for (auto& c : h) c = kNix32Alphabet[rng() % kNix32Alphabet.size()];
    candidates.push_back(h);
  }

  CountingSink counter;
  timed("dump (NAR serialisation only)", 0, [&] {
    BufferedSink b(counter);
    check(dumpPath(path, b), "dump");
    check(b.flush(), "flush");
  });
  const std::uint64_t nar_size = counter.count;
  std::printf("NAR size: %llu bytes\n", static_cast<unsigned long long>(nar_size));
  timed("dump + sha256", nar_size, [&] {
    Hasher h;
    BufferedSink b(h);
    check(dumpPath(path, b), "dump");
    check(b.flush(), "flush");
    (void)h.digest();
  });
  timed("dump + refscan", nar_size, [&] {
    auto scanner = RefScanner::create(candidates);
    BufferedSink b(*scanner);
    check(dumpPath(path, b), "dump");
    check(b.flush(), "flush");
  });
  std::uint64_t file_size = 0;
  timed("dump + sha256 + refscan + zstd + sha256 (agent)", nar_size, [&] {
    int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) std::exit(1);
    FdSink file(fd);
    Hasher file_hasher;
    TeeSink tee(file, file_hasher);
    auto zstd = makeCompressor(Compression::kZstd, tee, zstd_options);
    auto scanner = RefScanner::create(candidates);
    Hasher nar_hasher;
    Fanout fan({&nar_hasher, &*scanner, zstd->get()});
    BufferedSink b(fan);
    check(dumpPath(path, b), "dump");
    check(b.flush(), "flush");
    check((*zstd)->finish(), "zstd");
    (void)nar_hasher.digest();
    (void)file_hasher.digest();
    file_size = file_hasher.size();
    ::close(fd);
  });
  std::printf("compressed: %llu bytes (ratio %.3f)\n", static_cast<unsigned long long>(file_size),
              nar_size ? static_cast<double>(file_size) / nar_size : 0.0);
  return 0;
}
