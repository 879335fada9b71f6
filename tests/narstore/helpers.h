#pragma once
// Test items for narstore tests, made with the formats layer (no Nix needed): a file or tree
// dumped to a NAR, compressed, and described by a NarInfo with the right hashes.

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "narcache/narinfo/compression.h"
#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/nar.h"
#include "narcache/narinfo/narinfo.h"
#include "narcache/narstore/store.h"
#include "support/support.h"

namespace narcache::narstore::testing {

struct TestItem {
  NarInfo info;      // FileHash/FileSize/URL set
  std::string file;  // compressed bytes
  std::string nar;
};

// Deterministic store path for a name.
inline StorePath pathFor(const std::string& name) {
  auto digest = compressHash(hashString(HashAlgo::kSha256, "path:" + name), 20);
  auto p = StorePath::parseBaseName(nix32Encode(Bytes(digest.data(), digest.size())) + "-" + name);
  EXPECT_TRUE(p.has_value());
  return *p;
}

inline TestItem makeItem(const std::string& name, const std::string& contents,
                         const std::vector<StorePath>& refs = {},
                         Compression method = Compression::kZstd) {
  test::TempDir scratch;
  test::writeFile(scratch / "f", contents);
  TestItem item;
  StringSink nar;
  EXPECT_TRUE(dumpPath(scratch / "f", nar).has_value());
  item.nar = nar.text;
  StringSink file;
  auto compressor = makeCompressor(method, file);
  EXPECT_TRUE(compressor.has_value());
  EXPECT_TRUE((*compressor)->write(asBytes(item.nar)).has_value());
  EXPECT_TRUE((*compressor)->finish().has_value());
  compressor->reset();
  item.file = file.text;
  item.info.path = pathFor(name);
  item.info.compression = std::string(compressionName(method));
  item.info.nar_hash = hashString(HashAlgo::kSha256, item.nar);
  item.info.nar_size = item.nar.size();
  Hash fh = hashString(HashAlgo::kSha256, item.file);
  item.info.file_hash = fh;
  item.info.file_size = item.file.size();
  item.info.url = "nar/" + fh.digestString(HashFormat::kNix32) + ".nar" +
                  std::string(compressionExtension(method));
  item.info.references = refs;
  std::sort(item.info.references.begin(), item.info.references.end());
  return item;
}

inline Result<AddResult> addItem(Store& store, const TestItem& item) {
  MemorySource src(item.file);
  return store.add(item.info, src);
}

inline std::vector<std::string> listDir(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

inline std::unique_ptr<Store> initStore(const std::filesystem::path& root,
                                        StoreOptions options = {}) {
  options.root = root;
  auto store = Store::init(options);
  EXPECT_TRUE(store.has_value()) << (store ? "" : store.error().message());
  return store ? std::move(*store) : nullptr;
}

}  // namespace narcache::narstore::testing
