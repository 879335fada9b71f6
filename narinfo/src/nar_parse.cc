// NAR reader: a streaming parser that enforces every rule of the format (see nar.h) and reports
// each violation with the NAR offset of the offending item.

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "narcache/narinfo/nar.h"

namespace narcache {
namespace {

// Contents stream to the visitor in pieces of this size. Small enough to stay in cache between
// the read from the source and the visitor's write: restoring was measured faster with 32-64
// KiB than with 128 KiB or more.
constexpr std::size_t kReadBufferSize = 64 * 1024;
// Longest keyword of the format ("nix-archive-1"); a longer string where a keyword belongs is
// reported by its size instead of being read.
constexpr std::size_t kMaxKeywordLength = 16;

// Renders untrusted bytes for an error message: printable ASCII as is, the rest escaped, at most
// 40 bytes.
std::string quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size() && i < 40; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > 40) out += "...";
  out += '"';
  return out;
}

// Reads a Source through a reused buffer, or in place when the source offers it (then contents
// chunks point into the source's memory, as nar.h promises), and counts the bytes consumed,
// which is the NAR offset.
class Reader {
 public:
  explicit Reader(Source& source)
      : source_(source), in_place_(source.readsInPlace()), buf_(in_place_ ? 0 : kReadBufferSize) {}

  std::uint64_t offset() const { return offset_; }

  Error error(std::uint64_t at, std::string_view what) const {
    return Error(ErrorCode::kInvalidArgument,
                 "NAR offset " + std::to_string(at) + ": " + std::string(what));
  }

  // Makes at least one unread byte available unless the stream has ended; false at the end.
  Result<bool> fill() {
    if (pos_ < end_) return true;
    if (in_place_) {
      Bytes view = source_.readInPlace(std::numeric_limits<std::size_t>::max());
      data_ = view.data();
      pos_ = 0;
      end_ = view.size();
      return end_ > 0;
    }
    data_ = buf_.data();
    auto n = source_.read(buf_);
    if (!n) return fail(n.error().withContext("NAR offset " + std::to_string(offset_)));
    pos_ = 0;
    end_ = *n;
    return *n > 0;
  }

  // Reads exactly out.size() bytes.
  Status read(MutableBytes out) {
    std::size_t done = 0;
    while (done < out.size()) {
      auto more = fill();
      if (!more) return fail(more.error());
      if (!*more) return fail(error(offset_, "unexpected end of NAR"));
      std::size_t n = std::min(out.size() - done, end_ - pos_);
      std::memcpy(out.data() + done, data_ + pos_, n);
      pos_ += n;
      offset_ += n;
      done += n;
    }
    return {};
  }

  // Returns up to `max` (> 0) buffered bytes and consumes them; an empty span at end of stream.
  Result<Bytes> chunk(std::uint64_t max) {
    auto more = fill();
    if (!more) return fail(more.error());
    if (!*more) return Bytes();
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(max, end_ - pos_));
    Bytes out(data_ + pos_, n);
    pos_ += n;
    offset_ += n;
    return out;
  }

  Result<std::uint64_t> readU64() {
    unsigned char b[8];
    NARCACHE_TRY(read(MutableBytes(reinterpret_cast<std::byte*>(b), 8)));
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }

  // Consumes the zero padding after a string of `len` bytes.
  Status readPadding(std::uint64_t len) {
    std::size_t pad = static_cast<std::size_t>((8 - len % 8) % 8);
    if (pad == 0) return {};
    std::uint64_t at = offset_;
    std::byte b[8];
    NARCACHE_TRY(read(MutableBytes(b, pad)));
    for (std::size_t i = 0; i < pad; ++i) {
      if (b[i] != std::byte{0}) return fail(error(at, "non-zero padding"));
    }
    return {};
  }

  // Reads a length-prefixed string of at most `max` bytes into `out`; `what` names it in the
  // error for a longer one.
  Status readString(std::string& out, std::size_t max, std::string_view what) {
    std::uint64_t at = offset_;
    auto len = readU64();
    if (!len) return fail(len.error());
    if (*len > max) {
      return fail(error(at, std::string(what) + " is " + std::to_string(*len) +
                                " bytes long (at most " + std::to_string(max) + " allowed)"));
    }
    out.resize(static_cast<std::size_t>(*len));
    NARCACHE_TRY(read(MutableBytes(reinterpret_cast<std::byte*>(out.data()), out.size())));
    return readPadding(*len);
  }

  // Reads the next keyword and checks that it is `expected`.
  Status expect(std::string_view expected) {
    std::uint64_t at = offset_;
    NARCACHE_TRY(readKeyword());
    if (keyword_ != expected) {
      return fail(error(at, "expected " + quote(expected) + ", got " + quote(keyword_)));
    }
    return {};
  }

  // Reads a string where a keyword belongs into keyword().
  Status readKeyword() {
    std::uint64_t at = offset_;
    auto len = readU64();
    if (!len) return fail(len.error());
    if (*len > kMaxKeywordLength) {
      return fail(error(at, "expected a keyword, got a " + std::to_string(*len) + "-byte string"));
    }
    keyword_.resize(static_cast<std::size_t>(*len));
    NARCACHE_TRY(
        read(MutableBytes(reinterpret_cast<std::byte*>(keyword_.data()), keyword_.size())));
    return readPadding(*len);
  }
  const std::string& keyword() const { return keyword_; }

  // Succeeds when the stream has no bytes left.
  Status expectEnd() {
    auto more = fill();
    if (!more) return fail(more.error());
    if (*more) return fail(error(offset_, "trailing data after the end of the NAR"));
    return {};
  }

 private:
  Source& source_;
  const bool in_place_;
  std::vector<std::byte> buf_;       // unused when in place
  const std::byte* data_ = nullptr;  // buf_, or the source's bytes
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
  std::uint64_t offset_ = 0;
  std::string keyword_;
};

// The parse itself. Recursion follows the directory nesting, which is bounded by kMaxNarDepth.
class Parser {
 public:
  Parser(Source& source, NarVisitor& visitor) : in_(source), visitor_(visitor) {}

  Result<std::uint64_t> run() {
    static constexpr std::string_view kMagic = "nix-archive-1";
    auto len = in_.readU64();
    if (!len) return fail(len.error());
    if (*len != kMagic.size()) return fail(in_.error(0, "not a NAR (bad magic)"));
    char magic[kMagic.size()];
    NARCACHE_TRY(in_.read(MutableBytes(reinterpret_cast<std::byte*>(magic), sizeof magic)));
    if (std::string_view(magic, sizeof magic) != kMagic) {
      return fail(in_.error(0, "not a NAR (bad magic)"));
    }
    NARCACHE_TRY(in_.readPadding(kMagic.size()));
    NARCACHE_TRY(node(0));
    NARCACHE_TRY(in_.expectEnd());
    return in_.offset();
  }

 private:
  // Parses one node whose path is path_ and which sits `depth` entries below the root.
  Status node(std::size_t depth) {
    NARCACHE_TRY(in_.expect("("));
    NARCACHE_TRY(in_.expect("type"));
    std::uint64_t at = in_.offset();
    NARCACHE_TRY(in_.readKeyword());
    if (in_.keyword() == "regular") return regular();
    if (in_.keyword() == "symlink") return symlink();
    if (in_.keyword() == "directory") return directory(depth);
    return fail(in_.error(at, "unknown node type " + quote(in_.keyword())));
  }

  Status regular() {
    std::uint64_t at = in_.offset();
    NARCACHE_TRY(in_.readKeyword());
    bool executable = false;
    if (in_.keyword() == "executable") {
      executable = true;
      std::uint64_t value_at = in_.offset();
      auto len = in_.readU64();
      if (!len) return fail(len.error());
      if (*len != 0)
        return fail(in_.error(value_at, "\"executable\" marker has a non-empty value"));
      at = in_.offset();
      NARCACHE_TRY(in_.readKeyword());
    }
    if (in_.keyword() != "contents") {
      return fail(
          in_.error(at, std::string("expected ") +
                            (executable ? "\"contents\"" : "\"executable\" or \"contents\"") +
                            ", got " + quote(in_.keyword())));
    }
    auto size = in_.readU64();
    if (!size) return fail(size.error());
    NARCACHE_TRY(visitor_.fileBegin(path_, executable, *size, in_.offset()));
    std::uint64_t left = *size;
    while (left > 0) {
      auto chunk = in_.chunk(left);
      if (!chunk) return fail(chunk.error());
      if (chunk->empty()) return fail(in_.error(in_.offset(), "unexpected end of NAR"));
      left -= chunk->size();
      NARCACHE_TRY(visitor_.contents(*chunk));
    }
    NARCACHE_TRY(in_.readPadding(*size));
    NARCACHE_TRY(visitor_.fileEnd());
    return in_.expect(")");
  }

  Status symlink() {
    NARCACHE_TRY(in_.expect("target"));
    std::uint64_t at = in_.offset();
    NARCACHE_TRY(in_.readString(target_, kMaxNarTargetLength, "symlink target"));
    if (target_.empty()) return fail(in_.error(at, "empty symlink target"));
    if (target_.find('\0') != std::string::npos) {
      return fail(in_.error(at, "symlink target contains a NUL byte"));
    }
    NARCACHE_TRY(visitor_.symlink(path_, target_));
    return in_.expect(")");
  }

  Status directory(std::size_t depth) {
    NARCACHE_TRY(visitor_.directory(path_));
    // Entry names are kept for the order check only: one previous name per open directory.
    std::string previous;
    std::string name;
    bool first = true;
    for (;;) {
      std::uint64_t at = in_.offset();
      NARCACHE_TRY(in_.readKeyword());
      if (in_.keyword() == ")") break;
      if (in_.keyword() != "entry") {
        return fail(in_.error(at, "expected \"entry\" or \")\", got " + quote(in_.keyword())));
      }
      if (depth + 1 > kMaxNarDepth) {
        return fail(in_.error(
            at, "directories nested more than " + std::to_string(kMaxNarDepth) + " deep"));
      }
      NARCACHE_TRY(in_.expect("("));
      NARCACHE_TRY(in_.expect("name"));
      std::uint64_t name_at = in_.offset();
      NARCACHE_TRY(in_.readString(name, kMaxNarNameLength, "entry name"));
      NARCACHE_TRY(checkName(name, name_at));
      if (!first) {
        if (name == previous) {
          return fail(in_.error(name_at, "duplicate entry name " + quote(name)));
        }
        if (name < previous) {
          return fail(in_.error(name_at, "entry names not in ascending order (" + quote(name) +
                                             " after " + quote(previous) + ")"));
        }
      }
      first = false;
      NARCACHE_TRY(in_.expect("node"));
      std::size_t old_size = path_.size();
      if (!path_.empty()) path_ += '/';
      path_ += name;
      NARCACHE_TRY(node(depth + 1));
      path_.resize(old_size);
      NARCACHE_TRY(in_.expect(")"));
      previous.swap(name);
    }
    return visitor_.directoryEnd(path_);
  }

  Status checkName(const std::string& name, std::uint64_t at) {
    if (name.empty()) return fail(in_.error(at, "empty entry name"));
    if (name == "." || name == "..")
      return fail(in_.error(at, "invalid entry name " + quote(name)));
    if (name.find('/') != std::string::npos) {
      return fail(in_.error(at, "entry name " + quote(name) + " contains '/'"));
    }
    if (name.find('\0') != std::string::npos) {
      return fail(in_.error(at, "entry name " + quote(name) + " contains a NUL byte"));
    }
    return {};
  }

  Reader in_;
  NarVisitor& visitor_;
  std::string path_;
  std::string target_;
};

class NullVisitor final : public NarVisitor {
 public:
  Status directory(std::string_view) override { return {}; }
  Status symlink(std::string_view, std::string_view) override { return {}; }
  Status fileBegin(std::string_view, bool, std::uint64_t, std::uint64_t) override { return {}; }
  Status contents(Bytes) override { return {}; }
  Status fileEnd() override { return {}; }
};

}  // namespace

Result<std::uint64_t> parseNar(Source& source, NarVisitor& visitor) {
  return Parser(source, visitor).run();
}

Result<std::uint64_t> validateNar(Source& source) {
  NullVisitor visitor;
  return parseNar(source, visitor);
}

}  // namespace narcache
