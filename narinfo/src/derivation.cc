// Derivations: the ATerm parser and writer. Output paths and the `derivation` builtin are in
// derivation_paths.cc.
#include "narcache/narinfo/derivation.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>

#include "narcache/narinfo/store_path.h"

namespace narcache {

bool Derivation::isFixedOutput() const {
  if (outputs.size() != 1) return false;
  auto it = outputs.find("out");
  return it != outputs.end() && it->second.isFixed();
}

namespace {

// How a byte (or the end of input) is named in an error message.
std::string describe(std::string_view text, std::size_t pos) {
  if (pos >= text.size()) return "end of input";
  const auto c = static_cast<unsigned char>(text[pos]);
  if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
  char buf[16];
  std::snprintf(buf, sizeof buf, "byte 0x%02x", c);
  return buf;
}

// A strict recursive-descent parser over the whole text. Each method leaves pos_ after what it
// read; errors name the offset at which the unexpected byte sits.
class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Result<Derivation> parse(std::string_view name) {
    Derivation drv;
    NARCACHE_TRY(expect("Derive(["));
    NARCACHE_TRY(parseList([&]() -> Status {
      const std::size_t at = pos_;
      NARCACHE_TRY(expect("("));
      const std::size_t name_at = pos_;
      auto out_name = parseString();
      if (!out_name) return fail(out_name.error());
      if (out_name->empty()) return error(name_at + 1, "a non-empty output name");
      DerivationOutput out;
      NARCACHE_TRY(expect(","));
      NARCACHE_TRY(parsePath(out.path, /*allow_empty=*/true));
      NARCACHE_TRY(expect(","));
      auto algo = parseString();
      if (!algo) return fail(algo.error());
      out.hash_algo = std::move(*algo);
      NARCACHE_TRY(expect(","));
      auto hash = parseString();
      if (!hash) return fail(hash.error());
      out.hash = std::move(*hash);
      NARCACHE_TRY(expect(")"));
      if (!drv.outputs.empty() && drv.outputs.rbegin()->first >= *out_name) {
        return unsorted(at, "output", *out_name);
      }
      drv.outputs.emplace(std::move(*out_name), std::move(out));
      return {};
    }));
    NARCACHE_TRY(expect(",["));
    NARCACHE_TRY(parseList([&]() -> Status {
      const std::size_t at = pos_;
      NARCACHE_TRY(expect("("));
      std::string path;
      NARCACHE_TRY(parsePath(path, /*allow_empty=*/false));
      NARCACHE_TRY(expect(",["));
      std::set<std::string> names;
      NARCACHE_TRY(parseList([&]() -> Status {
        const std::size_t name_at = pos_;
        auto s = parseString();
        if (!s) return fail(s.error());
        if (!names.empty() && *names.rbegin() >= *s) return unsorted(name_at, "output name", *s);
        names.insert(std::move(*s));
        return {};
      }));
      NARCACHE_TRY(expect(")"));
      if (!drv.input_drvs.empty() && drv.input_drvs.rbegin()->first >= path) {
        return unsorted(at, "input derivation", path);
      }
      drv.input_drvs.emplace(std::move(path), std::move(names));
      return {};
    }));
    NARCACHE_TRY(expect(",["));
    NARCACHE_TRY(parseList([&]() -> Status {
      const std::size_t at = pos_;
      std::string path;
      NARCACHE_TRY(parsePath(path, /*allow_empty=*/false));
      if (!drv.input_srcs.empty() && *drv.input_srcs.rbegin() >= path) {
        return unsorted(at, "input source", path);
      }
      drv.input_srcs.insert(std::move(path));
      return {};
    }));
    NARCACHE_TRY(expect(","));
    auto platform = parseString();
    if (!platform) return fail(platform.error());
    drv.platform = std::move(*platform);
    NARCACHE_TRY(expect(","));
    auto builder = parseString();
    if (!builder) return fail(builder.error());
    drv.builder = std::move(*builder);
    NARCACHE_TRY(expect(",["));
    NARCACHE_TRY(parseList([&]() -> Status {
      auto s = parseString();
      if (!s) return fail(s.error());
      drv.args.push_back(std::move(*s));
      return {};
    }));
    NARCACHE_TRY(expect(",["));
    NARCACHE_TRY(parseList([&]() -> Status {
      const std::size_t at = pos_;
      NARCACHE_TRY(expect("("));
      auto key = parseString();
      if (!key) return fail(key.error());
      NARCACHE_TRY(expect(","));
      auto value = parseString();
      if (!value) return fail(value.error());
      NARCACHE_TRY(expect(")"));
      if (!drv.env.empty() && drv.env.rbegin()->first >= *key) {
        return unsorted(at, "environment variable", *key);
      }
      drv.env.emplace(std::move(*key), std::move(*value));
      return {};
    }));
    NARCACHE_TRY(expect(")"));
    if (pos_ != text_.size()) return error(pos_, "end of input");

    if (!name.empty()) {
      drv.name = std::string(name);
    } else if (auto it = drv.env.find("name"); it != drv.env.end()) {
      drv.name = it->second;
    } else if (auto json = drv.env.find("__json"); json != drv.env.end()) {
      // Structured attributes: the name is among them.
      auto attrs = nlohmann::json::parse(json->second, nullptr, false);
      if (attrs.is_object() && attrs.contains("name") && attrs["name"].is_string()) {
        drv.name = attrs["name"].get<std::string>();
      }
    }
    return drv;
  }

 private:
  tl::unexpected<Error> error(std::size_t at, std::string_view expected) const {
    return fail(ErrorCode::kInvalidArgument, "derivation: offset " + std::to_string(at) +
                                                 ": expected " + std::string(expected) +
                                                 " but found " + describe(text_, at));
  }

  tl::unexpected<Error> unsorted(std::size_t at, std::string_view what,
                                 const std::string& item) const {
    return fail(ErrorCode::kInvalidArgument,
                "derivation: offset " + std::to_string(at) + ": " + std::string(what) + " \"" +
                    item + "\" is out of order or repeated (entries must be sorted and unique)");
  }

  Status expect(std::string_view literal) {
    for (char c : literal) {
      if (pos_ >= text_.size() || text_[pos_] != c) {
        return error(pos_, std::string("'") + c + "'");
      }
      ++pos_;
    }
    return {};
  }

  // Reads `item` repeatedly, separated by ',', up to and including the closing ']' (the '['
  // has been read).
  template <typename F>
  Status parseList(F&& item) {
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      return {};
    }
    for (;;) {
      NARCACHE_TRY(item());
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') {
        ++pos_;
        return {};
      }
      return error(pos_, "',' or ']'");
    }
  }

  Result<std::string> parseString() {
    if (pos_ >= text_.size() || text_[pos_] != '"') return error(pos_, "'\"'");
    ++pos_;
    std::string out;
    for (;;) {
      if (pos_ >= text_.size()) return error(pos_, "'\"'");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\n' || c == '\r' || c == '\t') {
        return error(pos_, "an escape (\\n, \\r, \\t) instead of a raw control character");
      }
      if (c == '\\') {
        ++pos_;
        if (pos_ >= text_.size()) return error(pos_, "an escaped character");
        switch (text_[pos_]) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          default: return error(pos_, "one of \" \\ n r t after '\\'");
        }
        ++pos_;
        continue;
      }
      out += c;
      ++pos_;
    }
  }

  Status parsePath(std::string& path, bool allow_empty) {
    const std::size_t at = pos_;
    auto s = parseString();
    if (!s) return fail(s.error());
    if (s->empty() ? !allow_empty : s->front() != '/') {
      return fail(ErrorCode::kInvalidArgument,
                  "derivation: offset " + std::to_string(at) +
                      ": expected an absolute store path but found \"" + *s + "\"");
    }
    path = std::move(*s);
    return {};
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

// Nix's printString: escapes '"', '\', newline, carriage return and tab.
void printString(std::string& res, std::string_view s) {
  res += '"';
  for (char c : s) {
    switch (c) {
      case '"': res += "\\\""; break;
      case '\\': res += "\\\\"; break;
      case '\n': res += "\\n"; break;
      case '\r': res += "\\r"; break;
      case '\t': res += "\\t"; break;
      default: res += c;
    }
  }
  res += '"';
}

template <typename Range>
void printStrings(std::string& res, const Range& items) {
  res += '[';
  bool first = true;
  for (const auto& s : items) {
    if (!first) res += ',';
    first = false;
    printString(res, s);
  }
  res += ']';
}

}  // namespace

std::vector<std::string> Derivation::requiredSystemFeatures() const {
  std::set<std::string> features;
  if (auto json = env.find("__json"); json != env.end()) {
    auto attrs = nlohmann::json::parse(json->second, nullptr, false);
    if (attrs.is_object() && attrs.contains("requiredSystemFeatures") &&
        attrs["requiredSystemFeatures"].is_array()) {
      for (const auto& f : attrs["requiredSystemFeatures"]) {
        if (f.is_string()) features.insert(f.get<std::string>());
      }
    }
  } else if (auto it = env.find("requiredSystemFeatures"); it != env.end()) {
    std::string word;
    for (char c : it->second + " ") {
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        if (!word.empty()) features.insert(word);
        word.clear();
      } else {
        word += c;
      }
    }
  }
  return {features.begin(), features.end()};
}

std::string drvNameFromFileName(std::string_view file) {
  const std::string_view base = file.substr(file.rfind('/') + 1);
  if (!base.ends_with(".drv")) return "";
  auto path = StorePath::parseBaseName(base);
  if (!path) return "";
  return path->name().substr(0, path->name().size() - 4);
}

Result<Derivation> parseDerivation(std::string_view text, std::string_view name) {
  return Parser(text).parse(name);
}

std::string writeDerivation(const Derivation& drv) {
  return writeDerivation(drv, false, nullptr);
}

std::string writeDerivation(const Derivation& drv, bool mask_outputs,
                            const std::map<std::string, std::set<std::string>>* input_drvs) {
  std::string s;
  s.reserve(1024);
  s += "Derive([";
  bool first = true;
  for (const auto& [name, out] : drv.outputs) {
    if (!first) s += ',';
    first = false;
    s += '(';
    printString(s, name);
    s += ',';
    printString(s, mask_outputs ? std::string_view() : std::string_view(out.path));
    s += ',';
    printString(s, out.hash_algo);
    s += ',';
    printString(s, out.hash);
    s += ')';
  }
  s += "],[";
  first = true;
  for (const auto& [path, names] : input_drvs ? *input_drvs : drv.input_drvs) {
    if (!first) s += ',';
    first = false;
    s += '(';
    printString(s, path);
    s += ',';
    printStrings(s, names);
    s += ')';
  }
  s += "],";
  printStrings(s, drv.input_srcs);
  s += ',';
  printString(s, drv.platform);
  s += ',';
  printString(s, drv.builder);
  s += ',';
  printStrings(s, drv.args);
  s += ",[";
  first = true;
  for (const auto& [key, value] : drv.env) {
    if (!first) s += ',';
    first = false;
    s += '(';
    printString(s, key);
    s += ',';
    printString(s, mask_outputs && drv.outputs.count(key) ? std::string_view() : value);
    s += ')';
  }
  s += "])";
  return s;
}

}  // namespace narcache
