#pragma once
// Derivations (.drv files) as Nix and Guix write them, and the store paths derived from them.
//
// A .drv file is one ATerm term, with no trailing newline:
//   Derive([outputs],[input drvs],[input srcs],"system","builder",[args],[env])
// where outputs are ("name","path","hashAlgo","hash"), input drvs ("drvpath",["out",...]) and
// env entries ("key","value"). Strings escape only '"' and '\' (as \" and \\) and newline,
// carriage return and tab (as \n \r \t); every other byte is written as is.
//
// parseDerivation() accepts exactly the texts writeDerivation() produces, so that for every
// accepted text write(parse(text)) == text: Nix's own escapes only, no raw newline/CR/tab inside
// a string, every list that Nix keeps in a sorted container (outputs, input drvs and their output
// names, input srcs, env) strictly increasing by bytes. Nix and Guix write that canonical form.
// Errors are InvalidArgument and name the byte offset and what was expected there:
//   "derivation: offset 9: expected '(' but found 'x'".
//
// Output paths follow Nix 2.8 (libstore/derivations.cc, store-api.cc) for any store dir:
//   storePath(type, sha256 h, name) = <dir>/<nix32(compressHash(sha256(
//       "<type>:sha256:<hex h>:<dir>:<name>"), 20))>-<name>
//   input-addressed output o: type "output:<o>", h = hashDerivationModulo(masked drv),
//       name = drvname, or drvname-<o> when o != "out";
//   fixed output, recursive sha256: type "source", h = the content hash;
//   other fixed outputs: type "output:out", h = sha256("fixed:out:<r:?><algo>:<hex>:");
//       <hex> is always lowercase base16: Nix parses the .drv's hash (base16 in either case,
//       nix32 or base64) and prints it back, so every spelling of one hash gives one path;
//   the .drv itself: type "text[:<ref>]..." (input srcs and input drvs, sorted), h = sha256(text),
//       name = "<drvname>.drv".
// Value types and pure functions; thread-compatible.

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/hash.h"

namespace narcache {

// One output. Input-addressed: path set, hash_algo and hash empty. Fixed-output: all three set,
// hash_algo "sha256" (flat) or "r:sha256" (recursive; also sha1/md5/sha512), hash in base16
// as Nix writes it (as read: also upper case, nix32 or base64, which Nix accepts; the paths are
// those of the lowercase base16 form).
// Masked or deferred: everything empty. Floating content-addressed: hash_algo only.
struct DerivationOutput {
  std::string path;
  std::string hash_algo;
  std::string hash;

  bool isFixed() const { return !hash.empty(); }
  friend bool operator==(const DerivationOutput&, const DerivationOutput&) = default;
};

struct Derivation {
  // Not part of the ATerm: the derivation's name (the .drv's store path name without ".drv";
  // by default env["name"]). Needed for output paths.
  std::string name;

  std::map<std::string, DerivationOutput> outputs;
  std::map<std::string, std::set<std::string>> input_drvs;  // .drv store path -> output names
  std::set<std::string> input_srcs;                         // store paths
  std::string platform;                                     // "system", e.g. "x86_64-linux"
  std::string builder;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;

  // True when the only output is a fixed "out" (a fixed-output derivation).
  bool isFixedOutput() const;
  // Its requiredSystemFeatures, sorted and without duplicates: the space-separated env entry, or
  // with structured attributes the list of strings in __json (what is not a string, or a
  // malformed __json, counts as no features; the build engine reports a malformed __json).
  std::vector<std::string> requiredSystemFeatures() const;
  friend bool operator==(const Derivation&, const Derivation&) = default;
};

// Parses the ATerm text. `name` sets Derivation::name; when empty, env["name"] is used, or the
// "name" of the structured attributes (__json).
Result<Derivation> parseDerivation(std::string_view text, std::string_view name = {});
// The derivation name in a .drv file's name or path ("…/<hash>-<name>.drv" -> "<name>"), "" when
// it is not named like a store derivation. A derivation with structured attributes has no
// env["name"]: its name is known only from here.
std::string drvNameFromFileName(std::string_view file);
// The ATerm text, byte-identical to what Nix writes.
std::string writeDerivation(const Derivation& drv);
// The text with output paths blanked in `outputs` and in the env entries named after outputs
// (Nix's unparse with maskOutputs), and input drvs replaced when `input_drvs` is given.
std::string writeDerivation(const Derivation& drv, bool mask_outputs,
                            const std::map<std::string, std::set<std::string>>* input_drvs);

// ---- Store paths ----

// "<store_dir>/<hash>-<name>" for a store path of `type` (see above) with sha256 `hash`.
Result<std::string> makeStorePath(std::string_view type, const Hash& hash, std::string_view name,
                                  std::string_view store_dir);
// Path of output `output` of a derivation named `drv_name` with modulo hash `drv_hash`.
Result<std::string> makeOutputPath(std::string_view output, const Hash& drv_hash,
                                   std::string_view drv_name, std::string_view store_dir);
// Nix's `builtins.placeholder output`: "/" + nix32(sha256("nix-output:<output>")). A .drv keeps
// these strings; they stand for the output paths, which are only known once the .drv is.
std::string hashPlaceholder(std::string_view output);
// `text` with the placeholder of each output of `drv` replaced by that output's path, as Nix
// rewrites the builder's arguments, environment and passAsFile files before it runs.
std::string rewriteOutputPlaceholders(std::string text, const Derivation& drv);
// Path of a fixed output: `hash_algo` as in a .drv ("r:sha256", "sha1", ...), `hash` as in a
// .drv: base16 as Nix writes it, but also upper-case base16, nix32 or base64, which Nix reads.
Result<std::string> makeFixedOutputPath(std::string_view hash_algo, std::string_view hash,
                                        std::string_view name, std::string_view store_dir);
// Path of a text file (a .drv, builtins.toFile) with `contents` referring to `references`.
Result<std::string> makeTextPath(std::string_view name, std::string_view contents,
                                 const std::set<std::string>& references,
                                 std::string_view store_dir);
// The store path of the .drv file of `drv`: makeTextPath("<name>.drv", writeDerivation(drv),
// input srcs + input drv paths).
Result<std::string> derivationStorePath(const Derivation& drv, std::string_view store_dir);

// ---- hashDerivationModulo ----

// Loads the derivation stored at a .drv store path (full path); its name must be set.
using DerivationLoader = std::function<Result<Derivation>(const std::string& drv_path)>;

// The modulo hash of an input derivation, and whether it is a fixed-output one (those are
// replaced by "<hash>" -> ["out"] in their dependents).
struct DrvModuloHash {
  Hash hash;
  bool fixed_output = false;
};
// Memo of modulo hashes of input derivations, by .drv path. Reuse one across calls on a graph.
using DrvHashMemo = std::map<std::string, DrvModuloHash>;

// Nix's hashDerivationModulo. For a fixed-output derivation: sha256("fixed:out:<algo>:<hex>:
// <path>"), hex the lowercase base16 of the hash, path computed from the hash (not read from the
// .drv). Otherwise: sha256 of the text with each input drv replaced by its own modulo hash in
// base16 (recursively, loaded through `load`; fixed-output inputs become "<hash>" -> ["out"];
// inputs with the same modulo hash share one entry with their output names merged), outputs
// masked if `mask_outputs`.
Result<Hash> hashDerivationModulo(const Derivation& drv, std::string_view store_dir,
                                  const DerivationLoader& load, bool mask_outputs,
                                  DrvHashMemo* memo = nullptr);

// Fills in the output paths of `drv` (outputs and the env entries named after outputs) as
// Nix's derivationStrict does: fixed outputs from their hash, other outputs from the modulo hash
// of the masked derivation. Checks that fixed-output derivations have the single output "out".
Status computeOutputPaths(Derivation& drv, std::string_view store_dir, const DerivationLoader& load,
                          DrvHashMemo* memo = nullptr);

// Checks that every output path recorded in `drv` is the one computeOutputPaths would give;
// a mismatch is a Corruption error naming the output.
Status checkOutputPaths(const Derivation& drv, std::string_view store_dir,
                        const DerivationLoader& load, DrvHashMemo* memo = nullptr);

// ---- Nix's `derivation` builtin ----

// The attributes given to `derivation { ... }`. Nix puts every attribute except `args` into
// the environment, as given; so `outputs` lands in env only when the caller gives it
// (`outputs_given`), as the space-joined list in the caller's order. outputHash/outputHashAlgo/
// outputHashMode in `env` make a fixed-output derivation (hash: nix32, base16, base64 or SRI).
struct DerivationAttrs {
  std::string name;
  std::string builder;
  std::string system;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;      // other attributes
  std::vector<std::string> outputs = {"out"};  // in the caller's order
  bool outputs_given = false;
  std::map<std::string, std::set<std::string>> input_drvs;
  std::set<std::string> input_srcs;
};

// Builds the derivation as Nix 2.8's derivationStrict: env = attributes + builder, name, system
// (+ outputs when given), output paths computed and filled in.
Result<Derivation> makeDerivation(const DerivationAttrs& attrs, std::string_view store_dir,
                                  const DerivationLoader& load, DrvHashMemo* memo = nullptr);

}  // namespace narcache
