#include "support/served_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <thread>

namespace narcache::test {

ServedStore::ServedStore(const std::filesystem::path& root, std::vector<std::string> extra)
    : root_(root), extra_(std::move(extra)) {
  if (!std::filesystem::exists(root_ / "db")) {
    auto init = narcache({"store", "init", "--store", root_.string()});
    EXPECT_EQ(init.exit_code, 0) << init.err;
  }
  start();
}

std::unique_ptr<ServedStore> ServedStore::signing(const std::filesystem::path& dir,
                                                  const std::string& store_dir,
                                                  const std::string& key_name,
                                                  const std::string& token,
                                                  std::string& public_key) {
  auto key = narcache({"key", "generate", "--name", key_name, "--secret", (dir / "sk").string(),
                       "--public", (dir / "pk").string()});
  EXPECT_EQ(key.exit_code, 0) << key.err;
  public_key = readFile(dir / "pk");
  while (!public_key.empty() && (public_key.back() == '\n' || public_key.back() == ' ')) {
    public_key.pop_back();
  }
  writeFile(dir / "token", token + "\n");
  auto init =
      narcache({"store", "init", "--store", (dir / "server").string(), "--store-dir", store_dir});
  EXPECT_EQ(init.exit_code, 0) << init.err;
  return std::make_unique<ServedStore>(
      dir / "server", std::vector<std::string>{"--secret-key", (dir / "sk").string(),
                                               "--upload-token-file", (dir / "token").string()});
}

void ServedStore::start() {
  std::vector<std::string> args = {NARCACHE_BIN, "serve",       "--store",     root_.string(),
                                   "--listen",   "127.0.0.1:0", "--log-level", "debug"};
  args.insert(args.end(), extra_.begin(), extra_.end());
  process_ = std::make_unique<BackgroundProcess>(args);
  const std::string marker = "on http://127.0.0.1:";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string err = process_->err();
    std::size_t at = err.find(marker);
    if (at != std::string::npos) {
      port_ = std::atoi(err.c_str() + at + marker.size());
      if (port_ > 0) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "narcache serve did not start: " << process_->err();
}

}  // namespace narcache::test
