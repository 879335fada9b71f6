// Byte streams that touch the system: MappedFileSource (which files it maps, reading from the
// fd's offset, in place and by copy, release, file spans), the NAR parser reading in place,
// file spans moved by the kernel (copySpan, FdSink and BufferedSink), and growPipe.

#include "narcache/narinfo/io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "nar_restore_cases.h"
#include "narcache/narinfo/nar.h"
#include "support/support.h"

namespace narcache {
namespace {

using namespace testnar;  // the NAR builders; the restore contract itself runs elsewhere
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(RestoreContract);

Fd fileWith(const std::string& data) {
  Fd fd(::memfd_create("data", MFD_CLOEXEC));
  EXPECT_EQ(::write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

std::string text(Bytes b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

TEST(MappedFileSource, MapsOnlyRegularFilesWithBytesLeft) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  Fd r(p[0]), w(p[1]);
  EXPECT_EQ(MappedFileSource::tryMap(r.get()), nullptr) << "a pipe";
  Fd empty = fileWith("");
  EXPECT_EQ(MappedFileSource::tryMap(empty.get()), nullptr) << "an empty file";
  Fd done = fileWith("abc");
  ::lseek(done.get(), 3, SEEK_SET);
  EXPECT_EQ(MappedFileSource::tryMap(done.get()), nullptr) << "nothing past the offset";
  EXPECT_EQ(MappedFileSource::tryMap(-1), nullptr);
}

TEST(MappedFileSource, ReadsFromTheOffsetInPlaceAndByCopy) {
  std::string data = "skip:" + std::string(3 * 4096, 'a') + "tail";
  Fd fd = fileWith(data);
  ::lseek(fd.get(), 5, SEEK_SET);
  auto source = MappedFileSource::tryMap(fd.get());
  ASSERT_TRUE(source);
  EXPECT_TRUE(source->readsInPlace());
  Bytes first = source->readInPlace(4);
  EXPECT_EQ(text(first), "aaaa");
  std::string copy(4, '\0');
  auto n = source->read(MutableBytes(reinterpret_cast<std::byte*>(copy.data()), copy.size()));
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 4u);
  EXPECT_EQ(copy, "aaaa");
  Bytes rest = source->readInPlace(1 << 30);
  EXPECT_EQ(text(rest), std::string(3 * 4096 - 8, 'a') + "tail");
  EXPECT_TRUE(source->readInPlace(10).empty()) << "the end";
  // Released bytes are given back, not lost: the mapping reads them again from the file.
  source->release(rest.data() + rest.size() - 4);
  EXPECT_EQ(text(first), "aaaa");
  EXPECT_EQ(text(rest.last(4)), "tail");
  source->release(nullptr);  // outside the mapping: ignored
}

TEST(MappedFileSource, SaysWhereInTheFileBytesReadInPlaceLie) {
  std::string data = "skip:" + std::string(5000, 'a') + "tail";
  Fd fd = fileWith(data);
  ::lseek(fd.get(), 5, SEEK_SET);
  auto source = MappedFileSource::tryMap(fd.get());
  ASSERT_TRUE(source);
  Bytes first = source->readInPlace(4);
  auto span = source->fileSpan(first);
  ASSERT_TRUE(span);
  EXPECT_EQ(span->fd, fd.get());
  EXPECT_EQ(span->offset, 5u) << "offsets in the file, not from where reading began";
  EXPECT_EQ(span->size, 4u);
  Bytes rest = source->readInPlace(1 << 30);
  span = source->fileSpan(rest.last(4));
  ASSERT_TRUE(span);
  EXPECT_EQ(span->offset, data.size() - 4);
  EXPECT_EQ(span->size, 4u);
  EXPECT_TRUE(source->fileSpan(rest.first(0)).has_value()) << "an empty span at a mapped spot";
  // Bytes not of the mapping, or running past its end, have no span.
  std::string elsewhere = "elsewhere";
  EXPECT_FALSE(source->fileSpan(asBytes(elsewhere)));
  EXPECT_FALSE(source->fileSpan(Bytes(rest.data(), rest.size() + 1)));
  MemorySource memory(data);
  EXPECT_FALSE(memory.fileSpan(asBytes(data))) << "only a file has spans";
}

TEST(MappedFileSource, NarParsedInPlaceMatchesTheCopyingParse) {
  std::string data = nar(directory({{"a", regular(std::string(200000, 'x'), true)},
                                    {"b", symlink("a")},
                                    {"c", directory({{"d", regular("")}})}}));
  MemorySource copying(data);
  auto expected = narListing(copying);
  ASSERT_TRUE(expected) << expected.error().message();
  Fd fd = fileWith(data);
  auto mapped = MappedFileSource::tryMap(fd.get());
  ASSERT_TRUE(mapped);
  auto listing = narListing(*mapped);
  ASSERT_TRUE(listing) << listing.error().message();
  EXPECT_EQ(*listing, *expected);
  // A truncated NAR fails the same way in place.
  std::string cut = data.substr(0, 100000);
  Fd cut_fd = fileWith(cut);
  auto cut_source = MappedFileSource::tryMap(cut_fd.get());
  ASSERT_TRUE(cut_source);
  auto bad = validateNar(*cut_source);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), parseError(cut));
}

std::string contentsOf(int fd) {
  return test::readFile("/proc/self/fd/" + std::to_string(fd));
}

TEST(FileSpans, FdSinkAppendsSpansAfterItsWrites) {
  std::string data;
  for (int i = 0; data.size() < 200000; ++i) data += std::to_string(i) + ',';
  Fd from = fileWith(data);
  Fd to(::memfd_create("to", MFD_CLOEXEC));
  FdSink sink(to.get());
  ASSERT_TRUE(sink.write(asBytes("head:")));
  auto n = sink.writeSpan(FileSpan{from.get(), 3, 150000});
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 150000u);
  ASSERT_TRUE(sink.write(asBytes(":tail")));
  EXPECT_EQ(contentsOf(to.get()), "head:" + data.substr(3, 150000) + ":tail");
  EXPECT_EQ(::lseek(from.get(), 0, SEEK_CUR), 0) << "the span's file keeps its offset";
  // A span running past the file's end copies what there is and says how much.
  n = sink.writeSpan(FileSpan{from.get(), data.size() - 10, 100});
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 10u);
}

TEST(FileSpans, CopySpanReadsAndWritesWhereTheKernelCannotSplice) {
  std::string data(300000, 'x');
  data.replace(0, 5, "first");
  Fd from = fileWith(data);
  Fd to(::memfd_create("to", MFD_CLOEXEC));
  ASSERT_EQ(::write(to.get(), "0", 1), 1);
  // sendfile refuses an O_APPEND fd (EINVAL).
  Fd append(::open(("/proc/self/fd/" + std::to_string(to.get())).c_str(),
                   O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_GE(append.get(), 0);
  SpanCopy done = copySpan(FileSpan{from.get(), 0, data.size()}, append.get());
  EXPECT_EQ(done.error, 0);
  EXPECT_EQ(done.bytes, data.size());
  EXPECT_EQ(contentsOf(to.get()), "0" + data);
  done = copySpan(FileSpan{from.get(), data.size() - 4, 8}, append.get());
  EXPECT_EQ(done.error, 0);
  EXPECT_EQ(done.bytes, 4u) << "the file ended";
}

TEST(FileSpans, FailuresCarryTheSystemsWords) {
  Fd from = fileWith("abc");
  Fd read_only(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  SpanCopy done = copySpan(FileSpan{from.get(), 0, 3}, read_only.get());
  EXPECT_EQ(done.error, EBADF);
  EXPECT_FALSE(done.reading);
  FdSink sink(read_only.get());
  auto n = sink.writeSpan(FileSpan{from.get(), 0, 3});
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code(), ErrorCode::kIoError);
  EXPECT_EQ(n.error().message(), "write: Bad file descriptor");
}

TEST(FileSpans, BufferedSinkFlushesBeforeASpanAndOtherSinksTakeNone) {
  Fd from = fileWith("0123456789");
  Fd to(::memfd_create("to", MFD_CLOEXEC));
  FdSink fd_sink(to.get());
  BufferedSink buffered(fd_sink);
  EXPECT_TRUE(buffered.takesSpans());
  ASSERT_TRUE(buffered.write(asBytes("buffered:")));
  auto n = buffered.writeSpan(FileSpan{from.get(), 2, 5});
  ASSERT_TRUE(n);
  ASSERT_TRUE(buffered.write(asBytes(":after")));
  ASSERT_TRUE(buffered.finish());
  EXPECT_EQ(contentsOf(to.get()), "buffered:23456:after");

  StringSink text;
  BufferedSink over_text(text);
  EXPECT_FALSE(text.takesSpans());
  EXPECT_FALSE(over_text.takesSpans());
  auto refused = text.writeSpan(FileSpan{from.get(), 0, 1});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInternal);
}

TEST(GrowPipe, GivesAPipeOneMebibyteAndLeavesOtherFilesAlone) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  Fd r(p[0]), w(p[1]);
  ASSERT_LT(::fcntl(w.get(), F_GETPIPE_SZ), 1 << 20);
  growPipe(w.get());
  EXPECT_GE(::fcntl(r.get(), F_GETPIPE_SZ), 1 << 20) << "both ends share the buffer";
  Fd file = fileWith("abc");
  growPipe(file.get());
  EXPECT_EQ(contentsOf(file.get()), "abc");
  growPipe(-1);  // not an fd: nothing
}

}  // namespace
}  // namespace narcache
