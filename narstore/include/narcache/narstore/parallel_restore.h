#pragma once
// Parallel NAR restore: the same result and the same safety as narinfo's restoreNar, with the
// kernel's work (creating files and symlinks, writing their contents, closing them) spread over
// a few worker threads, which is where a restore spends its time.
//
// The NAR is parsed on the calling thread by parseNar, which enforces every rule of the format;
// directories are created there too, before any of their entries is handed out. Every entry is
// created through narinfo's RestoreTarget (nar_restore.h): relative to the fd of a directory
// this restore created, under a single name, O_EXCL/O_NOFOLLOW, so nothing outside `dest` is
// ever created, followed or written.
//
// Memory is bounded whatever the NAR's size: file contents (and symlink targets) wait for a
// worker in buffers of at most `max_buffered` bytes in total; the parser waits when they are
// full (then until the workers have drained half). A file larger than 1 MiB streams to one
// worker in 1 MiB pieces, written in order.
//
// Errors: as restoreNar's. The first error wins: an error of a worker (e.g. "restore: create
// 'dest/x': No space left on device") stops the parse and the other workers; a malformed NAR
// ("NAR offset 112: ...") lets the entries before the bad spot finish. Either way every worker
// has stopped before the call returns, and the partial tree is left inside `dest` for the
// caller to remove (as restoreNar does; restore into a temporary name and rename it to publish
// a tree atomically).
//
// Thread-safety: each call is independent; `source` is read on the calling thread only.

#include <cstddef>
#include <filesystem>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache::narstore {

struct ParallelRestoreOptions {
  // Worker threads; 0 picks defaultRestoreJobs(). 1 still overlaps parsing with the kernel work.
  unsigned jobs = 0;
  // Bytes of file contents waiting for the workers, at most (a single file piece may exceed it).
  std::size_t max_buffered = std::size_t{8} << 20;
};

// The worker count used when none is given: one more than the number of cores, from 2 to 16
// (file creation waits in the kernel, so a worker beyond the core count still overlaps).
unsigned defaultRestoreJobs();

// Restores the NAR read from `source` into `dest`, which must not exist (its parent must).
// A source that reads in place (a MappedFileSource) is not copied at all: the parser reads
// only the headers from its memory (released behind it), and the workers have the kernel copy
// each file's span of the NAR file into the new file (RestoreTarget::copy). Large files then
// no longer stream through one worker: each is one job, so several are written at once.
Status restoreNarParallel(Source& source, const std::filesystem::path& dest,
                          const ParallelRestoreOptions& options = {});

}  // namespace narcache::narstore
