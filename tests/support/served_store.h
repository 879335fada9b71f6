#pragma once
// ServedStore: a narcache store (created with `store init` when new) served by a real
// `narcache serve` child process on an ephemeral loopback port. The port is read from the
// server's "serving ... on http://127.0.0.1:PORT" line. Killed on destruction.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/support.h"

namespace narcache::test {

class ServedStore {
 public:
  // `extra` are more `narcache serve` arguments (keys, token, ...).
  explicit ServedStore(const std::filesystem::path& root, std::vector<std::string> extra = {});

  // The cache most build tests need: a new store under dir/server with store dir `store_dir`,
  // served signing with a new key named `key_name` (dir/sk, dir/pk) and taking uploads with
  // `token` (written to dir/token). Sets `public_key` to the public key text.
  static std::unique_ptr<ServedStore> signing(const std::filesystem::path& dir,
                                              const std::string& store_dir,
                                              const std::string& key_name, const std::string& token,
                                              std::string& public_key);

  // (Re)starts the server; fails the test if it does not come up within 10 s.
  void start();
  int stop(int sig) { return process_->stop(sig); }
  std::string log() const { return process_->err(); }
  int port() const { return port_; }
  std::string url(const std::string& path = "") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path root_;
  std::vector<std::string> extra_;
  std::unique_ptr<BackgroundProcess> process_;
  int port_ = 0;
};

}  // namespace narcache::test
