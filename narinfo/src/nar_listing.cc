// NAR listing: the `.ls` JSON document Nix writes next to a narinfo (write-nar-listing=true).
//
// The text is byte-identical to Nix 2.8's: keys in Nix's order ("type", "size", "executable",
// "narOffset"), entries in NAR order, no whitespace, and strings escaped as Nix's JSON writer
// does (\" \\ \n \r \t, other bytes below 0x20 as \u00xx, everything else raw, even bytes that
// are not UTF-8). A general JSON library cannot reproduce the last two points, so the document
// is written directly while the NAR streams by.

#include <string>
#include <vector>

#include "narcache/narinfo/nar.h"

namespace narcache {
namespace {

void appendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20) {
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  out += '"';
}

class ListingVisitor final : public NarVisitor {
 public:
  ListingVisitor() { out_ = "{\"version\":1,\"root\":"; }

  Status directory(std::string_view path) override {
    key(path);
    out_ += "{\"type\":\"directory\",\"entries\":{";
    first_.push_back(true);
    return {};
  }

  Status directoryEnd(std::string_view) override {
    out_ += "}}";
    first_.pop_back();
    return {};
  }

  Status symlink(std::string_view path, std::string_view target) override {
    key(path);
    out_ += "{\"type\":\"symlink\",\"target\":";
    appendJsonString(out_, target);
    out_ += '}';
    return {};
  }

  Status fileBegin(std::string_view path, bool executable, std::uint64_t size,
                   std::uint64_t nar_offset) override {
    key(path);
    out_ += "{\"type\":\"regular\",\"size\":";
    out_ += std::to_string(size);
    if (executable) out_ += ",\"executable\":true";
    // Nix leaves out a zero offset, which no file in a NAR has.
    if (nar_offset != 0) {
      out_ += ",\"narOffset\":";
      out_ += std::to_string(nar_offset);
    }
    out_ += '}';
    return {};
  }

  Status contents(Bytes) override { return {}; }
  Status fileEnd() override { return {}; }

  std::string take() {
    out_ += '}';
    return std::move(out_);
  }

 private:
  // Writes the `"name":` prefix of a directory entry (nothing for the root).
  void key(std::string_view path) {
    if (path.empty()) return;
    if (!first_.back()) out_ += ',';
    first_.back() = false;
    auto slash = path.rfind('/');
    appendJsonString(out_, slash == std::string_view::npos ? path : path.substr(slash + 1));
    out_ += ':';
  }

  std::string out_;
  std::vector<bool> first_;  // per open directory: no entry written yet
};

}  // namespace

Result<std::string> narListing(Source& source) {
  ListingVisitor visitor;
  auto size = parseNar(source, visitor);
  if (!size) return fail(size.error());
  return visitor.take();
}

}  // namespace narcache
