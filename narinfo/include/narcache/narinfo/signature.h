#pragma once
// Ed25519 signatures of narinfos in Nix's key format (libsodium).
//
// Secret key file: "name:base64(64-byte secret key)"; public key: "name:base64(32 bytes)";
// a signature line: "name:base64(64-byte signature)". What is signed is NarInfo::fingerprint():
// "1;<StorePath>;<NarHash>;<NarSize>;<comma-joined full reference paths>". URL, Compression,
// FileHash, FileSize, Deriver and CA are not covered. Key names must be non-empty and contain
// no ':'. Keys are value types; nothing here is global state (libsodium is initialised once,
// thread-safely, on first use).

#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/narinfo.h"

namespace narcache {

class PublicKey {
 public:
  static Result<PublicKey> parse(std::string_view text);  // "name:base64"; whitespace trimmed
  const std::string& name() const { return name_; }
  std::string toString() const;
  // True when `signature` ("name:base64") is by this key over `message`.
  bool verify(std::string_view message, std::string_view signature) const;

 private:
  std::string name_;
  std::string key_;  // 32 raw bytes
};

class SecretKey {
 public:
  static Result<SecretKey> generate(std::string_view name);
  static Result<SecretKey> parse(std::string_view text);  // "name:base64"; whitespace trimmed
  const std::string& name() const { return name_; }
  std::string toString() const;
  PublicKey publicKey() const;
  // Returns "name:base64(signature)".
  std::string sign(std::string_view message) const;

 private:
  std::string name_;
  std::string key_;  // 64 raw bytes
};

// Adds this key's signature of info.fingerprint() unless an identical Sig is already there,
// keeping info.sigs sorted (NarInfo::addSignature).
void signNarInfo(NarInfo& info, const SecretKey& key);

// True when at least one of info.sigs is a valid signature by one of `trusted` (matched by name).
bool hasValidSignature(const NarInfo& info, const std::vector<PublicKey>& trusted);

}  // namespace narcache
