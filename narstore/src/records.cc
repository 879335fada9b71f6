// Record encodings of the LMDB tables and nar file names (see store_impl.h).

#include <charconv>
#include <cstring>

#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/hash.h"
#include "store_impl.h"

namespace narcache::narstore {
namespace {

// Splits off the first line of `data` (without its '\n'); nullopt when there is no '\n'.
std::optional<std::string_view> takeLine(std::string_view& data) {
  auto nl = data.find('\n');
  if (nl == std::string_view::npos) return std::nullopt;
  std::string_view line = data.substr(0, nl);
  data.remove_prefix(nl + 1);
  return line;
}

template <typename T>
std::optional<T> parseNumber(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string oneLine(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

}  // namespace

std::string encodeU64(std::uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

std::uint64_t decodeU64(std::string_view data) {
  if (data.size() != 8) return 0;
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(data[i]);
  return v;
}

std::string ItemRecord::encode() const {
  return "1\n" + std::to_string(created) + "\n" + std::to_string(nar_size) + "\n" +
         oneLine(uploader) + "\n" + base_name + "\n" + narinfo;
}

std::optional<ItemRecord> ItemRecord::decode(std::string_view data) {
  ItemRecord r;
  auto version = takeLine(data);
  auto created = takeLine(data);
  auto nar_size = takeLine(data);
  auto uploader = takeLine(data);
  auto base_name = takeLine(data);
  if (!base_name || *version != "1") return std::nullopt;
  auto c = parseNumber<std::int64_t>(*created);
  auto n = parseNumber<std::uint64_t>(*nar_size);
  if (!c || !n) return std::nullopt;
  r.created = *c;
  r.nar_size = *n;
  r.uploader = std::string(*uploader);
  r.base_name = std::string(*base_name);
  r.narinfo = std::string(data);
  return r;
}

std::string TombstoneRecord::encode() const {
  return "1\n" + std::to_string(tombstone.when) + "\n" + oneLine(tombstone.by) + "\n" + base_name +
         "\n" + nar_hash + "\n" + tombstone.reason;
}

std::optional<TombstoneRecord> TombstoneRecord::decode(std::string_view data) {
  TombstoneRecord r;
  auto version = takeLine(data);
  auto when = takeLine(data);
  auto by = takeLine(data);
  auto base_name = takeLine(data);
  auto nar_hash = takeLine(data);
  if (!nar_hash || *version != "1") return std::nullopt;
  auto w = parseNumber<std::int64_t>(*when);
  if (!w) return std::nullopt;
  r.tombstone.when = *w;
  r.tombstone.by = std::string(*by);
  r.tombstone.reason = std::string(data);
  r.base_name = std::string(*base_name);
  r.nar_hash = std::string(*nar_hash);
  return r;
}

std::string encodeId(std::uint32_t id) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((id >> (8 * (3 - i))) & 0xff);
  return out;
}

std::uint32_t decodeId(std::string_view data) {
  if (data.size() != 4) return 0;
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(data[i]);
  return v;
}

std::string GcNodeRecord::encode() const {
  std::string out = hash_part;
  out.resize(32, '\0');
  out += encodeU64(static_cast<std::uint64_t>(created));
  out += encodeU64(static_cast<std::uint64_t>(last_access));
  out += encodeU64(nar_size);
  out += encodeU64(file_size);
  out += encodeU64(file_id).substr(0, 4);  // little-endian: the low 4 bytes
  return out;
}

std::optional<GcNodeRecord> GcNodeRecord::decode(std::string_view data) {
  if (data.size() != kSize) return std::nullopt;
  GcNodeRecord r;
  r.hash_part = std::string(data.substr(0, 32));
  r.created = static_cast<std::int64_t>(decodeU64(data.substr(32, 8)));
  r.last_access = static_cast<std::int64_t>(decodeU64(data.substr(40, 8)));
  r.nar_size = decodeU64(data.substr(48, 8));
  r.file_size = decodeU64(data.substr(56, 8));
  for (int i = 3; i >= 0; --i) {
    r.file_id = (r.file_id << 8) | static_cast<unsigned char>(data[64 + i]);
  }
  return r;
}

std::string RootRecord::encode() const {
  std::string out = "1\n" + std::to_string(created) + "\n" +
                    (expires ? std::to_string(*expires) : std::string("-")) + "\n";
  for (const auto& b : base_names) out += b + "\n";
  return out;
}

std::optional<RootRecord> RootRecord::decode(std::string_view data) {
  RootRecord r;
  auto version = takeLine(data);
  auto created = takeLine(data);
  auto expires = takeLine(data);
  if (!expires || *version != "1") return std::nullopt;
  auto c = parseNumber<std::int64_t>(*created);
  if (!c) return std::nullopt;
  r.created = *c;
  if (*expires != "-") {
    auto e = parseNumber<std::int64_t>(*expires);
    if (!e) return std::nullopt;
    r.expires = *e;
  }
  while (auto line = takeLine(data)) {
    if (!line->empty()) r.base_names.emplace_back(*line);
  }
  return r;
}

std::string FileRecord::encode() const {
  return encodeU64(refcount) + encodeU64(size) + encodeId(id);
}

std::optional<FileRecord> FileRecord::decode(std::string_view data) {
  if (data.size() != 16 && data.size() != 20) return std::nullopt;  // 16: schema 1, no id
  return FileRecord{decodeU64(data.substr(0, 8)), decodeU64(data.substr(8, 8)),
                    data.size() == 20 ? decodeId(data.substr(16, 4)) : 0};
}

std::string narFileName(const Hash& file_hash, Compression compression) {
  return file_hash.digestString(HashFormat::kNix32) + ".nar" +
         std::string(compressionExtension(compression));
}

Result<NarFileName> parseNarFileName(std::string_view name) {
  constexpr std::size_t kDigestLength = nix32Length(32);
  auto bad = [&] {
    return fail(ErrorCode::kInvalidArgument,
                "'" + std::string(name.substr(0, 200)) +
                    "' is not a nar file name (<nix32 sha256>.nar[.zst|.xz|.bz2|.gz|.lz])");
  };
  if (name.size() < kDigestLength + 4 || name.substr(kDigestLength, 4) != ".nar") return bad();
  std::string_view ext = name.substr(kDigestLength + 4);
  std::optional<Compression> compression;
  for (Compression c : {Compression::kNone, Compression::kZstd, Compression::kXz,
                        Compression::kBzip2, Compression::kGzip, Compression::kLzip}) {
    if (compressionExtension(c) == ext) compression = c;
  }
  if (!compression) return bad();
  auto digest = nix32Decode(name.substr(0, kDigestLength), 32);
  if (!digest) return bad();
  auto hash = Hash::fromBytes(HashAlgo::kSha256, Bytes(digest->data(), digest->size()));
  if (!hash) return bad();
  return NarFileName{*hash, *compression};
}

}  // namespace narcache::narstore
