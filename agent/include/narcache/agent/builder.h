#pragma once
// The build engine of an agent: builds one derivation (.drv file) against a binary cache.
//
//   1. Realise the inputs: the needed outputs of each input derivation and each input source,
//      with their closures, are substituted from the cache (narinfo signature checked against
//      the trusted keys when some are given; NarHash and NarSize checked while restoring into a
//      temporary directory beside the final path, then renamed). Paths already present are kept.
//   2. Run the builder as Nix does outside a sandbox: a cleared environment plus the
//      derivation's env, NIX_BUILD_TOP/TMPDIR/TEMPDIR/TMP/TEMP set to a fresh build directory
//      (also the working directory), HOME=/homeless-shelter, NIX_STORE, PATH=/path-not-set unless
//      the derivation sets it; stdout and stderr go to the build log. Where the kernel allows it
//      (root, mount namespaces), the builder runs in a private mount namespace in which the
//      store dir holds only the input closure (read-only) and the outputs it creates, which are
//      moved into the physical store afterwards (agent/src/store_view.h). Otherwise, when the
//      physical store is the logical one, it runs without isolation and sees the whole store
//      (said in a progress message); when they differ (store_root not "/"), the namespace is
//      needed to put the physical store on the logical store dir, and its absence is an error.
//   3. After exit 0: every output must exist; each is NAR-serialised once, and in the same pass
//      hashed (NarHash/NarSize), scanned for references among the input closure and the outputs
//      (self-references included) and compressed with zstd to a temporary file (FileHash,
//      FileSize). Fixed outputs are checked against outputHash.
//   4. Upload in Nix's order: for each output in dependency order, the nar file, then its
//      narinfo (so the cache's closure invariant holds: whenever a .narinfo exists, the .narinfo
//      files of all its references exist as well), then the build log.
//
// Outcomes of the build itself (builder failed, timed out, output missing, inputs not in the
// cache) are BuildResult values; errors (Result) are reserved for what stops the engine: an
// unreadable .drv, an unknown input derivation, an unreachable cache, a bad signature or a
// corrupted nar of an input, a failed upload.
//
// Not thread-safe; one build per call. Forks the builder; safe to call from a process that has
// other threads (the child only makes system calls between fork and exec).

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/narinfo.h"
#include "narcache/narinfo/signature.h"

namespace narcache::agent {

struct BuildOptions {
  std::filesystem::path drv_file;       // the .drv; input .drv files are looked up beside it
  std::string cache_url;                // http(s)://host[:port]
  std::vector<PublicKey> trusted_keys;  // empty: signatures of inputs are not checked
  std::string upload_token;             // Bearer token for uploads
  // Physical root: the store dir D lives physically at store_root + D (as in Nix's chroot
  // stores). "/" (the default): physical == logical.
  std::filesystem::path store_root = "/";
  std::string store_dir;       // empty: the directory of the derivation's output paths
  int timeout_seconds = 0;     // 0: none
  int max_silent_seconds = 0;  // 0: none
  unsigned cores = 0;          // NIX_BUILD_CORES; 0: this machine's CPUs (Nix's default)
  // The system features this machine offers (Nix's system-features); a derivation whose
  // requiredSystemFeatures are not all among them fails without running, as in Nix. Unset:
  // defaultSystemFeatures().
  std::optional<std::vector<std::string>> system_features;
  bool keep_build_dir = false;     // keep the build directory (and the work files) afterwards
  bool upload = true;              // false: build and pack, but upload nothing
  std::filesystem::path log_file;  // where to write the build log; empty: a work file
  std::filesystem::path tmp_dir;   // parent of the build directory; empty: $TMPDIR or /tmp
  int http_attempts = 5;           // tries per HTTP request
  // Check the output paths against the ones Nix computes (hashDerivationModulo), which needs
  // every input .drv down the closure beside drv_file or in the store. The agent turns it off:
  // the coordinator checked them at submission, and an agent gets only the direct inputs.
  bool check_output_paths = true;
  // Run the builder as a build user: a uid of this range (inclusive) that no other build on the
  // machine holds, with the same gid and no supplementary groups, so that it cannot read what
  // the agent's user can (its upload token, its keys). Needs root and store isolation. Unset:
  // the builder runs as the engine's user.
  std::optional<std::pair<uid_t, uid_t>> build_uids;
  // Called with each chunk of builder output as it arrives (e.g. to tee it to stderr).
  std::function<void(std::string_view)> on_log;
  // Called with progress messages ("substituting ...", "uploading ...").
  std::function<void(std::string_view)> on_progress;
};

enum class BuildStatus {
  kSucceeded,
  kFailed,         // builder failed, an output is missing, a fixed output has the wrong hash
  kTimedOut,       // --timeout or --max-silent-time
  kMissingInputs,  // some input paths are not in the cache (see missing_inputs)
};
std::string_view buildStatusName(BuildStatus status);  // "succeeded", "failed", ...

struct BuiltOutput {
  std::string name;  // "out", "dev", ...
  NarInfo info;      // as uploaded (the server adds its signature)
  std::filesystem::path physical_path;
};

struct BuildResult {
  BuildStatus status = BuildStatus::kFailed;
  std::string drv_path;                     // logical store path of the .drv
  std::string message;                      // what went wrong (empty on success)
  std::vector<std::string> missing_inputs;  // full store paths, for kMissingInputs
  std::vector<BuiltOutput> outputs;         // in upload (dependency) order, on success
  std::vector<std::string> substituted;     // input paths fetched from the cache
  std::filesystem::path log_file;           // empty when the log was not kept
  std::string log_tail;                     // last lines of the log (up to 20)
  bool store_isolated = false;              // the builder saw only its inputs and outputs
  int exit_code = -1;                       // builder's exit code, 128+signal when killed
  double build_seconds = 0;                 // time the builder ran
};

// Builds `options.drv_file` (see above).
Result<BuildResult> buildDerivation(const BuildOptions& options);

// Nix 2.8's default system-features: benchmark, big-parallel, nixos-test, and kvm when /dev/kvm
// is readable and writable. Sorted.
std::vector<std::string> defaultSystemFeatures();

// The last `lines` lines of `text`.
std::string lastLines(std::string_view text, int lines);

}  // namespace narcache::agent
