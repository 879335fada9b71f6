#pragma once
// RestoreTarget: the file-system primitives of a NAR restore, safe against hostile NARs. One
// implementation of the safety rules, used by restoreNar (nar.h) and by restorers that create
// the entries in another order or from several threads (narstore's parallel restorer).
//
// Invariant kept by every method: an entry is created with an *at() call relative to the fd of
// a directory this restore created (or, for the root, the destination's parent), and only ever
// under its last path component: mkdirat and symlinkat fail on an existing name, files are
// opened O_CREAT|O_EXCL|O_NOFOLLOW, directories re-opened O_DIRECTORY|O_NOFOLLOW. No path with
// more than one component is resolved, so nothing outside the destination can be created,
// followed or written, whatever the names and symlink targets. The caller passes NAR paths that
// parseNar has validated (no '/', NUL, "." or ".." in a name, no duplicates).
//
// Files get mode 0644 or 0755, directories 0755, whatever the umask. Errors name the operation
// and the full path: "restore: create 'out/bin/x': No space left on device" (EEXIST is
// AlreadyExists, ENOSPC/EDQUOT ResourceExhausted, EACCES/EPERM PermissionDenied, the rest
// IoError).
//
// Thread-safety: after open(), every method is const and touches no shared mutable state, so
// several threads may call them at once (each with its own fds).

#include <filesystem>
#include <string>
#include <string_view>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache {

class RestoreTarget {
 public:
  // Opens the parent of `dest`. Refuses a `dest` that exists (AlreadyExists, even a dangling
  // symlink), whose parent is missing (NotFound) or that names no new entry (InvalidArgument:
  // "", ".", ".."). A trailing slash names the same entry.
  static Result<RestoreTarget> open(const std::filesystem::path& dest);

  // The destination's parent directory: the `dir_fd` under which the root ("") is created.
  int parentFd() const { return parent_.get(); }

  // Each creates the entry `path` (the NAR path, "" for the root) under its last component in
  // `dir_fd`, the directory holding it.
  // makeDirectory returns an fd open on the new directory, for its entries.
  Result<Fd> makeDirectory(int dir_fd, std::string_view path) const;
  // createFile returns the new empty file open for writing.
  Result<Fd> createFile(int dir_fd, std::string_view path, bool executable) const;
  Status makeSymlink(int dir_fd, std::string_view path, std::string_view target) const;

  // Writes all of `data` to the file `path` (retrying short writes and EINTR).
  Status write(int fd, Bytes data, std::string_view path) const;
  // Appends the span `from` (of the NAR file) to the file `path`, copied by the kernel
  // (sendfile: the bytes never pass through this process); where the kernel cannot do that
  // (e.g. an O_APPEND fd), by reading and writing. A NAR file that ends before the span is an
  // IoError: "restore: write 'out/x': the NAR file ended early (did it shrink while being
  // restored?)". The NAR file's own offset is left alone.
  Status copy(int fd, const FileSpan& from, std::string_view path) const;
  // Closes the file `path`, reporting a failed close (e.g. a deferred write error).
  Status close(Fd fd, std::string_view path) const;

 private:
  RestoreTarget(Fd parent, std::string root_name, std::string display, bool fix_modes);
  std::string leafName(std::string_view path) const;
  // "restore: <what> '<dest/path>': <reason, or err's text>".
  Error sysError(int err, std::string_view what, std::string_view path,
                 std::string_view reason = {}) const;

  Fd parent_;
  std::string root_name_;  // last component of the destination
  std::string display_;    // the destination as given, for messages
  bool fix_modes_;         // the umask would clear bits of 0755: fchmod every entry
};

}  // namespace narcache
