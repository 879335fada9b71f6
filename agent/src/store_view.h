#pragma once
// The store as a builder sees it: a private mount namespace in which the logical store dir holds
// only the build's input closure (read-only) and what the builder writes (its outputs).
//
// How: prepare() creates a view directory V = <physical store>/.narcache-view-<name>-<random> on
// the host, with an empty mount point in V for each input path (a directory or an empty file,
// by the input's type; an input that is a symlink is copied as a symlink). In the builder's
// child process, enterInChild() unshares the mount namespace, makes every mount private (nothing
// propagates back to the host), bind-mounts each physical input path on its mount point in V and
// remounts it read-only, then bind-mounts V (with those mounts) on the logical store dir. The
// store dir the builder sees is therefore V: the inputs, read-only, and a writable directory in
// which it creates its outputs, which land physically in V. After the builder succeeded,
// collectOutputs() renames them from V into the physical store (same file system, so one
// rename each). The destructor removes V: mount points with rmdir/unlink only (never
// recursively, so a still-mounted input can never be emptied), everything else the builder left
// there recursively.
//
// Works for physical == logical (store root "/") as for a chroot store: V is bound on the store
// dir only after the inputs were bound into V from their physical paths.
//
// Needs root (CAP_SYS_ADMIN) and mount namespaces; probe() tells whether they work here.
// Not thread-safe; one view per build. enterInChild() runs between fork and exec: it only makes
// system calls on strings prepared beforehand.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "local_store.h"
#include "narcache/narinfo/error.h"

namespace narcache::agent {

class StoreView {
 public:
  // V's name is kDirPrefix + name + "-" + a random suffix; it is a ScratchDir, so what a killed
  // build left there goes with removeAbandonedDirs().
  static constexpr const char* kDirPrefix = ".narcache-view-";

  // `physical_store`: where the store dir's entries are on the host; `logical_store`: the store
  // dir the builder sees; `inputs` and `outputs`: base names of store paths. Inputs must exist
  // physically. Errors: IoError (creating V or a mount point).
  static Result<StoreView> prepare(const std::filesystem::path& physical_store,
                                   const std::string& logical_store, const std::string& name,
                                   const std::vector<std::string>& inputs,
                                   const std::vector<std::string>& outputs);

  StoreView(StoreView&& other) noexcept;
  StoreView& operator=(StoreView&&) = delete;
  StoreView(const StoreView&) = delete;
  StoreView& operator=(const StoreView&) = delete;
  ~StoreView();

  // Whether this process can set up the view: forks a child that tries unshare(CLONE_NEWNS), a
  // private "/" and a bind mount of V on itself. 0 when it can, else the errno of the step that
  // failed, with `*step` naming it ("unshare", "mount").
  int probe(const char** step) const;

  // In the forked child: sets up the namespace (see above). 0 on success, else errno, with
  // `*step` naming what failed. Allocation-free.
  int enterInChild(const char** step) const noexcept;

  // After the builder exited 0: moves each output it created from V into the physical store,
  // replacing nothing (an existing path there is an IoError).
  Status collectOutputs();

  const std::filesystem::path& dir() const { return dir_; }

 private:
  StoreView() = default;
  void remove() noexcept;

  std::filesystem::path physical_store_;
  std::string logical_store_;
  std::filesystem::path dir_;  // V; empty once moved from
  std::string dir_str_;
  std::optional<ScratchDir> scratch_;  // V's owner
  std::vector<std::string> outputs_;
  // Physical input path -> its mount point in V, for inputs that are bind-mounted.
  std::vector<std::pair<std::string, std::string>> binds_;
  std::vector<std::string> copied_symlinks_;  // inputs that are symlinks, copied into V
};

}  // namespace narcache::agent
