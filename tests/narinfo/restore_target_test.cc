// RestoreTarget::copy, the kernel-side copy of a span of the NAR file into a restored file: the
// bytes land in order, an fd the kernel cannot splice into (O_APPEND) is served by reading and
// writing instead, and a NAR file that ends before the span is a clear error. (The rest of
// RestoreTarget is covered through the restore contract, nar_restore_cases.h.)

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "narcache/narinfo/nar_restore.h"
#include "support/support.h"

namespace narcache {
namespace {

namespace fs = std::filesystem;

struct CopyFixture : ::testing::Test {
  test::TempDir dir;
  fs::path dest = dir / "dest";
  std::string nar_bytes;  // the "NAR file": 300,000 bytes of a non-repeating pattern
  Fd nar;
  std::optional<RestoreTarget> target;
  Fd root;

  void SetUp() override {
    for (int i = 0; nar_bytes.size() < 300000; ++i) nar_bytes += std::to_string(i) + ",";
    nar_bytes.resize(300000);
    test::writeFile(dir / "nar", nar_bytes);
    nar = Fd(::open((dir / "nar").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(nar.get(), 0);
    auto opened = RestoreTarget::open(dest);
    ASSERT_TRUE(opened) << opened.error().message();
    target.emplace(std::move(*opened));
    auto made = target->makeDirectory(target->parentFd(), "");
    ASSERT_TRUE(made) << made.error().message();
    root = std::move(*made);
  }

  Fd create(const std::string& name) {
    auto fd = target->createFile(root.get(), name, false);
    EXPECT_TRUE(fd) << fd.error().message();
    return fd ? std::move(*fd) : Fd();
  }

  FileSpan span(std::uint64_t offset, std::uint64_t size) const {
    return FileSpan{nar.get(), offset, size};
  }
};

TEST_F(CopyFixture, CopiesSpansOfTheNarFileInOrder) {
  Fd f = create("f");
  ASSERT_TRUE(target->copy(f.get(), span(7, 200000), "f"));
  ASSERT_TRUE(target->copy(f.get(), span(0, 3), "f")) << "a second span follows the first";
  ASSERT_TRUE(target->copy(f.get(), span(123, 0), "f")) << "an empty span writes nothing";
  ASSERT_TRUE(target->close(std::move(f), "f"));
  EXPECT_EQ(test::readFile(dest / "f"), nar_bytes.substr(7, 200000) + nar_bytes.substr(0, 3));
  EXPECT_EQ(::lseek(nar.get(), 0, SEEK_CUR), 0) << "the NAR file's offset is left alone";
}

TEST_F(CopyFixture, AFileTheKernelCannotSpliceIntoIsWrittenByReading) {
  create("f");
  // sendfile refuses an O_APPEND file (EINVAL): the copy reads and writes instead.
  Fd append(::open((dest / "f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_GE(append.get(), 0);
  ASSERT_TRUE(target->copy(append.get(), span(1, 299999), "f"));
  ASSERT_TRUE(target->copy(append.get(), span(0, 1), "f"));
  EXPECT_EQ(test::readFile(dest / "f"), nar_bytes.substr(1) + nar_bytes.substr(0, 1));
}

TEST_F(CopyFixture, ANarFileThatEndsBeforeTheSpanIsAClearError) {
  const std::string expected = "restore: write '" + dest.string() +
                               "/f': the NAR file ended early (did it shrink while being "
                               "restored?)";
  Fd f = create("f");
  auto st = target->copy(f.get(), span(299000, 2000), "f");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kIoError);
  EXPECT_EQ(st.error().message(), expected);
  EXPECT_EQ(test::readFile(dest / "f"), nar_bytes.substr(299000)) << "what there was is copied";
  // The same by reading and writing.
  Fd append(::open((dest / "f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  st = target->copy(append.get(), span(299999, 2), "f");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), expected);
}

}  // namespace
}  // namespace narcache
