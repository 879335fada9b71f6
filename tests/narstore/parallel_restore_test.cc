// narstore's parallel NAR restore: the restore contract of tests/narinfo/nar_restore_cases.h
// (round trips, hostile NARs, bad destinations, exact errors, nothing outside the destination)
// with 1, 2 and 8 workers and with a budget so small that the parser waits on every job; then
// what only a parallel restorer can get wrong: a worker's error stops the parse and the other
// workers and is reported as it happened. The whole contract runs again from a mapped NAR file
// (MappedFileSource: contents copied by the kernel from the NAR file, never through memory),
// whose memory use must stay flat.

#include "narcache/narstore/parallel_restore.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "narinfo/nar_restore_cases.h"
#include "support/support.h"

namespace narcache::narstore {
namespace {

namespace fs = std::filesystem;
using namespace testnar;

RestoreImpl parallel(std::string name, unsigned jobs, std::size_t max_buffered) {
  return {std::move(name), [jobs, max_buffered](Source& source, const fs::path& dest) {
            ParallelRestoreOptions options;
            options.jobs = jobs;
            options.max_buffered = max_buffered;
            return restoreNarParallel(source, dest, options);
          }};
}

// A file holding all of `source`'s bytes (a memfd: a regular file on tmpfs), at offset 0.
Fd toFile(Source& source) {
  Fd fd(::memfd_create("nar", MFD_CLOEXEC));
  std::vector<std::byte> buf(1 << 16);
  for (;;) {
    auto n = source.read(buf);
    if (!n || *n == 0) break;
    EXPECT_EQ(::write(fd.get(), buf.data(), *n), static_cast<ssize_t>(*n));
  }
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

// The same, restored from the NAR mapped in place (empty NARs cannot be mapped: read instead).
RestoreImpl mapped(std::string name, unsigned jobs, std::size_t max_buffered) {
  return {std::move(name), [jobs, max_buffered](Source& source, const fs::path& dest) {
            Fd file = toFile(source);
            auto in_place = MappedFileSource::tryMap(file.get());
            FdSource read(file.get());
            ParallelRestoreOptions options;
            options.jobs = jobs;
            options.max_buffered = max_buffered;
            return restoreNarParallel(in_place ? static_cast<Source&>(*in_place) : read, dest,
                                      options);
          }};
}

INSTANTIATE_TEST_SUITE_P(Parallel, RestoreContract,
                         ::testing::Values(parallel("jobs1", 1, std::size_t{8} << 20),
                                           parallel("jobs2", 2, std::size_t{8} << 20),
                                           parallel("jobs8", 8, std::size_t{8} << 20),
                                           parallel("jobs3TinyBudget", 3, 1),
                                           parallel("defaults", 0, std::size_t{8} << 20),
                                           mapped("mappedJobs3", 3, std::size_t{8} << 20),
                                           mapped("mappedJobs2TinyBudget", 2, 1)),
                         restoreImplName);

TEST(ParallelRestore, DefaultJobsIsAtLeastTwo) {
  EXPECT_GE(defaultRestoreJobs(), 2u);
}

// Makes writes past `limit` bytes fail with EFBIG (instead of SIGXFSZ) while in scope.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t limit) {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit lower = old_;
    lower.rlim_cur = limit;
    ::setrlimit(RLIMIT_FSIZE, &lower);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  sighandler_t old_handler_;
};

// A worker fails to write a file (small ones, then a streamed one): the restore stops with that
// error, exactly, though many files follow it and the parser was waiting for room.
TEST(ParallelRestore, WorkerErrorStopsTheRestore) {
  for (std::size_t size : {std::size_t{5000}, std::size_t{3} << 20}) {
    SCOPED_TRACE(size);
    std::vector<std::pair<std::string, std::string>> entries;
    entries.emplace_back("a-too-big", regular(std::string(size, 'x')));
    for (int i = 0; i < 300; ++i) {
      entries.emplace_back("b" + std::to_string(1000 + i), regular(std::string(3000, 'y')));
    }
    std::string data = nar(directory(entries));
    for (unsigned jobs : {1u, 4u}) {
      Sandbox box;
      Status st;
      {
        FileSizeLimit limit(4096);
        MemorySource source(data);
        ParallelRestoreOptions options;
        options.jobs = jobs;
        options.max_buffered = 16 * 1024;
        st = restoreNarParallel(source, box.dest, options);
      }
      ASSERT_FALSE(st) << "restore succeeded past the file size limit";
      EXPECT_EQ(st.error().code(), ErrorCode::kIoError);
      EXPECT_EQ(st.error().message(),
                "restore: write '" + box.dest.string() + "/a-too-big': File too large");
      EXPECT_TRUE(fs::is_empty(box.outside));
      // Stopped early: not every later file was created.
      std::size_t created = listTree(box.dest).size();
      EXPECT_LT(created, entries.size()) << "jobs " << jobs;
    }
  }
}

// Thousands of directories of one small file each, under a low fd limit: queued jobs keep
// their directories open, so their number must stay bounded.
TEST(ParallelRestore, ManyDirectoriesStayWithinTheFdLimit) {
  std::vector<std::pair<std::string, std::string>> dirs;
  for (int i = 0; i < 3000; ++i) {
    dirs.emplace_back("d" + std::to_string(10000 + i),
                      directory({{"f", regular(std::string(16000, 'x'))}}));
  }
  std::string data = nar(directory(dirs));
  Sandbox box;
  Status st;
  {
    rlimit old{};
    ::getrlimit(RLIMIT_NOFILE, &old);
    rlimit low = old;
    low.rlim_cur = 256;
    ::setrlimit(RLIMIT_NOFILE, &low);
    MemorySource source(data);
    st = restoreNarParallel(source, box.dest, {.jobs = 1, .max_buffered = std::size_t{64} << 20});
    ::setrlimit(RLIMIT_NOFILE, &old);
  }
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(listTree(box.dest).size(), 6000u);
}

// A truncated NAR that ends inside a streamed file: the parse error is reported, the files
// before it are complete, the streamed one holds what the NAR had.
TEST(ParallelRestore, TruncatedInsideStreamedFile) {
  std::string big(5 << 20, 'z');
  std::string data = nar(directory({{"a", regular("first")}, {"b", regular(big)}}));
  data.resize(data.size() - (2 << 20));
  Sandbox box;
  MemorySource source(data);
  auto st = restoreNarParallel(source, box.dest, {.jobs = 2, .max_buffered = 1 << 20});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), parseError(data));
  EXPECT_EQ(test::readFile(box.dest / "a"), "first");
  // Every byte of b's contents that the NAR holds, and nothing more.
  std::size_t had = data.size() - (data.find(u64(big.size())) + 8);
  EXPECT_EQ(test::readFile(box.dest / "b"), std::string(had, 'z'));
}

// A source error comes back with its code, and no worker is left running.
TEST(ParallelRestore, SourceErrorKeepsCode) {
  class Broken final : public Source {
   public:
    explicit Broken(std::string data) : data_(std::move(data)) {}
    Result<std::size_t> read(MutableBytes out) override {
      if (pos_ == data_.size()) return fail(ErrorCode::kUnavailable, "peer went away");
      std::size_t n = std::min(out.size(), data_.size() - pos_);
      std::memcpy(out.data(), data_.data() + pos_, n);
      pos_ += n;
      return n;
    }

   private:
    std::string data_;
    std::size_t pos_ = 0;
  };
  std::string data =
      nar(directory({{"a", regular("ok")}, {"b", regular(std::string(3 << 20, 'q'))}}));
  Broken source(data.substr(0, 2 << 20));
  Sandbox box;
  auto st = restoreNarParallel(source, box.dest);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(st.error().message(), "NAR offset " + std::to_string(2 << 20) + ": peer went away");
  EXPECT_EQ(test::readFile(box.dest / "a"), "ok");
}

// Peak RSS of this process, in bytes.
std::size_t peakRss() {
  std::string status = test::readFile("/proc/self/status");
  auto at = status.find("VmHWM:");
  return at == std::string::npos ? 0 : std::stoull(status.substr(at + 6)) * 1024;
}

// A 192 MiB NAR restored from its mapping: correct, and the peak memory grows by far less than
// the NAR (the contents are copied by the kernel; the header pages the parser reads are given
// back behind it).
TEST(ParallelRestore, MappedNarIsRestoredInFlatMemory) {
  std::vector<std::pair<std::string, std::string>> entries;
  entries.emplace_back("big", regular(std::string(std::size_t{128} << 20, 'b')));
  for (int i = 0; i < 4000; ++i) {
    entries.emplace_back("s" + std::to_string(10000 + i), regular(std::string(16 << 10, 's')));
  }
  Fd file(::memfd_create("nar", MFD_CLOEXEC));
  {
    std::string data = nar(directory(entries));
    entries.clear();
    ASSERT_EQ(::write(file.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  }
  ::lseek(file.get(), 0, SEEK_SET);
  {
    Fd refs(::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC));
    ASSERT_EQ(::write(refs.get(), "5", 1), 1);  // resets VmHWM
  }
  std::size_t before = peakRss();
  auto source = MappedFileSource::tryMap(file.get());
  ASSERT_TRUE(source);
  Sandbox box;
  auto st = restoreNarParallel(*source, box.dest);
  ASSERT_TRUE(st) << st.error().message();
  [[maybe_unused]] std::size_t grown = peakRss() - before;
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)  // their shadow memory stays
  EXPECT_LT(grown, std::size_t{16} << 20) << "peak RSS grew by " << (grown >> 20) << " MiB";
#endif
  EXPECT_EQ(fs::file_size(box.dest / "big"), std::size_t{128} << 20);
  EXPECT_EQ(test::readFile(box.dest / "s13999"), std::string(16 << 10, 's'));
  EXPECT_EQ(listTree(box.dest).size(), 4001u);
}

}  // namespace
}  // namespace narcache::narstore
