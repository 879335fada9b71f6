// Parallel NAR restore (see parallel_restore.h). The parser thread creates directories and hands
// out one job per file or symlink; workers create, write and close them. From a NAR read in
// place (a mapped file), a file's job holds the span of the NAR file its contents occupy and the
// worker has the kernel copy it (sendfile): the contents never pass through this process. From
// a stream, files of at most kPieceSize bytes travel whole in their job; larger ones stream to
// a single worker through a Stream of pieces, so their bytes are written in order.
//
// Invariants:
// - A job's directory exists before the job is queued (the parser made it), and its fd stays
//   open until the last job in it is done (jobs share it through a DirRef).
// - Entries are created in a directory by one thread at a time (OpenDir::creating): a worker
//   takes the queued jobs of one directory together (up to kBatchJobs) and creates all of them
//   under one hold of that lock, then writes and closes them without it. Creating an entry takes
//   the directory's inode lock in the kernel, which threads creating in the same directory
//   otherwise spin on: on ext4 after a mass delete, where each inode allocation is slow, that
//   spinning cost 4-10x the CPU of the restore itself.
// - `buffered_` counts the bytes queued and not yet written, plus kJobOverhead per job (but a
//   streamed file's own job); the parser queues nothing that would take it past max_buffered,
//   unless it is 0. On top come its own partial piece or small file (at most kPieceSize) and
//   its batch of small jobs not yet queued (at most kBatchJobs jobs / about kBatchBytes):
//   memory stays bounded. At most kMaxQueuedJobs jobs wait, which bounds the open directory
//   fds: the parser's stack (at most 257) plus the queued and running jobs' directories. A
//   parser that finds no room waits until the workers have drained the budget and the queue to
//   half (halfDrained(); a worker that gets them there wakes it), one wake-up per half queue.
// - Only the parser feeds a Stream, and it finishes one file before starting the next, so at
//   most one Stream is incomplete; the worker draining it never waits on anything but the
//   parser, and the parser only on workers that make progress: no deadlock.
// - When the source reads in place, only the parser touches its memory (the headers it
//   parses); the workers copy file spans. So every kReleaseStep bytes the parser releases what
//   it has read, and the mapped pages in memory stay bounded. A file span costs the budget only
//   kJobOverhead: its bytes are not in this process.
// - A worker takes jobs of one directory together only while their bytes stay under
//   kBatchBytes, so that large files queued side by side go to different workers.

#include "narcache/narstore/parallel_restore.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "narcache/narinfo/nar.h"
#include "narcache/narinfo/nar_restore.h"

namespace narcache::narstore {
namespace {

// Files up to this size are queued whole; larger ones stream in pieces of this size.
constexpr std::size_t kPieceSize = std::size_t{1} << 20;
// Jobs waiting for a worker, at most. Each keeps its directory open: this bounds the open fds
// (a NAR of many directories holding one small file each would otherwise queue thousands of
// directory fds and run into the fd limit, 1024 by default).
constexpr std::size_t kMaxQueuedJobs = 128;
// The parser hands small jobs out in batches of up to this many jobs or bytes (one lock and one
// wake-up per batch instead of per file: with 20,000 small files, waking a worker per file cost
// more CPU than the parser's own work).
constexpr std::size_t kBatchJobs = 16;
constexpr std::size_t kBatchBytes = std::size_t{256} << 10;
// Charged per job on top of its bytes, so that empty files and symlinks count against the
// budget too (a NAR of a million empty files queues a bounded number of jobs).
constexpr std::size_t kJobOverhead = 256;
// An in-place source's bytes are released behind the restore every this many bytes.
constexpr std::size_t kReleaseStep = std::size_t{4} << 20;

// A directory the parser created, kept open while jobs creating entries in it are pending.
struct OpenDir {
  explicit OpenDir(Fd f) : fd(std::move(f)) {}
  Fd fd;
  std::mutex creating;  // held while creating entries in it (see the invariants above)
};
using DirRef = std::shared_ptr<OpenDir>;

// The contents of a large file, in order: fed by the parser, drained by one worker.
struct Stream {
  std::deque<std::string> pieces;  // guarded by ParallelRestorer::mutex_
  bool complete = false;           // guarded by ParallelRestorer::mutex_
};

struct Job {
  enum class Kind { kFile, kSymlink };
  Kind kind = Kind::kFile;
  int dir_fd = -1;  // where the entry is created
  DirRef dir;       // keeps dir_fd open; empty for the root (the target's parent fd)
  std::string path;
  bool executable = false;
  std::string data;                // a small file's contents, or a symlink's target
  FileSpan span;                   // instead of data: the contents' span of an in-place source
  std::shared_ptr<Stream> stream;  // a large file's contents
  std::size_t charge = 0;          // what this job adds to buffered_
  // The bytes this job writes (a stream's are not known up front).
  std::size_t bytes() const { return data.size() + span.size; }
};

class ParallelRestorer final : public NarVisitor {
 public:
  ParallelRestorer(const RestoreTarget& target, Source& source,
                   const ParallelRestoreOptions& options)
      : target_(target),
        source_(source),
        in_place_(source.readsInPlace()),
        max_buffered_(options.max_buffered) {
    unsigned jobs = options.jobs == 0 ? defaultRestoreJobs() : options.jobs;
    workers_.reserve(jobs);
    for (unsigned i = 0; i < jobs; ++i) workers_.emplace_back([this] { workerMain(); });
  }

  // Stops the workers (dropping what is queued) unless finish() already joined them.
  ~ParallelRestorer() override {
    if (joined_) return;
    recordError(Error(ErrorCode::kInternal, "restore abandoned"));
    join();
  }

  ParallelRestorer(const ParallelRestorer&) = delete;
  ParallelRestorer& operator=(const ParallelRestorer&) = delete;

  Status directory(std::string_view path) override {
    NARCACHE_TRY(checkWorkers());
    std::unique_lock<std::mutex> creating;
    if (!path.empty()) creating = std::unique_lock(dirs_.back()->creating);
    auto fd = target_.makeDirectory(dirFd(path), path);
    if (!fd) return fail(fd.error());
    creating = {};
    dirs_.push_back(std::make_shared<OpenDir>(std::move(*fd)));
    return {};
  }

  Status directoryEnd(std::string_view) override {
    dirs_.pop_back();  // closed when its last pending job is done
    return {};
  }

  Status symlink(std::string_view path, std::string_view target) override {
    Job job = newJob(path);
    job.kind = Job::Kind::kSymlink;
    job.data = target;
    job.charge += job.data.size();
    return batch(std::move(job));
  }

  Status fileBegin(std::string_view path, bool executable, std::uint64_t size,
                   std::uint64_t) override {
    NARCACHE_TRY(checkWorkers());
    current_ = newJob(path);
    current_.executable = executable;
    if (in_place_) return {};  // its span grows with contents()
    if (size <= kPieceSize) {
      current_.data.reserve(size);
      return {};
    }
    stream_ = std::make_shared<Stream>();
    current_.stream = stream_;
    // Its pieces are charged as they come. The job itself is not: it stays charged until the
    // worker has written the whole file, which waits for the parser, which would wait for it.
    current_.charge = 0;
    piece_ = takeSpare();
    NARCACHE_TRY(flushBatch());
    return submit(std::move(current_));  // a worker creates it and waits for the pieces
  }

  Status contents(Bytes chunk) override {
    if (in_place_) return extendSpan(chunk);
    if (!stream_) {
      current_.data.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
      return {};
    }
    while (!chunk.empty()) {
      std::size_t n = std::min(chunk.size(), kPieceSize - piece_.size());
      piece_.append(reinterpret_cast<const char*>(chunk.data()), n);
      chunk = chunk.subspan(n);
      if (piece_.size() == kPieceSize) NARCACHE_TRY(pushPiece(false));
    }
    return {};
  }

  Status fileEnd() override {
    if (stream_) {
      NARCACHE_TRY(pushPiece(true));
    } else {
      current_.charge += current_.data.size();
      NARCACHE_TRY(batch(std::move(current_)));
    }
    releaseBehind();
    return {};
  }

  // Called once parseNar has returned `parsed`: lets the workers finish what is queued (after a
  // malformed NAR too: what preceded the bad spot is restored, as restoreNar does), joins them,
  // and returns the first error.
  Status finish(Status parsed) {
    // The batch goes out after a malformed NAR too (what preceded the bad spot is restored).
    if (auto flushed = flushBatch(); !flushed && parsed) parsed = flushed;
    batch_.clear();  // after a worker's error, what is left unqueued is dropped
    std::optional<Error> earlier;
    {
      std::lock_guard lock(mutex_);
      if (stream_) {  // the NAR ended inside a large file: write what there is
        buffered_ += piece_.size();
        if (!piece_.empty()) stream_->pieces.push_back(std::move(piece_));
        stream_->complete = true;
        stream_.reset();
      }
      earlier = error_;  // a worker's error that came before the parse ended
      closing_ = true;
    }
    pieces_ready_.notify_all();
    jobs_ready_.notify_all();
    join();
    if (!parsed) return fail(earlier ? *earlier : parsed.error());
    std::lock_guard lock(mutex_);
    if (error_) return fail(*error_);
    return {};
  }

 private:
  int dirFd(std::string_view path) const {
    return path.empty() ? target_.parentFd() : dirs_.back()->fd.get();
  }

  Job newJob(std::string_view path) const {
    Job job;
    job.path = path;
    job.charge = kJobOverhead;
    if (path.empty()) {
      job.dir_fd = target_.parentFd();
    } else {
      job.dir = dirs_.back();
      job.dir_fd = job.dir->fd.get();
    }
    return job;
  }

  // A worker's error, if there was one: the parse stops with it.
  Status checkWorkers() {
    if (!failed_.load(std::memory_order_relaxed)) return {};
    std::lock_guard lock(mutex_);
    return fail(*error_);
  }

  // Whether `n` more bytes stay within `limit` (anything does when nothing is buffered). mutex_
  // held, as for the two below.
  bool fits(std::size_t n, std::size_t limit) const {
    return buffered_ == 0 || buffered_ + n <= limit;
  }

  // The workers have drained the budget and the queue to half. A parser that found no room
  // waits for this, so it wakes once per half queue rather than once per batch done.
  bool halfDrained() const {
    return buffered_ <= max_buffered_ / 2 && queue_.size() <= kMaxQueuedJobs / 2;
  }

  // Returns once `charge` more bytes (and, for a job, one more in the queue) have room, or with
  // the workers' error. While it waits, the workers are woken to drain what is queued.
  Status waitForRoom(std::unique_lock<std::mutex>& lock, std::size_t charge, bool job) {
    if (!error_ && fits(charge, max_buffered_) && (!job || queue_.size() < kMaxQueuedJobs)) {
      return {};
    }
    jobs_ready_.notify_all();
    space_ready_.wait(lock,
                      [&] { return error_ || (halfDrained() && fits(charge, max_buffered_ / 2)); });
    if (error_) return fail(*error_);
    return {};
  }

  // A worker drained something: wakes the parser if it may be waiting for this. mutex_ held.
  void drained() {
    if (halfDrained()) space_ready_.notify_one();
  }

  // Queues `job` once the budget and the queue have room for it; mutex_ held through `lock`.
  Status enqueueLocked(std::unique_lock<std::mutex>& lock, Job& job) {
    NARCACHE_TRY(waitForRoom(lock, job.charge, true));
    buffered_ += job.charge;
    queue_.push_back(std::move(job));
    return {};
  }

  // Queues `job` (a large file's, which must not wait in a batch).
  Status submit(Job job) {
    {
      std::unique_lock lock(mutex_);
      NARCACHE_TRY(enqueueLocked(lock, job));
    }
    jobs_ready_.notify_one();
    return {};
  }

  // Adds a small job to the parser's batch; a full batch is queued.
  Status batch(Job job) {
    batch_bytes_ += job.bytes();
    batch_.push_back(std::move(job));
    if (batch_.size() >= kBatchJobs || batch_bytes_ >= kBatchBytes) return flushBatch();
    return {};
  }

  // Queues the batch, as room in the budget and the queue allows (a job at a time), and wakes
  // one worker: it takes the batch (one directory's jobs at a time) and wakes another if it
  // leaves jobs behind, so no more workers wake than there is work for.
  Status flushBatch() {
    if (batch_.empty()) return {};
    {
      std::unique_lock lock(mutex_);
      for (Job& job : batch_) NARCACHE_TRY(enqueueLocked(lock, job));
    }
    batch_.clear();
    batch_bytes_ = 0;
    jobs_ready_.notify_one();
    return {};
  }

  // Hands the stream's worker its next piece, piece_ (a spare buffer takes its place). `last`
  // also marks the stream complete.
  Status pushPiece(bool last) {
    {
      std::unique_lock lock(mutex_);
      NARCACHE_TRY(waitForRoom(lock, piece_.size(), false));
      buffered_ += piece_.size();
      if (!piece_.empty()) stream_->pieces.push_back(std::move(piece_));
      if (last) {
        stream_->complete = true;
        stream_.reset();
        if (piece_.capacity() > 0) spare_.push_back(std::move(piece_));
      } else {
        piece_ = takeSpareLocked();
      }
    }
    pieces_ready_.notify_all();
    return {};
  }

  // In place: adds `chunk` to the current file's span (its chunks follow each other).
  Status extendSpan(Bytes chunk) {
    auto span = source_.fileSpan(chunk);
    FileSpan& have = current_.span;
    if (!span ||
        (have.size > 0 && (span->fd != have.fd || span->offset != have.offset + have.size))) {
      return fail(ErrorCode::kInternal, "restore: contents read in place are not a file span");
    }
    if (have.size == 0) {
      have = *span;
    } else {
      have.size += span->size;
    }
    cursor_ = chunk.data() + chunk.size();
    unreleased_ += chunk.size();
    return {};
  }

  // In place: gives back the source's memory the parser has read (nobody else reads it).
  void releaseBehind() {
    if (unreleased_ < kReleaseStep) return;
    unreleased_ = 0;
    source_.release(cursor_);
  }

  std::string takeSpare() {
    std::lock_guard lock(mutex_);
    return takeSpareLocked();
  }

  std::string takeSpareLocked() {  // mutex_ held
    if (spare_.empty()) {
      std::string piece;
      piece.reserve(kPieceSize);
      return piece;
    }
    std::string piece = std::move(spare_.back());
    spare_.pop_back();
    return piece;
  }

  void recordError(Error error) {
    {
      std::lock_guard lock(mutex_);
      if (error_) return;
      error_ = std::move(error);
      failed_.store(true, std::memory_order_relaxed);
    }
    jobs_ready_.notify_all();
    pieces_ready_.notify_all();
    space_ready_.notify_all();
  }

  void join() {
    for (auto& worker : workers_) worker.join();
    joined_ = true;
  }

  // Thread entry point: no exception escapes it.
  void workerMain() {
    try {
      work();
    } catch (const std::exception& e) {
      recordError(Error(ErrorCode::kInternal, std::string("restore worker: ") + e.what()));
    } catch (...) {
      recordError(Error(ErrorCode::kInternal, "restore worker: unknown exception"));
    }
  }

  void work() {
    std::vector<Job> jobs;  // the jobs done are accounted for with the next lock
    for (;;) {
      bool more = false;
      {
        std::unique_lock lock(mutex_);
        if (!jobs.empty()) {
          for (const Job& job : jobs) buffered_ -= job.charge;
          jobs.clear();
          drained();
        }
        jobs_ready_.wait(lock, [&] { return !queue_.empty() || closing_ || error_; });
        if (error_ || queue_.empty()) return;  // stopped, or closing and drained
        // The front job, and the small jobs right behind it in the same directory.
        std::size_t bytes = 0;
        do {
          bytes += queue_.front().bytes();
          jobs.push_back(std::move(queue_.front()));
          queue_.pop_front();
        } while (!queue_.empty() && jobs.size() < kBatchJobs && !jobs.front().stream &&
                 !queue_.front().stream && queue_.front().dir == jobs.front().dir &&
                 bytes + queue_.front().bytes() <= kBatchBytes);
        drained();
        more = !queue_.empty();
      }
      if (more) jobs_ready_.notify_one();  // jobs left behind: another worker takes them
      Status status = run(jobs);
      if (!status) {
        recordError(status.error());
        return;
      }
    }
  }

  // Creates the entries of `jobs` (all in one directory) under its lock, then writes and closes
  // the files.
  Status run(std::vector<Job>& jobs) {
    std::vector<Fd> fds(jobs.size());
    {
      std::unique_lock<std::mutex> creating;
      if (jobs.front().dir) creating = std::unique_lock(jobs.front().dir->creating);
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        Job& job = jobs[i];
        if (job.kind == Job::Kind::kSymlink) {
          NARCACHE_TRY(target_.makeSymlink(job.dir_fd, job.path, job.data));
          continue;
        }
        auto fd = target_.createFile(job.dir_fd, job.path, job.executable);
        if (!fd) return fail(fd.error());
        fds[i] = std::move(*fd);
      }
    }
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      Job& job = jobs[i];
      if (job.kind == Job::Kind::kSymlink) continue;
      if (job.stream) {
        NARCACHE_TRY(drain(*job.stream, fds[i].get(), job.path));
      } else if (job.span.size > 0) {
        NARCACHE_TRY(target_.copy(fds[i].get(), job.span, job.path));
      } else if (!job.data.empty()) {
        NARCACHE_TRY(target_.write(fds[i].get(), asBytes(job.data), job.path));
      }
      NARCACHE_TRY(target_.close(std::move(fds[i]), job.path));
    }
    return {};
  }

  // Writes a large file's pieces as the parser delivers them.
  Status drain(Stream& stream, int fd, std::string_view path) {
    for (;;) {
      std::string piece;
      {
        std::unique_lock lock(mutex_);
        pieces_ready_.wait(lock,
                           [&] { return !stream.pieces.empty() || stream.complete || error_; });
        if (error_) return fail(*error_);
        if (stream.pieces.empty()) return {};
        piece = std::move(stream.pieces.front());
        stream.pieces.pop_front();
      }
      NARCACHE_TRY(target_.write(fd, asBytes(piece), path));
      {
        std::lock_guard lock(mutex_);
        buffered_ -= piece.size();
        piece.clear();
        spare_.push_back(std::move(piece));
        drained();
      }
    }
  }

  const RestoreTarget& target_;
  Source& source_;       // read by the parser thread only
  const bool in_place_;  // source_ reads in place: contents are file spans, not copies
  const std::size_t max_buffered_;

  // Parser-thread state.
  std::vector<DirRef> dirs_;           // open directories from the root down
  Job current_;                        // the file being parsed
  std::shared_ptr<Stream> stream_;     // its stream, when it is large (also read by finish())
  std::string piece_;                  // the piece of stream_ being filled
  std::vector<Job> batch_;             // small jobs not yet queued (see kBatchJobs)
  std::size_t batch_bytes_ = 0;        // their bytes
  const std::byte* cursor_ = nullptr;  // in place: the end of the last contents chunk
  std::size_t unreleased_ = 0;         // in place: contents bytes since the last release

  std::mutex mutex_;
  std::condition_variable jobs_ready_;    // queue_ grew, closing_ or error_
  std::condition_variable pieces_ready_;  // a stream got a piece or completed, or error_
  std::condition_variable space_ready_;   // buffered_ shrank, or error_
  std::deque<Job> queue_;                 // guarded by mutex_
  std::size_t buffered_ = 0;              // guarded by mutex_
  std::vector<std::string> spare_;        // guarded by mutex_: written pieces, for reuse
  std::optional<Error> error_;            // guarded by mutex_: the first error
  std::atomic<bool> failed_{false};       // error_ is set (read without the lock)
  bool closing_ = false;                  // guarded by mutex_: nothing more will be queued
  bool joined_ = false;                   // parser thread: the workers have exited
  std::vector<std::jthread> workers_;     // last member: started after the rest exists
};

}  // namespace

unsigned defaultRestoreJobs() {
  // Measured on 2 cores (docs/benchmarks.md): 3 workers 0.44-0.54 s, 2 0.44-0.56 s, 4
  // 0.48-0.60 s, 8 far behind.
  return std::clamp(std::thread::hardware_concurrency() + 1, 2u, 16u);
}

Status restoreNarParallel(Source& source, const std::filesystem::path& dest,
                          const ParallelRestoreOptions& options) {
  auto target = RestoreTarget::open(dest);
  if (!target) return fail(target.error());
  ParallelRestorer restorer(*target, source, options);
  auto parsed = parseNar(source, restorer);
  return restorer.finish(parsed ? Status{} : Status(fail(parsed.error())));
}

}  // namespace narcache::narstore
