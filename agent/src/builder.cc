#include "narcache/agent/builder.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "errno_text.h"
#include "local_store.h"
#include "narcache/agent/agent_loop.h"
#include "narcache/narinfo/compression.h"
#include "narcache/narinfo/derivation.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/nar.h"
#include "narcache/narinfo/refscan.h"
#include "narcache/narinfo/store_path.h"
#include "narcache/narstore/http_cache.h"
#include "narcache/narstore/parallel_restore.h"
#include "reference_checks.h"
#include "store_view.h"
#include "structured_attrs.h"

namespace narcache::agent {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Scratch directories (see ScratchDir): a build's work dir in $TMPDIR, and a substituted input
// restored beside its place in the store.
constexpr const char* kWorkDirPrefix = "narcache-build-";
constexpr const char* kSubstitutionPrefix = ".narcache-sub-";

// Writes every chunk to each of its sinks (not owned).
class FanoutSink final : public Sink {
 public:
  explicit FanoutSink(std::vector<Sink*> sinks) : sinks_(std::move(sinks)) {}
  Status write(Bytes data) override {
    for (Sink* s : sinks_) NARCACHE_TRY(s->write(data));
    return {};
  }

 private:
  std::vector<Sink*> sinks_;
};

// Passes a source through, hashing and counting what is read.
class HashingSource final : public Source {
 public:
  explicit HashingSource(Source& in) : in_(in) {}
  Result<std::size_t> read(MutableBytes out) override {
    auto n = in_.read(out);
    if (n && *n > 0) NARCACHE_TRY(hasher_.write(Bytes(out.data(), *n)));
    return n;
  }
  Hasher& hasher() { return hasher_; }

 private:
  Source& in_;
  Hasher hasher_;
};

// Removes a directory tree on destruction unless kept.
class TreeGuard {
 public:
  TreeGuard() = default;
  explicit TreeGuard(fs::path path) : path_(std::move(path)) {}
  ~TreeGuard() {
    if (!path_.empty() && !keep_) removeTree(path_);
  }
  TreeGuard(const TreeGuard&) = delete;
  TreeGuard& operator=(const TreeGuard&) = delete;
  void keep() { keep_ = true; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  bool keep_ = false;
};

// Creates `path` (which must not exist) with `text`, readable by the builder only.
Status writeNewFile(const fs::path& path, std::string_view text) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) {
    return fail(ErrorCode::kIoError, "cannot create '" + path.string() + "': " + errnoText(errno));
  }
  FdSink sink(fd.get());
  return sink.write(asBytes(text));
}

// The last `max_bytes` bytes of a file.
std::string readFileTail(const fs::path& path, std::size_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return {};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return {};
  off_t start = st.st_size > static_cast<off_t>(max_bytes) ? st.st_size - max_bytes : 0;
  std::string text(static_cast<std::size_t>(st.st_size - start), '\0');
  ssize_t n = ::pread(fd.get(), text.data(), text.size(), start);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return text;
}

// Everything about one build, shared by its phases.
class Build {
 public:
  Build(const BuildOptions& options, BuildResult& result) : o_(options), r_(result) {}

  Status run();

 private:
  void progress(const std::string& message) const {
    if (o_.on_progress) o_.on_progress(message);
  }
  fs::path physical(const std::string& logical) const {
    if (o_.store_root.empty() || o_.store_root == "/") return logical;
    return o_.store_root / fs::path(logical).relative_path();
  }
  bool mountNamespace() const { return physical(store_dir_) != fs::path(store_dir_); }
  // Whether store path `full` is valid in the local store (see local_store.h); a dead build's
  // leftover there is removed. kUnavailable while another build on this machine makes it.
  Result<bool> presentLocally(const std::string& full) const;

  Status loadDerivation();
  Result<Derivation> loadInputDrv(const std::string& drv_path) const;
  Result<std::set<std::string>> neededInputs() const;
  // Fills inputs_ (the closure) or r_.missing_inputs.
  Status queryClosure(const std::set<std::string>& roots);
  // References of a path present locally but unknown to the cache: the store paths present
  // locally whose hash parts occur in its NAR.
  Result<std::vector<std::string>> localReferences(const std::string& full);
  // Sets up view_ when the kernel allows it (see store_view.h).
  Status prepareStoreView();
  Status prepareBuildUser();  // build_user_ and what it must own (o_.build_uids)
  Status substitute(const NarInfo& info);
  Status uploadLog();                   // r_.log_file as log/<drv base name>
  Result<ReferenceGraph> inputGraph();  // the references of the input closure
  Status runBuilder();
  Status packOutputs();
  Status upload();
  // Nix's refusal when the derivation's requiredSystemFeatures are not all offered here; empty
  // when they are.
  std::string missingSystemFeatures() const;
  // The narinfo the cache serves for an output, or nullopt when it serves none.
  Result<std::optional<NarInfo>> servedNarInfo(const BuiltOutput& out);
  // The cache already has `out` (as `cached`): this build's copy is not uploaded; a warning
  // says so when it differs.
  void keepCachedCopy(BuiltOutput& out, NarInfo cached);

  const BuildOptions& o_;
  BuildResult& r_;
  Derivation drv_;
  std::optional<nlohmann::json> structured_;  // its structured attributes (__json), if any
  std::string store_dir_;
  std::string drv_base_;
  std::unique_ptr<narstore::HttpCache> cache_;
  // The input closure: full path -> narinfo (nullopt: present locally, not in the cache).
  std::map<std::string, std::optional<NarInfo>> inputs_;
  fs::path work_dir_;
  fs::path build_dir_;
  std::map<std::string, fs::path> nar_files_;  // output name -> compressed nar
  std::vector<std::string> local_candidates_;  // hash parts of the local store's entries
  std::optional<StoreView> view_;              // the builder's view of the store, if isolated
  std::optional<BuildUser> build_user_;        // whom the builder runs as (o_.build_uids)
};

Status Build::loadDerivation() {
  auto text = readFileContents(o_.drv_file);
  if (!text) return fail(text.error());
  auto drv = parseDerivation(*text, drvNameFromFileName(o_.drv_file.string()));
  if (!drv) return fail(drv.error().withContext(o_.drv_file.string()));
  drv_ = std::move(*drv);
  auto structured = parseStructuredAttrs(drv_);
  if (!structured) return fail(structured.error().withContext(o_.drv_file.string()));
  structured_ = std::move(*structured);
  if (structured_ && structured_->contains("requiredSystemFeatures")) {
    const auto& f = (*structured_)["requiredSystemFeatures"];
    if (!f.is_array() ||
        !std::all_of(f.begin(), f.end(), [](const auto& v) { return v.is_string(); })) {
      return fail(
          ErrorCode::kInvalidArgument,
          o_.drv_file.string() + ": attribute 'requiredSystemFeatures' must be a list of strings");
    }
  }
  if (drv_.name.empty()) {
    return fail(ErrorCode::kInvalidArgument,
                o_.drv_file.string() + ": derivation has no 'name' in its environment");
  }
  if (drv_.outputs.empty()) {
    return fail(ErrorCode::kInvalidArgument, o_.drv_file.string() + ": derivation has no outputs");
  }
  if (drv_.builder.empty()) {
    return fail(ErrorCode::kInvalidArgument, o_.drv_file.string() + ": derivation has no builder");
  }
  if (drv_.builder.starts_with("builtin:")) {
    return fail(ErrorCode::kInvalidArgument,
                o_.drv_file.string() + ": Nix's builtin builder '" + drv_.builder +
                    "' is not supported by narcache's build engine; put its outputs into the "
                    "cache instead (e.g. nix copy --to)");
  }
  store_dir_ = o_.store_dir;
  if (store_dir_.empty()) {
    for (const auto& [name, out] : drv_.outputs) {
      if (out.path.empty()) {
        return fail(ErrorCode::kInvalidArgument,
                    o_.drv_file.string() + ": output '" + name + "' has no path");
      }
      std::string dir = fs::path(out.path).parent_path().string();
      if (store_dir_.empty()) store_dir_ = dir;
    }
  }
  NARCACHE_TRY(validateStoreDir(store_dir_));
  for (const auto& [name, out] : drv_.outputs) {
    auto p = StorePath::parse(out.path, store_dir_);
    if (!p) {
      return fail(p.error().withContext(o_.drv_file.string() + ": output '" + name + "'"));
    }
  }
  // Output names become environment variables and store path names: each must be a valid
  // store path name other than "drv", and its path must be named as Nix names it (checked even
  // when the full check below is off).
  for (const auto& [name, out] : drv_.outputs) {
    if (auto ok = validateStorePathName(name); !ok || name == "drv") {
      return fail(ErrorCode::kInvalidArgument,
                  o_.drv_file.string() + ": invalid output name '" + name + "'");
    }
    std::string expected = name == "out" ? drv_.name : drv_.name + "-" + name;
    if (StorePath::parse(out.path, store_dir_)->name() != expected) {
      return fail(ErrorCode::kInvalidArgument, o_.drv_file.string() + ": output '" + name +
                                                   "' has path '" + out.path +
                                                   "', whose name is not '" + expected + "'");
    }
  }
  if (o_.check_output_paths) {
    // A forged path would have this build write, and upload, under another item's store path.
    auto load = [this](const std::string& path) { return loadInputDrv(path); };
    if (auto ok = checkOutputPaths(drv_, store_dir_, load); !ok) {
      return fail(ok.error().code(), o_.drv_file.string() + ": " + ok.error().message());
    }
  }
  auto drv_path = derivationStorePath(drv_, store_dir_);
  if (!drv_path) return fail(drv_path.error().withContext(o_.drv_file.string()));
  r_.drv_path = *drv_path;
  drv_base_ = fs::path(*drv_path).filename().string();
  return {};
}

// Input .drv files are looked up beside the built one (by base name), then in the store.
Result<Derivation> Build::loadInputDrv(const std::string& drv_path) const {
  const std::string base = fs::path(drv_path).filename().string();
  const fs::path candidates[] = {o_.drv_file.parent_path() / base, physical(drv_path)};
  for (const auto& candidate : candidates) {
    std::error_code ec;
    if (!fs::exists(candidate, ec)) continue;
    auto text = readFileContents(candidate);
    if (!text) return fail(text.error());
    auto drv = parseDerivation(*text, drvNameFromFileName(base));
    if (!drv) return fail(drv.error().withContext(candidate.string()));
    return drv;
  }
  return fail(ErrorCode::kNotFound, "unknown input derivation '" + drv_path + "': no '" + base +
                                        "' beside " + o_.drv_file.string() + " nor in the store");
}

Result<std::set<std::string>> Build::neededInputs() const {
  std::set<std::string> needed;
  for (const auto& src : drv_.input_srcs) {
    auto p = StorePath::parse(src, store_dir_);
    if (!p) return fail(p.error().withContext("input source"));
    needed.insert(src);
  }
  for (const auto& [drv_path, names] : drv_.input_drvs) {
    auto input = loadInputDrv(drv_path);
    if (!input) return fail(input.error());
    for (const auto& name : names) {
      auto it = input->outputs.find(name);
      if (it == input->outputs.end() || it->second.path.empty()) {
        return fail(ErrorCode::kInvalidArgument,
                    "input derivation '" + drv_path + "' has no output '" + name + "'");
      }
      auto p = StorePath::parse(it->second.path, store_dir_);
      if (!p) return fail(p.error().withContext("input '" + drv_path + "!" + name + "'"));
      needed.insert(it->second.path);
    }
  }
  return needed;
}

Status Build::queryClosure(const std::set<std::string>& roots) {
  std::deque<std::string> queue(roots.begin(), roots.end());
  std::set<std::string> seen(roots.begin(), roots.end());
  while (!queue.empty()) {
    std::string full = queue.front();
    queue.pop_front();
    auto path = StorePath::parse(full, store_dir_);
    if (!path) return fail(path.error());
    auto text = cache_->narInfo(path->hashPart());
    if (!text) {
      if (text.error().code() != ErrorCode::kNotFound) {
        return fail(text.error().withContext("input '" + full + "'"));
      }
      auto present = presentLocally(full);
      if (!present) return fail(present.error());
      if (*present) {
        inputs_[full] = std::nullopt;  // present here, unknown to the cache
        auto refs = localReferences(full);
        if (!refs) return fail(refs.error().withContext("input '" + full + "'"));
        for (auto& ref : *refs) {
          if (seen.insert(ref).second) queue.push_back(std::move(ref));
        }
      } else {
        r_.missing_inputs.push_back(full);
      }
      continue;
    }
    auto info = NarInfo::parse(*text, path->hashPart() + ".narinfo", store_dir_);
    if (!info) return fail(info.error().withContext("input '" + full + "'"));
    if (info->fullPath() != full) {
      return fail(
          ErrorCode::kCorruption,
          "input '" + full + "': the cache answered with a narinfo for '" + info->fullPath() + "'");
    }
    if (!o_.trusted_keys.empty() && !hasValidSignature(*info, o_.trusted_keys)) {
      return fail(ErrorCode::kPermissionDenied,
                  "input '" + full + "' lacks a valid signature by a trusted key");
    }
    for (const auto& ref : info->references) {
      std::string ref_full = ref.fullPath(store_dir_);
      if (seen.insert(ref_full).second) queue.push_back(ref_full);
    }
    inputs_[full] = std::move(*info);
  }
  std::sort(r_.missing_inputs.begin(), r_.missing_inputs.end());
  return {};
}

Result<bool> Build::presentLocally(const std::string& full) const {
  const std::string base = fs::path(full).filename().string();
  auto state = localState(physical(store_dir_), base);
  if (!state) return fail(state.error());
  if (*state == LocalState::kBeingBuilt) {
    return fail(ErrorCode::kUnavailable, "input '" + full +
                                             "' is being built by another build on this "
                                             "machine; try again when it is over");
  }
  return *state == LocalState::kValid;
}

Result<std::vector<std::string>> Build::localReferences(const std::string& full) {
  if (local_candidates_.empty()) {
    std::error_code ec;
    for (auto it = fs::directory_iterator(physical(store_dir_), ec);
         !ec && it != fs::directory_iterator(); it.increment(ec)) {
      const std::string base = it->path().filename().string();
      if (StorePath::parseBaseName(base)) local_candidates_.push_back(base.substr(0, 32));
    }
    std::sort(local_candidates_.begin(), local_candidates_.end());
    local_candidates_.erase(std::unique(local_candidates_.begin(), local_candidates_.end()),
                            local_candidates_.end());
  }
  auto scanner = RefScanner::create(local_candidates_);
  if (!scanner) return fail(scanner.error());
  NARCACHE_TRY(dumpPath(physical(full), *scanner));
  std::set<std::string> found = scanner->found();
  std::vector<std::string> refs;
  std::error_code ec;
  for (auto it = fs::directory_iterator(physical(store_dir_), ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string base = it->path().filename().string();
    if (base.size() > 33 && found.count(base.substr(0, 32)) && StorePath::parseBaseName(base)) {
      refs.push_back(store_dir_ + "/" + base);
    }
  }
  return refs;
}

Status Build::substitute(const NarInfo& info) {
  const std::string full = info.fullPath();
  const fs::path dest = physical(full);
  auto present = presentLocally(full);
  if (!present) return fail(present.error());
  if (*present) return {};
  // Marked while it is made (local_store.h): a build of the same path, or another substitution
  // of it, is refused meanwhile instead of racing this one.
  auto marked = PendingOutputs::mark(physical(store_dir_), {info.path.baseName()});
  if (!marked) return fail(marked.error().withContext("input '" + full + "'"));
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dest, ec))) return {};  // made valid before the mark
  progress("substituting '" + full + "'");
  // Restored beside its destination, then renamed into place.
  auto reserved = ScratchDir::reserve(
      dest.parent_path(), std::string(kSubstitutionPrefix) + info.path.baseName() + "-");
  if (!reserved) return fail(reserved.error().withContext("input '" + full + "'"));
  ScratchDir guard(std::move(*reserved));
  const fs::path& tmp = guard.path();
  auto compression = parseCompression(info.compression);
  if (!compression) return fail(compression.error().withContext("input '" + full + "'"));
  auto file = cache_->open(info.url);
  if (!file) return fail(file.error().withContext("input '" + full + "'"));
  auto decompressor = makeDecompressor(*compression, **file);
  if (!decompressor) return fail(decompressor.error().withContext("input '" + full + "'"));
  HashingSource hashing(**decompressor);
  const std::string context = "input '" + full + "' (" + info.url + ")";
  // Decompressing and hashing on this thread, creating and writing files on the restorer's.
  if (auto s = narstore::restoreNarParallel(hashing, tmp); !s) {
    return fail(ErrorCode::kCorruption, context + ": " + s.error().message());
  }
  CountingSink rest;  // whatever follows the NAR: an error, but hash it too for the message
  if (auto c = copyStream(hashing, rest); !c) {
    return fail(ErrorCode::kCorruption, context + ": " + c.error().message());
  }
  const std::uint64_t size = hashing.hasher().size();
  const Hash got = hashing.hasher().digest();
  if (size != info.nar_size) {
    return fail(ErrorCode::kCorruption, context + ": NAR size mismatch: expected " +
                                            std::to_string(info.nar_size) + ", got " +
                                            std::to_string(size));
  }
  if (!(got == info.nar_hash)) {
    return fail(ErrorCode::kCorruption, context + ": NAR hash mismatch: expected " +
                                            info.nar_hash.toString() + ", got " + got.toString());
  }
  NARCACHE_TRY(canonicalise(tmp));
  if (::rename(tmp.c_str(), dest.c_str()) != 0) {
    return fail(ErrorCode::kIoError, "cannot rename '" + tmp.string() + "' to '" + dest.string() +
                                         "': " + errnoText(errno));
  }
  r_.substituted.push_back(full);
  return {};  // valid: the mark goes
}

// Message for a failed execve or mount, written by the child without allocating (strerror may
// allocate for its translations; strerrordesc_np reads glibc's untranslated table).
const char* childErrorText(int err) {
  const char* text = ::strerrordesc_np(err);
  return text != nullptr ? text : "unknown error";
}

Result<ReferenceGraph> Build::inputGraph() {
  ReferenceGraph graph;
  for (const auto& [full, info] : inputs_) {
    auto& refs = graph[full];
    if (info) {
      for (const auto& ref : info->references) refs.push_back(ref.fullPath(store_dir_));
    } else {
      auto local = localReferences(full);  // present here, unknown to the cache
      if (!local) return fail(local.error().withContext("input '" + full + "'"));
      refs = std::move(*local);
    }
  }
  return graph;
}

Status Build::uploadLog() {
  // Streamed from the file: a build log can be larger than the agent's memory.
  return cache_->putFile("log/" + drv_base_, r_.log_file, "text/plain; charset=utf-8")
      .map_error([&](const Error& e) {
        return e.withContext("uploading the log of '" + drv_base_ + "'");
      });
}

Status Build::runBuilder() {
  // Builders see the host's file system outside the store: a HOME that exists would carry
  // state from one build to the next (Nix refuses to build without a sandbox then, too).
  constexpr const char* kHome = "/homeless-shelter";
  if (std::error_code ec; fs::exists(fs::symlink_status(kHome, ec))) {
    return fail(ErrorCode::kUnavailable, std::string("home directory '") + kHome +
                                             "' exists; please remove it to assure purity of "
                                             "builds without sandboxing");
  }
  // The environment, in Nix's order: defaults, then the derivation's env, then the build dir.
  std::map<std::string, std::string> env;
  env["PATH"] = "/path-not-set";
  env["HOME"] = kHome;
  env["NIX_STORE"] = store_dir_;
  env["NIX_BUILD_CORES"] =
      std::to_string(o_.cores != 0 ? o_.cores : std::max(1u, std::thread::hardware_concurrency()));
  // Attributes named in passAsFile go in a file of the build dir instead, its path in
  // <name>Path (as Nix does: ".attr-" + the nix32 SHA-256 of the name).
  std::set<std::string> pass_as_file;
  if (structured_) {
    // Structured attributes: the env stays out of the environment; files instead.
    auto files = structuredAttrsFiles(*structured_, drv_);
    NARCACHE_TRY(writeNewFile(build_dir_ / ".attrs.json", files.json));
    NARCACHE_TRY(writeNewFile(build_dir_ / ".attrs.sh", files.sh));
    env["NIX_ATTRS_JSON_FILE"] = (build_dir_ / ".attrs.json").string();
    env["NIX_ATTRS_SH_FILE"] = (build_dir_ / ".attrs.sh").string();
  } else if (auto it = drv_.env.find("passAsFile"); it != drv_.env.end()) {
    std::istringstream names(it->second);
    for (std::string name; names >> name;) pass_as_file.insert(name);
  }
  static const std::map<std::string, std::string> kNoAttributes;
  for (const auto& [k, v] : structured_ ? kNoAttributes : drv_.env) {
    if (pass_as_file.count(k) == 0) {
      env[k] = v;
      continue;
    }
    const std::string file =
        ".attr-" + hashString(HashAlgo::kSha256, k).digestString(HashFormat::kNix32);
    const fs::path path = build_dir_ / file;
    NARCACHE_TRY(
        writeNewFile(path, rewriteOutputPlaceholders(v, drv_)).map_error([](const Error& e) {
          return e.withContext("passAsFile");
        }));
    env[k + "Path"] = path.string();
  }
  for (const char* k : {"NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP"}) {
    env[k] = build_dir_.string();
  }
  env["PWD"] = build_dir_.string();
  env["NIX_LOG_FD"] = "2";
  env["TERM"] = "xterm-256color";

  // Output placeholders (`builtins.placeholder "out"`) in the environment and the arguments
  // become the output paths, as in Nix; argv[0] is the builder's base name, as in Nix.
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env)
    env_strings.push_back(rewriteOutputPlaceholders(k + "=" + v, drv_));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_strings = {fs::path(drv_.builder).filename().string()};
  for (const auto& arg : drv_.args) arg_strings.push_back(rewriteOutputPlaceholders(arg, drv_));
  std::vector<char*> argv;
  for (auto& s : arg_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  NARCACHE_TRY(prepareStoreView());
  const StoreView* view = view_ ? &*view_ : nullptr;
  NARCACHE_TRY(prepareBuildUser());
  const uid_t build_uid = build_user_ ? build_user_->uid() : 0;
  const std::string exec_prefix = "narcache: executing '" + drv_.builder + "': ";
  const std::string ns_prefix =
      "narcache: cannot set up the mount namespace for " + store_dir_ + ": ";
  const std::string user_prefix =
      "narcache: cannot become build user " + std::to_string(build_uid) + ": ";

  Fd log_fd(::open(r_.log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (log_fd.get() < 0) {
    return fail(ErrorCode::kIoError,
                "cannot create log '" + r_.log_file.string() + "': " + errnoText(errno));
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return fail(ErrorCode::kIoError, std::string("pipe: ") + errnoText(errno));
  }
  Fd read_end(pipe_fds[0]);
  Fd write_end(pipe_fds[1]);

  progress("building '" + r_.drv_path + "'");
  const auto started = Clock::now();
  const pid_t engine = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return fail(ErrorCode::kIoError, std::string("fork: ") + errnoText(errno));
  if (pid == 0) {
    // Child: system calls only. It dies with the engine (whatever kills the engine, nothing of
    // the build outlives it), and the builder starts with every signal at its default action
    // and none blocked, as Nix starts it (the engine's may be ignored: systemd ignores SIGPIPE).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != engine) ::_exit(127);
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    }
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setpgid(0, 0);
    int waiter_alive = -1;  // isolated: the read end of a pipe that the waiter holds open
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(write_end.get(), 1);
    ::dup2(write_end.get(), 2);
    ::close_range(3, ~0U, 0);
    ::umask(022);
    if (view != nullptr && ::unshare(CLONE_NEWPID) == 0) {
      // A PID namespace of its own, whose init is the builder: when the builder exits, the
      // kernel kills whatever it left running, even processes that left its process group or
      // session (setsid), which kill(-pid) below cannot reach. This process stays outside,
      // waits, and passes the builder's status on. The builder dies with this process too:
      // it may leave the process group and session that the engine kills, but not this.
      // (Whether this process died before the prctl shows through a pipe: getppid() is 0 in
      // the new namespace.)
      int alive[2];
      if (::pipe2(alive, O_CLOEXEC) != 0) ::_exit(127);
      pid_t inner = ::fork();
      if (inner < 0) ::_exit(127);
      if (inner == 0) {
        ::close(alive[1]);
        waiter_alive = alive[0];  // closed at exec (O_CLOEXEC)
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        pollfd gone{waiter_alive, POLLIN, 0};
        if (::poll(&gone, 1, 0) != 0) ::_exit(127);  // hung up: this process is gone already
      }
      if (inner > 0) {
        ::close(alive[0]);
        int st = 0;
        while (::waitpid(inner, &st, 0) < 0 && errno == EINTR) {
        }
        if (WIFSIGNALED(st)) {
          ::kill(::getpid(), WTERMSIG(st));  // at its default action (above)
          ::_exit(128 + WTERMSIG(st));
        }
        ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 127);
      }
    }
    if (view != nullptr) {
      const char* step = "";
      if (int err = view->enterInChild(&step); err != 0) {
        writeAll(2, asBytes(ns_prefix));
        writeAll(2, asBytes(step));
        writeAll(2, asBytes(": "));
        writeAll(2, asBytes(childErrorText(err)));
        writeAll(2, asBytes("\n"));
        ::_exit(127);
      }
    }
    if (build_uid != 0) {
      // After the mounts, which need root.
      if (::setgroups(0, nullptr) != 0 || ::setgid(build_uid) != 0 || ::setuid(build_uid) != 0) {
        int err = errno;
        writeAll(2, asBytes(user_prefix));
        writeAll(2, asBytes(childErrorText(err)));
        writeAll(2, asBytes("\n"));
        ::_exit(127);
      }
      // Changing credentials clears the parent-death signal: set it again, and check again
      // that the waiter is still there (build users come only with isolation: the pipe).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      pollfd gone{waiter_alive, POLLIN, 0};
      if (waiter_alive < 0 || ::poll(&gone, 1, 0) != 0) ::_exit(127);
    }
    if (::chdir(build_dir_.c_str()) != 0) ::_exit(127);
    ::execve(drv_.builder.c_str(), argv.data(), envp.data());
    int err = errno;
    writeAll(2, asBytes(exec_prefix));
    writeAll(2, asBytes(childErrorText(err)));
    writeAll(2, asBytes("\n"));
    ::_exit(127);
  }
  write_end.reset();
  ::setpgid(pid, pid);  // also in the parent, so that kill(-pid) works at once

  auto last_output = started;
  const auto deadline = started + std::chrono::seconds(o_.timeout_seconds);
  std::string timed_out;
  std::vector<char> buffer(64 * 1024);
  int status = 0;
  bool exited = false;
  while (true) {
    int wait_ms = 200;
    pollfd pfd{read_end.get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, wait_ms);
    if (n < 0 && errno != EINTR) {
      ::kill(-pid, SIGKILL);
      return fail(ErrorCode::kIoError, std::string("poll: ") + errnoText(errno));
    }
    bool eof = false;
    if (n > 0) {
      ssize_t got = ::read(read_end.get(), buffer.data(), buffer.size());
      if (got > 0) {
        last_output = Clock::now();
        FdSink log_sink(log_fd.get());
        if (auto s = log_sink.write(asBytes(std::string_view(buffer.data(), got))); !s) {
          ::kill(-pid, SIGKILL);
          ::waitpid(pid, &status, 0);
          return fail(s.error().withContext("writing the build log"));
        }
        if (o_.on_log) o_.on_log(std::string_view(buffer.data(), got));
      } else if (got == 0) {
        eof = true;
      }
    }
    if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (eof || (exited && n == 0)) break;
    const auto now = Clock::now();
    if (o_.timeout_seconds > 0 && now >= deadline) {
      timed_out = "timed out after " + std::to_string(o_.timeout_seconds) + " seconds";
      break;
    }
    if (o_.max_silent_seconds > 0 &&
        now - last_output >= std::chrono::seconds(o_.max_silent_seconds)) {
      timed_out = "timed out after " + std::to_string(o_.max_silent_seconds) +
                  " seconds of silence (max-silent-time)";
      break;
    }
  }
  // Whatever is left of the builder's process group goes now (Nix kills the build user's
  // processes likewise).
  ::kill(-pid, SIGKILL);
  if (!exited) {
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  r_.build_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  r_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (!timed_out.empty()) {
    r_.status = BuildStatus::kTimedOut;
    r_.message = "builder of '" + r_.drv_path + "' " + timed_out;
    return {};
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    r_.status = BuildStatus::kFailed;
    r_.message = "builder of '" + r_.drv_path + "' failed with " +
                 (WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                                    : "signal " + std::to_string(WTERMSIG(status)));
    return {};
  }
  if (view_) NARCACHE_TRY(view_->collectOutputs());
  r_.status = BuildStatus::kSucceeded;
  return {};
}

Status Build::prepareStoreView() {
  const fs::path phys_store = physical(store_dir_);
  std::error_code ec;
  if (!mountNamespace() && build_dir_.string().starts_with(store_dir_ + "/")) {
    progress("store isolation unavailable: the build directory " + build_dir_.string() +
             " lies in the store dir");
    return {};
  }
  if (mountNamespace()) {
    fs::create_directories(store_dir_, ec);  // the mount point on the host
    if (ec) {
      return fail(ErrorCode::kIoError,
                  "cannot create the mount point '" + store_dir_ + "': " + ec.message());
    }
  }
  std::vector<std::string> inputs;
  for (const auto& [full, info] : inputs_) inputs.push_back(fs::path(full).filename().string());
  std::vector<std::string> outputs;
  for (const auto& [name, out] : drv_.outputs) {
    outputs.push_back(fs::path(out.path).filename().string());
  }
  auto view = StoreView::prepare(phys_store, store_dir_, drv_.name, inputs, outputs);
  if (!view) return fail(view.error());
  const char* step = "";
  if (int err = view->probe(&step); err != 0) {
    const std::string why = std::string(step) + ": " + errnoText(err);
    if (mountNamespace()) {
      return fail(err == EPERM ? ErrorCode::kPermissionDenied : ErrorCode::kIoError,
                  "cannot set up the mount namespace that puts " + phys_store.string() + " on " +
                      store_dir_ + " (" + why + "); a store root other than / needs root");
    }
    progress("store isolation unavailable (" + why + "): the builder sees the whole store " +
             store_dir_);
    return {};
  }
  progress("store isolation: the builder sees only its " + std::to_string(inputs.size()) +
           " input paths and its outputs in " + store_dir_);
  view_.emplace(std::move(*view));
  r_.store_isolated = true;
  return {};
}

Status Build::prepareBuildUser() {
  if (!o_.build_uids) return {};
  if (!view_) {
    return fail(ErrorCode::kUnavailable,
                "build users need store isolation (root and mount namespaces): without it the "
                "builder writes its outputs into the store dir itself");
  }
  auto user = BuildUser::acquire(physical(store_dir_), o_.build_uids->first, o_.build_uids->second);
  if (!user) return fail(user.error());
  build_user_.emplace(std::move(*user));
  const uid_t uid = build_user_->uid();
  // It must reach the store dir and its build dir: every directory above them searchable by
  // others (the user has no groups). Said here rather than as the builder's "Permission denied".
  for (const fs::path& target : {fs::path(store_dir_), work_dir_}) {
    fs::path dir = "/";
    for (const auto& part : target.parent_path().relative_path()) {
      dir /= part;
      struct stat st {};
      if (::stat(dir.c_str(), &st) == 0 && (st.st_mode & S_IXOTH) == 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return fail(ErrorCode::kUnavailable,
                    "build user " + std::to_string(uid) + " cannot reach '" + target.string() +
                        "': '" + dir.string() + "' is not searchable by others (mode " + mode +
                        ")");
      }
    }
  }
  // The build dir is the user's; the work dir around it (the log, the packed nars) only
  // traversable; the view (the store dir it sees) writable by its group and sticky, so that it
  // creates its outputs there but cannot remove the inputs' mount points or copied symlinks.
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(build_dir_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (::lchown(it->path().c_str(), uid, uid) != 0) ec.assign(errno, std::generic_category());
  }
  if (ec || ::chown(build_dir_.c_str(), uid, uid) != 0 || ::chmod(work_dir_.c_str(), 0711) != 0 ||
      ::chown(view_->dir().c_str(), 0, uid) != 0 || ::chmod(view_->dir().c_str(), 01775) != 0) {
    return fail(ErrorCode::kIoError, "cannot hand the build directory to build user " +
                                         std::to_string(uid) + ": " +
                                         (ec ? ec.message() : errnoText(errno)));
  }
  progress("building as build user " + std::to_string(uid));
  return {};
}

Status Build::packOutputs() {
  // Every output must exist.
  std::vector<std::string> missing;
  for (const auto& [name, out] : drv_.outputs) {
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(physical(out.path), ec))) {
      missing.push_back("'" + name + "' (" + out.path + ")");
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    r_.status = BuildStatus::kFailed;
    r_.message = "builder of '" + r_.drv_path + "' did not produce output" +
                 (missing.size() > 1 ? "s " : " ") + list;
    return {};
  }

  // Candidates: the input closure and the outputs.
  std::map<std::string, std::string> by_hash;  // hash part -> full path
  for (const auto& [full, info] : inputs_)
    by_hash[fs::path(full).filename().string().substr(0, 32)] = full;
  for (const auto& [name, out] : drv_.outputs) {
    by_hash[fs::path(out.path).filename().string().substr(0, 32)] = out.path;
  }
  std::vector<std::string> candidates;
  for (const auto& [h, full] : by_hash) candidates.push_back(h);

  std::map<std::string, BuiltOutput> packed;
  for (const auto& [name, out] : drv_.outputs) {
    progress("packing '" + out.path + "'");
    const fs::path phys = physical(out.path);
    auto scanner = RefScanner::create(candidates);
    if (!scanner) return fail(scanner.error());
    const fs::path nar_file = work_dir_ / (name + ".nar.zst");
    Fd fd(::open(nar_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) {
      return fail(ErrorCode::kIoError,
                  "cannot create '" + nar_file.string() + "': " + errnoText(errno));
    }
    FdSink file_sink(fd.get());
    Hasher file_hasher;
    TeeSink file_tee(file_sink, file_hasher);
    // One zstd worker thread: compression overlaps with dumping, hashing and scanning
    // (about 20% faster than inline compression on 2 cores, bench/build.sh).
    CompressOptions zstd_options;
    zstd_options.threads = 1;
    auto compressor = makeCompressor(Compression::kZstd, file_tee, zstd_options);
    if (!compressor) return fail(compressor.error());
    Hasher nar_hasher;
    FanoutSink fanout({&nar_hasher, &*scanner, compressor->get()});
    BufferedSink buffered(fanout);
    NARCACHE_TRY(dumpPath(phys, buffered));
    NARCACHE_TRY(buffered.flush());
    NARCACHE_TRY((*compressor)->finish());

    BuiltOutput built;
    built.name = name;
    built.physical_path = phys;
    NarInfo& info = built.info;
    info.store_dir = store_dir_;
    info.path = *StorePath::parse(out.path, store_dir_);
    info.compression = "zstd";
    info.file_hash = file_hasher.digest();
    info.file_size = file_hasher.size();
    info.url = "nar/" + info.file_hash->digestString(HashFormat::kNix32) + ".nar.zst";
    info.nar_hash = nar_hasher.digest();
    info.nar_size = nar_hasher.size();
    for (const auto& h : scanner->found()) {
      info.references.push_back(*StorePath::parse(by_hash.at(h), store_dir_));
    }
    std::sort(info.references.begin(), info.references.end());
    info.deriver = *StorePath::parseBaseName(drv_base_);
    info.system = drv_.platform;

    if (out.isFixed()) {
      bool recursive = out.hash_algo.starts_with("r:");
      std::string algo_name = recursive ? out.hash_algo.substr(2) : out.hash_algo;
      auto algo = parseHashAlgo(algo_name);
      if (!algo) {
        r_.status = BuildStatus::kFailed;
        r_.message = "fixed output '" + out.path + "': hash algorithm '" + algo_name +
                     "' is not supported by narcache build (sha256, sha512, sha1, md5)";
        return {};
      }
      auto wanted = Hash::parseAs(out.hash, *algo);
      if (!wanted) return fail(wanted.error().withContext("outputHash of '" + out.path + "'"));
      std::optional<Hash> got;
      if (recursive) {
        if (*algo == HashAlgo::kSha256) {
          got = info.nar_hash;
        } else {
          Hasher h(*algo);
          NARCACHE_TRY(dumpPath(phys, h));
          got = h.digest();
        }
      } else {
        // As Nix: a flat fixed output is a plain file, not executable (the flat hash does not
        // cover the bit, the NAR hash of the stored item does).
        struct stat st {};
        if (::lstat(phys.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & S_IXUSR)) {
          r_.status = BuildStatus::kFailed;
          r_.message =
              "fixed output '" + out.path + "' (flat hash) is not a non-executable regular file";
          return {};
        }
        Fd in(::open(phys.c_str(), O_RDONLY | O_CLOEXEC));
        if (in.get() < 0) {
          return fail(ErrorCode::kIoError,
                      "cannot open '" + phys.string() + "': " + errnoText(errno));
        }
        FdSource source(in.get());
        Hasher h(*algo);
        NARCACHE_TRY(copyStream(source, h));
        got = h.digest();
      }
      if (!(*got == *wanted)) {
        r_.status = BuildStatus::kFailed;
        r_.message = "hash mismatch in fixed-output derivation '" + r_.drv_path +
                     "':\n  specified: " + wanted->toString() + "\n  got:       " + got->toString();
        return {};
      }
      if (!info.references.empty()) {
        r_.status = BuildStatus::kFailed;
        r_.message = "illegal path references in fixed-output derivation '" + r_.drv_path + "'";
        return {};
      }
      info.ca = std::string("fixed:") + (recursive ? "r:" : "") + got->toString();
    }
    nar_files_[name] = nar_file;
    packed.emplace(name, std::move(built));
  }

  // Dependency order among the outputs (self-references do not count).
  std::map<std::string, std::string> output_by_path;
  for (const auto& [name, b] : packed) output_by_path[b.info.path.baseName()] = name;
  std::set<std::string> done;
  while (done.size() < packed.size()) {
    bool progressed = false;
    for (const auto& [name, b] : packed) {
      if (done.count(name)) continue;
      bool ready = true;
      for (const auto& ref : b.info.references) {
        auto it = output_by_path.find(ref.baseName());
        if (it != output_by_path.end() && it->second != name && !done.count(it->second)) {
          ready = false;
        }
      }
      if (ready) {
        r_.outputs.push_back(b);
        done.insert(name);
        progressed = true;
      }
    }
    if (!progressed) {
      r_.outputs.clear();
      r_.status = BuildStatus::kFailed;
      r_.message = "cycle detected in the references between the outputs of '" + r_.drv_path + "'";
      return {};
    }
  }
  return {};
}

std::string Build::missingSystemFeatures() const {
  const std::vector<std::string> required = drv_.requiredSystemFeatures();
  if (required.empty()) return {};
  const std::vector<std::string> offered = o_.system_features.value_or(defaultSystemFeatures());
  if (std::all_of(required.begin(), required.end(), [&](const std::string& f) {
        return std::find(offered.begin(), offered.end(), f) != offered.end();
      })) {
    return {};
  }
  auto braces = [](const auto& list) {
    std::string s;
    for (const auto& f : list) s += (s.empty() ? "" : ", ") + f;
    return "{" + s + "}";
  };
  return "a '" + drv_.platform + "' with features " + braces(required) + " is required to build '" +
         r_.drv_path + "', but I am a '" + hostSystem() + "' with features " + braces(offered);
}

Result<std::optional<NarInfo>> Build::servedNarInfo(const BuiltOutput& out) {
  auto text = cache_->narInfo(out.info.path.hashPart());
  if (!text) {
    if (text.error().code() == ErrorCode::kNotFound) return std::optional<NarInfo>();
    return fail(text.error().withContext("asking the cache for '" + out.info.fullPath() + "'"));
  }
  auto info = NarInfo::parse(*text, out.info.path.hashPart() + ".narinfo", store_dir_);
  if (!info) return fail(info.error().withContext("the cache's narinfo"));
  return std::optional<NarInfo>(std::move(*info));
}

void Build::keepCachedCopy(BuiltOutput& out, NarInfo cached) {
  if (cached.nar_hash == out.info.nar_hash) {
    progress("'" + out.info.fullPath() + "' is already in the cache");
  } else {
    // A derivation that is not reproducible, built twice (two agents, or a retry after the
    // first build's upload was lost). The cache's copy is what clients and other machines get.
    // This machine keeps its own, as Nix's local store would after `nix copy` skipped the path:
    // removing it could pull a valid path from under a concurrent build using it as an input.
    progress("warning: '" + out.info.fullPath() + "' is already in the cache with NarHash " +
             cached.nar_hash.toString() + ", but this build gave " + out.info.nar_hash.toString() +
             " ('" + r_.drv_path + "' is not reproducible); the cache keeps its copy");
  }
  out.info = std::move(cached);
}

Status Build::upload() {
  // As `nix copy`, what the cache already serves is not uploaded again.
  for (auto& out : r_.outputs) {
    auto served = servedNarInfo(out);
    if (!served) return fail(served.error());
    if (*served) {
      keepCachedCopy(out, std::move(**served));
      continue;
    }
    progress("uploading '" + out.info.fullPath() + "'");
    NARCACHE_TRY(
        cache_->putFile(out.info.url, nar_files_.at(out.name), "application/x-nix-nar")
            .map_error([&](const Error& e) { return e.withContext("uploading " + out.info.url); }));
    auto put = cache_->putNarInfo(out.info);
    if (!put && put.error().code() == ErrorCode::kConflict) {  // another build's upload won
      served = servedNarInfo(out);
      if (!served) return fail(served.error());
      if (*served) {
        keepCachedCopy(out, std::move(**served));
        continue;
      }
    }
    NARCACHE_TRY(put.map_error([&](const Error& e) {
      return e.withContext("uploading the narinfo of '" + out.info.fullPath() + "'");
    }));
  }
  return {};
}

Status Build::run() {
  NARCACHE_TRY(loadDerivation());
  if (auto missing = missingSystemFeatures(); !missing.empty()) {
    r_.status = BuildStatus::kFailed;
    r_.message = missing;
    return {};
  }
  auto needed = neededInputs();
  if (!needed) return fail(needed.error());

  narstore::HttpCacheOptions cache_options;
  cache_options.url = o_.cache_url;
  cache_options.token = o_.upload_token;
  cache_options.attempts = o_.http_attempts;
  auto cache = narstore::HttpCache::open(cache_options);
  if (!cache) return fail(cache.error());
  cache_ = std::move(*cache);
  auto cache_info = cache_->cacheInfo();
  if (!cache_info) return fail(cache_info.error().withContext("cache " + o_.cache_url));
  const std::string marker = "StoreDir: ";
  if (auto at = cache_info->find(marker); at != std::string::npos) {
    std::string dir = cache_info->substr(at + marker.size());
    dir = dir.substr(0, dir.find('\n'));
    if (dir != store_dir_) {
      return fail(ErrorCode::kInvalidArgument, "cache " + o_.cache_url + " is for store dir " +
                                                   dir + ", the derivation for " + store_dir_);
    }
  }

  // What builds killed on this machine left in the store (their scratch directories).
  removeAbandonedDirs(physical(store_dir_), {kSubstitutionPrefix, StoreView::kDirPrefix});

  // 1. Inputs.
  NARCACHE_TRY(queryClosure(*needed));
  if (!r_.missing_inputs.empty()) {
    r_.status = BuildStatus::kMissingInputs;
    std::string list;
    for (const auto& m : r_.missing_inputs) list += "\n  " + m;
    r_.message = "inputs of '" + r_.drv_path + "' missing from the cache:" + list;
    return {};
  }
  std::error_code ec;
  fs::create_directories(physical(store_dir_), ec);
  if (ec) {
    return fail(ErrorCode::kIoError,
                "cannot create '" + physical(store_dir_).string() + "': " + ec.message());
  }
  // Outputs already valid here (an earlier build whose upload failed, or whose outputs the
  // cache's GC collected since) are not built again but packed and uploaded as they are:
  // building them again would first remove a valid path, which another build may be using as
  // an input. Unless the cache says an output was marked deleted (or refers to one that was):
  // then the local copy is what an operator condemned, and the build must really happen.
  bool rebuild = false;
  std::vector<std::string> output_paths;
  for (const auto& [name, out] : drv_.outputs) {
    auto present = presentLocally(out.path);
    if (!present) return fail(present.error().withContext("'" + r_.drv_path + "'"));
    rebuild = rebuild || !*present;
    output_paths.push_back(out.path);
  }
  if (!rebuild) {
    auto states = cache_->available(output_paths);
    if (!states) {
      progress("outputs of '" + r_.drv_path + "' are valid here, but the cache cannot say " +
               "whether they were marked deleted (" + states.error().message() + "): built again");
      rebuild = true;
    }
    for (std::size_t i = 0; states && i < states->size(); ++i) {
      const auto state = (*states)[i].state;
      if (state == narstore::ItemState::kDeleted || state == narstore::ItemState::kIncomplete) {
        progress("'" + output_paths[i] + "' is " + std::string(narstore::itemStateName(state)) +
                 " in the cache: built again, its local copy is not used");
        rebuild = true;
      }
    }
  }
  // The outputs are pending from here (see local_store.h): rebuilt ones until they are valid or
  // gone, so that a build that dies between leaves nothing that passes for valid; reused ones
  // while they are packed, so that another build of the same derivation that decides to
  // rebuild (and would first remove them) is refused meanwhile.
  std::vector<std::string> output_bases;
  for (const auto& out : output_paths) output_bases.push_back(fs::path(out).filename());
  auto marked = PendingOutputs::mark(physical(store_dir_), output_bases);
  if (!marked) return fail(marked.error().withContext("'" + r_.drv_path + "'"));
  std::optional<PendingOutputs> pending(std::move(*marked));
  std::list<TreeGuard> output_guards;
  if (rebuild) {
    for (const auto& [full, info] : inputs_) {
      if (!info) continue;  // present locally (queryClosure)
      NARCACHE_TRY(substitute(*info));
    }
    // Outputs left over from an earlier attempt (some valid, others not) would make the build
    // fail or lie.
    for (const auto& [name, out] : drv_.outputs) {
      fs::path phys = physical(out.path);
      if (fs::exists(fs::symlink_status(phys, ec))) {
        TreeGuard old(phys);
      }
    }
    // And what this attempt leaves in the store stays only if it passes every check: the local
    // store takes a present path for a valid one, so a failed build's partial output (or a
    // fixed-output download of the wrong content) would later be used as another build's input.
    for (const auto& [name, out] : drv_.outputs) output_guards.emplace_back(physical(out.path));
  }

  // 2. The builder.
  fs::path tmp_parent = o_.tmp_dir;
  if (tmp_parent.empty()) {
    const char* t = std::getenv("TMPDIR");
    tmp_parent = t != nullptr && *t != '\0' ? t : "/tmp";
  }
  // Absolute: the builder gets it (NIX_BUILD_TOP, TMPDIR, passAsFile paths) and runs elsewhere.
  tmp_parent = fs::absolute(tmp_parent, ec);
  if (ec) return fail(ErrorCode::kIoError, "cannot make TMPDIR absolute: " + ec.message());
  removeAbandonedDirs(tmp_parent, {kWorkDirPrefix});  // killed builds' work dirs
  auto work = ScratchDir::create(tmp_parent, std::string(kWorkDirPrefix) + drv_.name + "-");
  if (!work) return fail(work.error());
  ScratchDir work_guard(std::move(*work));
  work_dir_ = work_guard.path();
  if (o_.keep_build_dir) work_guard.keep();
  build_dir_ = work_dir_ / "build";
  fs::create_directory(build_dir_, ec);
  if (ec) return fail(ErrorCode::kIoError, "cannot create the build directory: " + ec.message());
  r_.log_file = o_.log_file.empty() ? work_dir_ / "log" : o_.log_file;

  // Nix's reference attributes (reference_checks.h) need the input closure's graph, and the
  // NarHash and NarSize of its paths: what the cache said of each input, the packed outputs',
  // or a NAR hashed here (an input present here that the cache does not know).
  auto checks = outputChecksOf(drv_, structured_);
  if (!checks) return fail(checks.error().withContext("'" + r_.drv_path + "'"));
  std::map<std::string, PathFact> known;
  PathFacts facts = [&](const std::string& path) -> Result<PathFact> {
    if (auto k = known.find(path); k != known.end()) return k->second;
    PathFact f;
    auto in = inputs_.find(path);
    auto out = std::find_if(r_.outputs.begin(), r_.outputs.end(),
                            [&](const BuiltOutput& o) { return o.info.fullPath() == path; });
    if (in != inputs_.end() && in->second) {
      f = {in->second->nar_hash.toString(), in->second->nar_size, in->second->ca};
    } else if (out != r_.outputs.end()) {
      f = {out->info.nar_hash.toString(), out->info.nar_size, out->info.ca};
    } else {
      Hasher h;
      NARCACHE_TRY(dumpPath(physical(path), h));
      f = {h.digest().toString(), h.size(), ""};
    }
    return known[path] = f;
  };
  std::optional<ReferenceGraph> graph;
  const bool structured_exports = structured_ && structured_->contains("exportReferencesGraph");
  if (rebuild &&
      (!checks->empty() || drv_.env.count("exportReferencesGraph") != 0 || structured_exports)) {
    auto g = inputGraph();
    if (!g) return fail(g.error());
    graph = std::move(*g);
    if (structured_exports) {
      NARCACHE_TRY(
          exportReferencesGraphJson(*structured_, store_dir_, *graph, facts)
              .map_error([&](const Error& e) { return e.withContext("'" + r_.drv_path + "'"); }));
    }
    auto files = exportReferencesGraph(drv_, store_dir_, *graph);
    if (!files) return fail(files.error().withContext("'" + r_.drv_path + "'"));
    for (const auto& [name, text] : *files) {
      NARCACHE_TRY(writeNewFile(build_dir_ / name, text));
    }
  }
  if (rebuild) {
    NARCACHE_TRY(runBuilder());
    view_.reset();  // removes the view directory
  } else {
    progress("outputs of '" + r_.drv_path + "' are valid in the local store: not built again");
    r_.status = BuildStatus::kSucceeded;
    r_.log_file.clear();  // there is no new log
  }
  if (r_.status == BuildStatus::kSucceeded) NARCACHE_TRY(packOutputs());
  if (!rebuild) pending.reset();  // packed: nothing changes them any more
  if (r_.status == BuildStatus::kSucceeded && graph) {
    for (const BuiltOutput& out : r_.outputs) {
      auto& refs = (*graph)[out.info.fullPath()];
      for (const auto& ref : out.info.references) refs.push_back(ref.fullPath(store_dir_));
    }
    auto refused = checkOutputs(drv_, *checks, store_dir_, *graph, facts);
    if (!refused) return fail(refused.error().withContext("'" + r_.drv_path + "'"));
    if (!refused->empty()) {
      r_.status = BuildStatus::kFailed;
      r_.message = *refused;
    }
  }
  if (r_.status == BuildStatus::kSucceeded && rebuild) {
    const std::optional<uid_t> build_uid =
        build_user_ ? std::optional<uid_t>(build_user_->uid()) : std::nullopt;
    for (const auto& [name, out] : drv_.outputs) {
      NARCACHE_TRY(canonicalise(physical(out.path), build_uid));
    }
    for (TreeGuard& guard : output_guards) guard.keep();
    pending.reset();  // valid now
  }
  if (!r_.log_file.empty()) r_.log_tail = lastLines(readFileTail(r_.log_file, 64 * 1024), 20);
  if (r_.status != BuildStatus::kSucceeded) {
    r_.outputs.clear();
    // The log of a failed build is what its users need most (the coordinator links to it); a
    // failure to upload it does not hide the build's own.
    if (o_.upload) {
      if (auto s = uploadLog(); !s) progress(s.error().message());
    }
    if (o_.log_file.empty() && !o_.keep_build_dir) r_.log_file.clear();
    return {};
  }

  // 4. Uploads: outputs in dependency order, then the log.
  if (o_.upload) {
    NARCACHE_TRY(upload());
  }
  if (o_.upload && !r_.log_file.empty()) NARCACHE_TRY(uploadLog());
  if (o_.log_file.empty() && !o_.keep_build_dir) r_.log_file.clear();
  progress("built '" + r_.drv_path + "'");
  return {};
}

}  // namespace

std::string_view buildStatusName(BuildStatus status) {
  switch (status) {
    case BuildStatus::kSucceeded: return "succeeded";
    case BuildStatus::kFailed: return "failed";
    case BuildStatus::kTimedOut: return "timed-out";
    case BuildStatus::kMissingInputs: return "missing-inputs";
  }
  return "unknown";
}

std::vector<std::string> defaultSystemFeatures() {
  std::vector<std::string> features = {"benchmark", "big-parallel"};
  if (::access("/dev/kvm", R_OK | W_OK) == 0) features.push_back("kvm");
  features.push_back("nixos-test");
  return features;
}

std::string lastLines(std::string_view text, int lines) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  std::size_t pos = text.size();
  for (int i = 0; i < lines; ++i) {
    std::size_t nl = text.rfind('\n', pos == 0 ? 0 : pos - 1);
    if (nl == std::string_view::npos || pos == 0) return std::string(text);
    pos = nl;
  }
  return std::string(text.substr(pos + 1));
}

Result<BuildResult> buildDerivation(const BuildOptions& options) {
  BuildResult result;
  Build build(options, result);
  NARCACHE_TRY(build.run());
  return result;
}

}  // namespace narcache::agent
