#include "narcache/narinfo/narinfo.h"

#include <algorithm>
#include <array>
#include <charconv>

#include "quoted.h"

namespace narcache {
namespace {

// The keys narcache understands, in the order Nix writes them. Unknown keys are skipped.
enum Field : unsigned {
  kStorePath,
  kUrl,
  kCompression,
  kFileHash,
  kFileSize,
  kNarHash,
  kNarSize,
  kReferences,
  kDeriver,
  kSystem,
  kSig,
  kCa,
  kFieldCount,
};

constexpr std::array<std::string_view, kFieldCount> kFieldNames = {
    "StorePath", "URL",        "Compression", "FileHash", "FileSize", "NarHash",
    "NarSize",   "References", "Deriver",     "System",   "Sig",      "CA",
};

std::optional<Field> fieldByName(std::string_view name) {
  for (unsigned i = 0; i < kFieldCount; ++i) {
    if (kFieldNames[i] == name) return static_cast<Field>(i);
  }
  return std::nullopt;
}

Result<std::uint64_t> parseSize(std::string_view value) {
  if (value.empty() ||
      !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return fail(ErrorCode::kInvalidArgument, quoted(value) + " is not a decimal number");
  }
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size()) {
    return fail(ErrorCode::kInvalidArgument, quoted(value) + " is too large");
  }
  return n;
}

Result<Hash> parseSha256(std::string_view value) {
  auto hash = Hash::parse(value);
  if (!hash) return hash;
  if (hash->algo() != HashAlgo::kSha256) {
    return fail(ErrorCode::kInvalidArgument, quoted(value) + " is not a sha256 hash");
  }
  return hash;
}

// A content address as Nix 2.8 renders it: "text:sha256:<digest>" or
// "fixed:[r:]<algo>:<digest>" with algo md5, sha1, sha256 or sha512.
Status validateContentAddress(std::string_view ca) {
  std::string_view rest = ca;
  bool text = false;
  if (rest.starts_with("text:")) {
    text = true;
    rest.remove_prefix(5);
  } else if (rest.starts_with("fixed:")) {
    rest.remove_prefix(6);
    if (rest.starts_with("r:")) rest.remove_prefix(2);
  } else {
    return fail(ErrorCode::kInvalidArgument,
                quoted(ca) + " does not start with 'text:' or 'fixed:'");
  }
  const std::size_t colon = rest.find(':');
  if (colon == std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument, quoted(ca) + " has no '<algo>:<hash>'");
  }
  const std::string_view algo_name = rest.substr(0, colon);
  auto algo = parseHashAlgo(algo_name);
  if (!algo) {
    return fail(ErrorCode::kInvalidArgument,
                quoted(ca) + " has unknown hash algorithm " + quoted(algo_name));
  }
  if (text && *algo != HashAlgo::kSha256) {
    return fail(ErrorCode::kInvalidArgument, quoted(ca) + " is not a sha256 text hash");
  }
  // The digest is read as Nix's parseNonSRIUnprefixed does: base16, nix32 or base64 told apart
  // by length, and it must decode to exactly the digest size (a 44-character base64 string
  // ending in "==" holds 31 bytes, not 32).
  if (auto hash = Hash::parseUnprefixed(rest.substr(colon + 1), *algo); !hash) {
    return fail(hash.error().withContext(quoted(ca)));
  }
  return {};
}

// Parses the value of one known field into `info`.
Status parseField(NarInfo& info, Field field, std::string_view value) {
  switch (field) {
    case kStorePath: {
      auto path = StorePath::parse(value, info.store_dir);
      if (!path) return fail(path.error());
      info.path = std::move(*path);
      return {};
    }
    case kUrl:
      if (value.empty()) return fail(ErrorCode::kInvalidArgument, "must not be empty");
      info.url = value;
      return {};
    case kCompression:
      // Nix reads an empty Compression as the default.
      info.compression = value.empty() ? "bzip2" : std::string(value);
      return {};
    case kFileHash: {
      auto hash = parseSha256(value);
      if (!hash) return fail(hash.error());
      info.file_hash = *hash;
      return {};
    }
    case kFileSize: {
      auto size = parseSize(value);
      if (!size) return fail(size.error());
      info.file_size = *size;
      return {};
    }
    case kNarHash: {
      auto hash = parseSha256(value);
      if (!hash) return fail(hash.error());
      info.nar_hash = *hash;
      return {};
    }
    case kNarSize: {
      auto size = parseSize(value);
      if (!size) return fail(size.error());
      // Nix rejects a zero NarSize: no NAR is empty, and the fingerprint needs the size.
      if (*size == 0) return fail(ErrorCode::kInvalidArgument, "must not be zero");
      info.nar_size = *size;
      return {};
    }
    case kReferences: {
      // Space-separated base names; Nix skips empty tokens and keeps a sorted set.
      std::size_t pos = 0;
      while (pos < value.size()) {
        const std::size_t end = std::min(value.find(' ', pos), value.size());
        if (end > pos) {
          auto ref = StorePath::parseBaseName(value.substr(pos, end - pos));
          if (!ref) return fail(ref.error());
          info.references.push_back(std::move(*ref));
        }
        pos = end + 1;
      }
      std::sort(info.references.begin(), info.references.end());
      info.references.erase(std::unique(info.references.begin(), info.references.end()),
                            info.references.end());
      return {};
    }
    case kDeriver: {
      if (value == "unknown-deriver") return {};  // what old Nix wrote for "none"
      auto deriver = StorePath::parseBaseName(value);
      if (!deriver) return fail(deriver.error());
      info.deriver = std::move(*deriver);
      return {};
    }
    case kSystem: info.system = value; return {};
    case kSig: info.addSignature(std::string(value)); return {};
    case kCa:
      if (!value.empty()) NARCACHE_TRY(validateContentAddress(value));
      info.ca = value;
      return {};
    case kFieldCount: break;
  }
  return fail(ErrorCode::kInternal, "unknown field");
}

std::vector<std::string> sortedUniqueBaseNames(const std::vector<StorePath>& refs) {
  std::vector<std::string> names;
  names.reserve(refs.size());
  for (const auto& ref : refs) names.push_back(ref.baseName());
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

}  // namespace

Result<NarInfo> NarInfo::parse(std::string_view text, std::string_view source,
                               std::string_view store_dir) {
  if (auto ok = validateStoreDir(store_dir); !ok) return fail(ok.error().withContext(source));
  NarInfo info;
  info.store_dir = store_dir;
  std::array<bool, kFieldCount> seen{};
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    ++line_no;
    const auto where = [&] { return std::string(source) + " line " + std::to_string(line_no); };
    const std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) {
      return fail(ErrorCode::kInvalidArgument, where() + ": missing newline at end of file");
    }
    const std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;

    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return fail(ErrorCode::kInvalidArgument, where() + ": expected 'Key: value'");
    }
    const std::string_view key = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    const auto field = fieldByName(key);
    if (!field) continue;  // unknown keys are ignored, as Nix does
    const auto field_error = [&](std::string_view message) {
      return Error(ErrorCode::kInvalidArgument,
                   where() + ": " + std::string(key) + ": " + std::string(message));
    };
    if (!value.empty()) {
      if (value.front() != ' ') return fail(field_error("expected a space after ':'"));
      value.remove_prefix(1);
    }
    if (seen[*field] && *field != kSig) return fail(field_error("duplicate field"));
    seen[*field] = true;
    if (auto ok = parseField(info, *field, value); !ok) {
      return fail(field_error(ok.error().message()));
    }
  }
  for (Field required : {kStorePath, kUrl, kNarHash, kNarSize}) {
    if (!seen[required]) {
      return fail(ErrorCode::kInvalidArgument,
                  std::string(source) + ": missing " + std::string(kFieldNames[required]));
    }
  }
  return info;
}

void NarInfo::addSignature(std::string sig) {
  auto it = std::lower_bound(sigs.begin(), sigs.end(), sig);
  if (it == sigs.end() || *it != sig) sigs.insert(it, std::move(sig));
}

std::string NarInfo::toString() const {
  std::string out;
  out.reserve(512);
  const auto line = [&out](std::string_view key, std::string_view value) {
    out += key;
    out += ": ";
    out += value;
    out += '\n';
  };
  line("StorePath", fullPath());
  line("URL", url);
  line("Compression", compression.empty() ? std::string_view("bzip2") : compression);
  if (file_hash) line("FileHash", file_hash->toString(HashFormat::kNix32));
  if (file_size) line("FileSize", std::to_string(*file_size));
  line("NarHash", nar_hash.toString(HashFormat::kNix32));
  line("NarSize", std::to_string(nar_size));
  std::string refs;
  for (const auto& name : sortedUniqueBaseNames(references)) {
    if (!refs.empty()) refs += ' ';
    refs += name;
  }
  line("References", refs);  // written even when empty: "References: "
  if (deriver) line("Deriver", deriver->baseName());
  if (!system.empty()) line("System", system);
  std::vector<std::string> sorted_sigs = sigs;
  std::sort(sorted_sigs.begin(), sorted_sigs.end());
  sorted_sigs.erase(std::unique(sorted_sigs.begin(), sorted_sigs.end()), sorted_sigs.end());
  for (const auto& sig : sorted_sigs) line("Sig", sig);
  if (!ca.empty()) line("CA", ca);
  return out;
}

std::string NarInfo::fingerprint() const {
  std::string out = "1;";
  out += fullPath();
  out += ';';
  out += nar_hash.toString(HashFormat::kNix32);
  out += ';';
  out += std::to_string(nar_size);
  out += ';';
  bool first = true;
  for (const auto& name : sortedUniqueBaseNames(references)) {
    if (!first) out += ',';
    first = false;
    out += store_dir;
    out += '/';
    out += name;
  }
  return out;
}

}  // namespace narcache
