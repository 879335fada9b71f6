#include "narcache/narinfo/store_path.h"

#include <optional>

#include "narcache/narinfo/encoding.h"
#include "quoted.h"

namespace narcache {
namespace {

bool isNameChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' ||
         c == '-' || c == '.' || c == '_' || c == '?' || c == '=';
}

// Shows a byte for an error message: printable ASCII as itself, anything else as \xNN.
std::string showChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u < 0x80) return quoted(std::string_view(&c, 1));
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string("'\\x") + kHex[u >> 4] + kHex[u & 0xf] + "'";
}

// Why a name is invalid, or nullopt; `bad` receives the offending character.
enum class NameProblem { kEmpty, kTooLong, kIllegalChar };

std::optional<NameProblem> checkName(std::string_view name, char& bad) {
  if (name.empty()) return NameProblem::kEmpty;
  if (name.size() > kMaxStorePathNameLength) return NameProblem::kTooLong;
  for (char c : name) {
    if (!isNameChar(c)) {
      bad = c;
      return NameProblem::kIllegalChar;
    }
  }
  return std::nullopt;
}

std::optional<std::size_t> firstBadHashChar(std::string_view hash_part) {
  for (std::size_t i = 0; i < hash_part.size(); ++i) {
    if (!isNix32Char(hash_part[i])) return i;
  }
  return std::nullopt;
}

}  // namespace

Status validateStoreDir(std::string_view store_dir) {
  if (store_dir.empty() || store_dir.front() != '/') {
    return fail(ErrorCode::kInvalidArgument,
                "store dir " + quoted(store_dir) + " is not an absolute path");
  }
  if (store_dir == "/") {
    return fail(ErrorCode::kInvalidArgument, "store dir may not be '/'");
  }
  if (store_dir.back() == '/') {
    return fail(ErrorCode::kInvalidArgument,
                "store dir " + quoted(store_dir) + " has a trailing slash");
  }
  // Walk the components after the leading '/'.
  std::string_view rest = store_dir.substr(1);
  while (true) {
    const std::size_t slash = rest.find('/');
    const std::string_view component = rest.substr(0, slash);
    if (component.empty()) {
      return fail(ErrorCode::kInvalidArgument, "store dir " + quoted(store_dir) + " contains '//'");
    }
    if (component == "." || component == "..") {
      return fail(ErrorCode::kInvalidArgument, "store dir " + quoted(store_dir) + " contains a " +
                                                   quoted(component) + " component");
    }
    if (component.find('\0') != std::string_view::npos) {
      return fail(ErrorCode::kInvalidArgument,
                  "store dir " + quoted(store_dir) + " contains a NUL byte");
    }
    if (slash == std::string_view::npos) break;
    rest = rest.substr(slash + 1);
  }
  return {};
}

Status validateStorePathName(std::string_view name) {
  char bad = 0;
  const auto problem = checkName(name, bad);
  if (!problem) return {};
  const std::string subject = "store path name " + quoted(name);
  switch (*problem) {
    case NameProblem::kEmpty: return fail(ErrorCode::kInvalidArgument, "store path name is empty");
    case NameProblem::kTooLong:
      return fail(
          ErrorCode::kInvalidArgument,
          subject + " is longer than " + std::to_string(kMaxStorePathNameLength) + " characters");
    case NameProblem::kIllegalChar:
      return fail(ErrorCode::kInvalidArgument,
                  subject + " contains illegal character " + showChar(bad));
  }
  return {};
}

Status validateHashPart(std::string_view hash_part) {
  const std::string subject = "store path hash " + quoted(hash_part);
  if (hash_part.size() != kStorePathHashLength) {
    return fail(ErrorCode::kInvalidArgument, subject + " has " + std::to_string(hash_part.size()) +
                                                 " characters, expected " +
                                                 std::to_string(kStorePathHashLength));
  }
  if (auto i = firstBadHashChar(hash_part)) {
    return fail(ErrorCode::kInvalidArgument,
                subject + " contains illegal nix32 character " + showChar(hash_part[*i]));
  }
  return {};
}

Result<StorePath> StorePath::parseBaseName(std::string_view base_name) {
  const std::string subject = "store path " + quoted(base_name);
  if (base_name.size() < kStorePathHashLength + 2) {
    return fail(ErrorCode::kInvalidArgument, subject + " is too short");
  }
  const std::string_view hash_part = base_name.substr(0, kStorePathHashLength);
  if (auto i = firstBadHashChar(hash_part)) {
    return fail(ErrorCode::kInvalidArgument, subject + " contains illegal nix32 character " +
                                                 showChar(hash_part[*i]) + " in its hash");
  }
  if (base_name[kStorePathHashLength] != '-') {
    return fail(ErrorCode::kInvalidArgument, subject + " has no '-' after its " +
                                                 std::to_string(kStorePathHashLength) +
                                                 "-character hash");
  }
  const std::string_view name = base_name.substr(kStorePathHashLength + 1);
  char bad = 0;
  if (const auto problem = checkName(name, bad)) {
    switch (*problem) {
      case NameProblem::kEmpty:  // excluded by the length check above
      case NameProblem::kTooLong:
        return fail(ErrorCode::kInvalidArgument, subject + " has a name longer than " +
                                                     std::to_string(kMaxStorePathNameLength) +
                                                     " characters");
      case NameProblem::kIllegalChar:
        return fail(ErrorCode::kInvalidArgument,
                    subject + " contains illegal character " + showChar(bad));
    }
  }
  return StorePath(std::string(hash_part), std::string(name));
}

Result<StorePath> StorePath::parse(std::string_view full_path, std::string_view store_dir) {
  if (auto ok = validateStoreDir(store_dir); !ok) return fail(ok.error());
  if (full_path.size() <= store_dir.size() || full_path.substr(0, store_dir.size()) != store_dir ||
      full_path[store_dir.size()] != '/') {
    return fail(ErrorCode::kInvalidArgument,
                "path " + quoted(full_path) + " is not in the store " + quoted(store_dir));
  }
  const std::string_view base_name = full_path.substr(store_dir.size() + 1);
  if (base_name.find('/') != std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument,
                "path " + quoted(full_path) + " is not directly in the store " + quoted(store_dir));
  }
  return parseBaseName(base_name);
}

std::string StorePath::fullPath(std::string_view store_dir) const {
  std::string out(store_dir);
  out += '/';
  out += hash_part_;
  out += '-';
  out += name_;
  return out;
}

}  // namespace narcache
