#include "narcache/narinfo/signature.h"

#include <sodium.h>

#include <cstdio>
#include <cstdlib>

#include "narcache/narinfo/encoding.h"

namespace narcache {
namespace {

// libsodium must be initialised before use; sodium_init() is thread-safe and the function-local
// static makes it run once.
void ensureSodium() {
  static const int kInit = [] {
    const int rc = sodium_init();
    if (rc < 0) {
      std::fputs("narcache: sodium_init failed\n", stderr);
      std::abort();
    }
    return rc;
  }();
  (void)kInit;
}

std::string_view trim(std::string_view s) {
  const auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

struct NamedKey {
  std::string name;
  std::string key;
};

// Canonical base64, with its '=' padding optional: Nix 2.8 reads keys and signatures without it
// (and people copy keys without it). Anything else non-canonical stays an error.
Result<std::vector<std::byte>> decodeKeyBase64(std::string_view text) {
  if (text.size() % 4 == 0) return base64Decode(text);
  std::string padded(text);
  padded.append(4 - text.size() % 4, '=');
  return base64Decode(padded);
}

// Parses "name:base64" holding exactly `size` bytes; `what` names the kind in errors.
Result<NamedKey> parseNamed(std::string_view text, std::size_t size, std::string_view what) {
  text = trim(text);
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument, std::string(what) + " is not of the form 'name:key'");
  }
  if (colon == 0) {
    return fail(ErrorCode::kInvalidArgument, std::string(what) + " has an empty name");
  }
  auto bytes = decodeKeyBase64(text.substr(colon + 1));
  if (!bytes) {
    return fail(
        ErrorCode::kInvalidArgument,
        std::string(what) + " '" + std::string(text.substr(0, colon)) + "' is not valid base64");
  }
  if (bytes->size() != size) {
    return fail(ErrorCode::kInvalidArgument,
                std::string(what) + " '" + std::string(text.substr(0, colon)) + "' has " +
                    std::to_string(bytes->size()) + " bytes, expected " + std::to_string(size));
  }
  return NamedKey{std::string(text.substr(0, colon)),
                  std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size())};
}

Status validateKeyName(std::string_view name) {
  if (name.empty()) return fail(ErrorCode::kInvalidArgument, "key name is empty");
  if (name.find(':') != std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument, "key name '" + std::string(name) + "' contains ':'");
  }
  return {};
}

}  // namespace

Result<PublicKey> PublicKey::parse(std::string_view text) {
  auto named = parseNamed(text, crypto_sign_PUBLICKEYBYTES, "public key");
  if (!named) return fail(named.error());
  PublicKey key;
  key.name_ = std::move(named->name);
  key.key_ = std::move(named->key);
  return key;
}

std::string PublicKey::toString() const {
  return name_ + ":" + base64Encode(asBytes(key_));
}

bool PublicKey::verify(std::string_view message, std::string_view signature) const {
  ensureSodium();
  const std::size_t colon = signature.find(':');
  if (colon == std::string_view::npos || signature.substr(0, colon) != name_) return false;
  auto sig = decodeKeyBase64(signature.substr(colon + 1));
  if (!sig || sig->size() != crypto_sign_BYTES) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(),
                                     reinterpret_cast<const unsigned char*>(key_.data())) == 0;
}

Result<SecretKey> SecretKey::generate(std::string_view name) {
  NARCACHE_TRY(validateKeyName(name));
  ensureSodium();
  SecretKey key;
  key.name_ = name;
  key.key_.resize(crypto_sign_SECRETKEYBYTES);
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_keypair(pk, reinterpret_cast<unsigned char*>(key.key_.data()));
  return key;
}

Result<SecretKey> SecretKey::parse(std::string_view text) {
  auto named = parseNamed(text, crypto_sign_SECRETKEYBYTES, "secret key");
  if (!named) return fail(named.error());
  SecretKey key;
  key.name_ = std::move(named->name);
  key.key_ = std::move(named->key);
  return key;
}

std::string SecretKey::toString() const {
  return name_ + ":" + base64Encode(asBytes(key_));
}

PublicKey SecretKey::publicKey() const {
  ensureSodium();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(pk, reinterpret_cast<const unsigned char*>(key_.data()));
  const std::string text =
      name_ + ":" + base64Encode(Bytes(reinterpret_cast<const std::byte*>(pk), sizeof pk));
  return *PublicKey::parse(text);
}

std::string SecretKey::sign(std::string_view message) const {
  ensureSodium();
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size(), reinterpret_cast<const unsigned char*>(key_.data()));
  return name_ + ":" + base64Encode(Bytes(reinterpret_cast<const std::byte*>(sig), sizeof sig));
}

void signNarInfo(NarInfo& info, const SecretKey& key) {
  // Ed25519 signatures are deterministic, so re-signing gives an identical line, which
  // addSignature keeps once.
  info.addSignature(key.sign(info.fingerprint()));
}

bool hasValidSignature(const NarInfo& info, const std::vector<PublicKey>& trusted) {
  const std::string fingerprint = info.fingerprint();
  for (const auto& sig : info.sigs) {
    const std::size_t colon = sig.find(':');
    if (colon == std::string::npos) continue;
    const std::string_view name = std::string_view(sig).substr(0, colon);
    for (const auto& key : trusted) {
      if (key.name() == name && key.verify(fingerprint, sig)) return true;
    }
  }
  return false;
}

}  // namespace narcache
