// Store paths of derivations and their outputs, hashDerivationModulo, and the `derivation`
// builtin, following Nix 2.8 (libstore/derivations.cc, libstore/store-api.cc,
// libexpr/primops.cc derivationStrict).
#include <string>
#include <string_view>

#include "narcache/narinfo/derivation.h"
#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/store_path.h"

namespace narcache {
namespace {

// Recursion limit for input derivations: content addressing makes cycles impossible in a real
// store, but a loader could still produce one.
constexpr int kMaxDepth = 2048;

// The hash of a fixed output as Nix 2.8 reads it from a .drv: `hash_algo` is "[r:]<algo>" and
// the hash is parsed with Hash::parseNonSRIUnprefixed (base16 in either case, nix32 or base64).
// Nix hashes its lowercase base16 form, never the text as written, so an upper-case or nix32
// hash gives the same paths as the lowercase base16 one.
Result<Hash> parseFixedHash(std::string_view hash_algo, std::string_view hash) {
  std::string_view algo_name = hash_algo;
  if (algo_name.starts_with("r:")) algo_name.remove_prefix(2);
  auto algo = parseHashAlgo(algo_name);
  if (!algo) return fail(algo.error());
  auto parsed = Hash::parseUnprefixed(hash, *algo);
  if (!parsed) return fail(parsed.error().withContext("output hash"));
  return parsed;
}

std::string outputPathName(std::string_view drv_name, std::string_view output) {
  std::string name(drv_name);
  if (output != "out") {
    name += '-';
    name += output;
  }
  return name;
}

Status validateInStoreDir(const std::string& path, std::string_view store_dir) {
  auto parsed = StorePath::parse(path, store_dir);
  if (!parsed) return fail(parsed.error().withContext("reference '" + path + "'"));
  return {};
}

Result<DrvModuloHash> moduloHash(const Derivation& drv, std::string_view store_dir,
                                 const DerivationLoader& load, bool mask_outputs, DrvHashMemo* memo,
                                 int depth);

Result<DrvModuloHash> inputDrvModuloHash(const std::string& drv_path, std::string_view store_dir,
                                         const DerivationLoader& load, DrvHashMemo* memo,
                                         int depth) {
  if (memo != nullptr) {
    if (auto it = memo->find(drv_path); it != memo->end()) return it->second;
  }
  if (depth >= kMaxDepth) {
    return fail(ErrorCode::kInvalidArgument,
                "input derivations nested too deeply (a cycle?) at '" + drv_path + "'");
  }
  if (!load) {
    return fail(ErrorCode::kNotFound, "no way to load input derivation '" + drv_path + "'");
  }
  auto input = load(drv_path);
  if (!input) return fail(input.error().withContext("input derivation '" + drv_path + "'"));
  auto h = moduloHash(*input, store_dir, load, false, memo, depth + 1);
  if (!h) return fail(h.error().withContext("input derivation '" + drv_path + "'"));
  if (memo != nullptr) memo->insert_or_assign(drv_path, *h);
  return h;
}

Result<DrvModuloHash> moduloHash(const Derivation& drv, std::string_view store_dir,
                                 const DerivationLoader& load, bool mask_outputs, DrvHashMemo* memo,
                                 int depth) {
  bool any_fixed = false;
  for (const auto& [name, out] : drv.outputs) any_fixed = any_fixed || out.isFixed();
  if (any_fixed) {
    if (!drv.isFixedOutput()) {
      return fail(ErrorCode::kInvalidArgument,
                  "a fixed-output derivation must have the single output 'out'");
    }
    const DerivationOutput& out = drv.outputs.at("out");
    auto hash = parseFixedHash(out.hash_algo, out.hash);
    if (!hash) return fail(hash.error());
    const std::string hex = hash->digestString(HashFormat::kBase16);
    auto path = makeFixedOutputPath(out.hash_algo, out.hash, drv.name, store_dir);
    if (!path) return fail(path.error());
    return DrvModuloHash{
        hashString(HashAlgo::kSha256, "fixed:out:" + out.hash_algo + ":" + hex + ":" + *path),
        true};
  }

  // Nix keys the replaced inputs by base16 hash in a std::map, so the written order follows the
  // hashes, not the paths. Two input derivations can have the same modulo hash (they differ only
  // in fixed-output inputs that give the same output): their output names are merged, as Nix's
  // `inputs2[hash].insert(output)` does.
  std::map<std::string, std::set<std::string>> inputs;
  for (const auto& [path, outputs] : drv.input_drvs) {
    auto h = inputDrvModuloHash(path, store_dir, load, memo, depth);
    if (!h) return fail(h.error());
    const std::string hex = h->hash.digestString(HashFormat::kBase16);
    if (h->fixed_output) {
      if (outputs.count("out")) inputs[hex].insert("out");
    } else {
      inputs[hex].insert(outputs.begin(), outputs.end());
    }
  }
  return DrvModuloHash{hashString(HashAlgo::kSha256, writeDerivation(drv, mask_outputs, &inputs)),
                       false};
}

}  // namespace

Result<std::string> makeStorePath(std::string_view type, const Hash& hash, std::string_view name,
                                  std::string_view store_dir) {
  NARCACHE_TRY(validateStoreDir(store_dir));
  if (auto s = validateStorePathName(name); !s) {
    return fail(s.error().withContext("store path name '" + std::string(name) + "'"));
  }
  if (hash.algo() != HashAlgo::kSha256) {
    return fail(ErrorCode::kInvalidArgument, "store path hashes must be sha256");
  }
  std::string fingerprint(type);
  fingerprint += ":sha256:";
  fingerprint += hash.digestString(HashFormat::kBase16);
  fingerprint += ':';
  fingerprint += store_dir;
  fingerprint += ':';
  fingerprint += name;
  auto compressed = compressHash(hashString(HashAlgo::kSha256, fingerprint), 20);
  std::string path(store_dir);
  path += '/';
  path += nix32Encode(Bytes(compressed.data(), compressed.size()));
  path += '-';
  path += name;
  return path;
}

Result<std::string> makeOutputPath(std::string_view output, const Hash& drv_hash,
                                   std::string_view drv_name, std::string_view store_dir) {
  return makeStorePath("output:" + std::string(output), drv_hash, outputPathName(drv_name, output),
                       store_dir);
}

std::string hashPlaceholder(std::string_view output) {
  return "/" + hashString(HashAlgo::kSha256, "nix-output:" + std::string(output))
                   .digestString(HashFormat::kNix32);
}

std::string rewriteOutputPlaceholders(std::string text, const Derivation& drv) {
  for (const auto& [name, out] : drv.outputs) {
    const std::string placeholder = hashPlaceholder(name);
    for (std::size_t at = text.find(placeholder); at != std::string::npos;
         at = text.find(placeholder, at + out.path.size())) {
      text.replace(at, placeholder.size(), out.path);
    }
  }
  return text;
}

Result<std::string> makeFixedOutputPath(std::string_view hash_algo, std::string_view hash,
                                        std::string_view name, std::string_view store_dir) {
  auto parsed = parseFixedHash(hash_algo, hash);
  if (!parsed) return fail(parsed.error());
  if (hash_algo == "r:sha256") return makeStorePath("source", *parsed, name, store_dir);
  const std::string inner =
      "fixed:out:" + std::string(hash_algo) + ":" + parsed->digestString(HashFormat::kBase16) + ":";
  return makeStorePath("output:out", hashString(HashAlgo::kSha256, inner), name, store_dir);
}

Result<std::string> makeTextPath(std::string_view name, std::string_view contents,
                                 const std::set<std::string>& references,
                                 std::string_view store_dir) {
  // All references lie in store_dir, so ordering full paths orders them by base name, as
  // Nix's StorePathSet does.
  std::string type = "text";
  for (const auto& ref : references) {
    NARCACHE_TRY(validateInStoreDir(ref, store_dir));
    type += ':';
    type += ref;
  }
  return makeStorePath(type, hashString(HashAlgo::kSha256, contents), name, store_dir);
}

Result<std::string> derivationStorePath(const Derivation& drv, std::string_view store_dir) {
  if (drv.name.empty()) {
    return fail(ErrorCode::kInvalidArgument, "derivation has no name (no env \"name\")");
  }
  std::set<std::string> refs = drv.input_srcs;
  for (const auto& [path, outputs] : drv.input_drvs) refs.insert(path);
  return makeTextPath(drv.name + ".drv", writeDerivation(drv), refs, store_dir);
}

Result<Hash> hashDerivationModulo(const Derivation& drv, std::string_view store_dir,
                                  const DerivationLoader& load, bool mask_outputs,
                                  DrvHashMemo* memo) {
  DrvHashMemo local;
  auto h = moduloHash(drv, store_dir, load, mask_outputs, memo != nullptr ? memo : &local, 0);
  if (!h) return fail(h.error());
  return h->hash;
}

Status computeOutputPaths(Derivation& drv, std::string_view store_dir, const DerivationLoader& load,
                          DrvHashMemo* memo) {
  if (drv.name.empty()) {
    return fail(ErrorCode::kInvalidArgument, "derivation has no name (no env \"name\")");
  }
  if (drv.outputs.empty()) {
    return fail(ErrorCode::kInvalidArgument, "derivation has no outputs");
  }
  if (drv.isFixedOutput()) {
    DerivationOutput& out = drv.outputs.at("out");
    auto path = makeFixedOutputPath(out.hash_algo, out.hash, drv.name, store_dir);
    if (!path) return fail(path.error());
    out.path = *path;
    drv.env["out"] = *path;
    return {};
  }
  for (auto& [name, out] : drv.outputs) {
    if (out.isFixed() || !out.hash_algo.empty()) {
      return fail(ErrorCode::kInvalidArgument,
                  "output '" + name +
                      "': fixed or content-addressed outputs must be the single output 'out'");
    }
    out.path.clear();
    drv.env[name] = "";
  }
  auto h = hashDerivationModulo(drv, store_dir, load, true, memo);
  if (!h) return fail(h.error());
  for (auto& [name, out] : drv.outputs) {
    auto path = makeOutputPath(name, *h, drv.name, store_dir);
    if (!path) return fail(path.error().withContext("output '" + name + "'"));
    out.path = *path;
    drv.env[name] = *path;
  }
  return {};
}

Status checkOutputPaths(const Derivation& drv, std::string_view store_dir,
                        const DerivationLoader& load, DrvHashMemo* memo) {
  Derivation expected = drv;
  NARCACHE_TRY(computeOutputPaths(expected, store_dir, load, memo));
  for (const auto& [name, out] : expected.outputs) {
    const auto& have = drv.outputs.at(name);
    if (have.path != out.path) {
      return fail(ErrorCode::kCorruption, "output '" + name + "' has path '" + have.path +
                                              "' but should have '" + out.path + "'");
    }
    auto env = drv.env.find(name);
    if (env == drv.env.end() || env->second != out.path) {
      return fail(ErrorCode::kCorruption,
                  "environment variable '" + name + "' is not the output path '" + out.path + "'");
    }
  }
  return {};
}

Result<Derivation> makeDerivation(const DerivationAttrs& attrs, std::string_view store_dir,
                                  const DerivationLoader& load, DrvHashMemo* memo) {
  auto invalid = [](std::string message) { return fail(ErrorCode::kInvalidArgument, message); };
  if (auto s = validateStorePathName(attrs.name); !s) {
    return fail(s.error().withContext("derivation name '" + attrs.name + "'"));
  }
  if (attrs.name.ends_with(".drv")) {
    return invalid("derivation names are not allowed to end in '.drv'");
  }
  if (attrs.outputs.empty()) return invalid("derivation cannot have an empty set of outputs");

  Derivation drv;
  drv.name = attrs.name;
  drv.builder = attrs.builder;
  drv.platform = attrs.system;
  drv.args = attrs.args;
  drv.input_drvs = attrs.input_drvs;
  drv.input_srcs = attrs.input_srcs;
  drv.env = attrs.env;
  for (const auto& ref : attrs.input_srcs) NARCACHE_TRY(validateInStoreDir(ref, store_dir));
  for (const auto& [ref, outputs] : attrs.input_drvs) {
    NARCACHE_TRY(validateInStoreDir(ref, store_dir));
    if (!ref.ends_with(".drv")) return invalid("input derivation '" + ref + "' is not a .drv");
    if (outputs.empty()) return invalid("input derivation '" + ref + "' names no outputs");
  }
  if (drv.env.count("args")) return invalid("'args' is not an environment variable; pass args");

  auto set_env = [&](const std::string& key, const std::string& value) -> Status {
    if (!drv.env.emplace(key, value).second) {
      return invalid("attribute '" + key + "' given twice");
    }
    return {};
  };
  NARCACHE_TRY(set_env("builder", attrs.builder));
  NARCACHE_TRY(set_env("name", attrs.name));
  NARCACHE_TRY(set_env("system", attrs.system));
  std::string joined;
  for (const auto& out : attrs.outputs) {
    if (out == "drv") return invalid("invalid derivation output name 'drv'");
    if (auto s = validateStorePathName(out); !s) {
      return fail(s.error().withContext("output name '" + out + "'"));
    }
    if (drv.outputs.count(out)) return invalid("duplicate derivation output '" + out + "'");
    drv.outputs.emplace(out, DerivationOutput{});
    if (!joined.empty()) joined += ' ';
    joined += out;
  }
  if (attrs.outputs_given) NARCACHE_TRY(set_env("outputs", joined));

  if (auto hash_it = drv.env.find("outputHash"); hash_it != drv.env.end()) {
    if (drv.outputs.size() != 1 || !drv.outputs.count("out")) {
      return invalid("multiple outputs are not supported in fixed-output derivations");
    }
    bool recursive = false;
    if (auto mode = drv.env.find("outputHashMode"); mode != drv.env.end()) {
      if (mode->second == "recursive") {
        recursive = true;
      } else if (mode->second != "flat") {
        return invalid("invalid value '" + mode->second + "' for 'outputHashMode' attribute");
      }
    }
    Result<Hash> hash = fail(ErrorCode::kInvalidArgument, "");
    if (auto algo_it = drv.env.find("outputHashAlgo");
        algo_it != drv.env.end() && !algo_it->second.empty()) {
      auto algo = parseHashAlgo(algo_it->second);
      if (!algo) return fail(algo.error().withContext("outputHashAlgo"));
      hash = Hash::parseAs(hash_it->second, *algo);
    } else {
      hash = Hash::parse(hash_it->second);
    }
    if (!hash) return fail(hash.error().withContext("outputHash"));
    DerivationOutput& out = drv.outputs.at("out");
    out.hash_algo = (recursive ? "r:" : "") + std::string(hashAlgoName(hash->algo()));
    out.hash = hash->digestString(HashFormat::kBase16);
  }
  NARCACHE_TRY(computeOutputPaths(drv, store_dir, load, memo));
  return drv;
}

}  // namespace narcache
