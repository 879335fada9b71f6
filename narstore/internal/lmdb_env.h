#pragma once
// A small C++ wrapper over LMDB (named lmdb_env.h: "lmdb.h" would shadow LMDB's own header),
// internal to the modules that own an LMDB file (narstore, coordinator): no LMDB type may appear
// in a public header.
//
// Env: one per database directory per process (Env::open() hands out the same instance to
// every caller while one is alive; LMDB forbids opening a file twice in one process). Opened
// with MDB_NOTLS, so transactions are not tied to threads. Stale reader slots (of processes
// that died while reading: kill -9, or Ctrl-C of a CLI command) are cleared at open, before
// the map grows, and by clearStaleReaders(), which a long-running owner (serve, the
// coordinator) calls every few seconds: a dead reader's snapshot pins the pages it saw, so
// while its slot stays, every write needs new pages and the data file grows without bound.
// ReadTxn / WriteTxn: distinct move-only RAII types; the destructor aborts; commit() clears the
// handle before calling LMDB. Cursors never outlive their transaction. Values returned as
// string_view point into the map and are valid until the transaction ends.
// Map growth: every transaction holds a share of the Env's gate; Env::write() runs a function in
// a write transaction and, when LMDB reports MDB_MAP_FULL, aborts, waits until no transaction is
// active in this process, doubles the map size and runs the function again.
// Errors: LMDB failures are thrown as lmdb::Error (internal to narstore; the Store converts them
// at its public API). MDB_PANIC / MDB_CORRUPTED abort the process with a message.
// Thread-safety: Env is thread-safe; a transaction is used by one thread at a time.

#include <lmdb.h>

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "narcache/narinfo/error.h"

namespace narcache::narstore::lmdb {

class Error : public std::runtime_error {
 public:
  Error(int rc, const std::string& what);
  int rc() const { return rc_; }

 private:
  int rc_;
};

// Converts an lmdb::Error into the narcache Error (ResourceExhausted for a full map or disk).
narcache::Error toError(const Error& e);

class Env;

struct Dbi {
  MDB_dbi handle = 0;
};

class Txn {
 public:
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn();

  std::optional<std::string_view> get(Dbi dbi, std::string_view key) const;
  bool has(Dbi dbi, std::string_view key) const { return get(dbi, key).has_value(); }
  // Number of entries in a table (O(1)).
  std::uint64_t count(Dbi dbi) const;
  MDB_txn* handle() const { return txn_; }

 protected:
  Txn(Env* env, MDB_txn* txn) : env_(env), txn_(txn) {}
  Txn(Txn&& other) noexcept;
  void abort();

  Env* env_ = nullptr;
  MDB_txn* txn_ = nullptr;
};

class ReadTxn final : public Txn {
 public:
  ReadTxn(ReadTxn&& other) noexcept = default;

 private:
  friend class Env;
  using Txn::Txn;
};

class WriteTxn final : public Txn {
 public:
  WriteTxn(WriteTxn&& other) noexcept = default;

  void put(Dbi dbi, std::string_view key, std::string_view value, unsigned flags = 0);
  // Deletes the key (all its duplicates); returns false when it was absent.
  bool del(Dbi dbi, std::string_view key);
  // Deletes one duplicate of a dupsort key; returns false when it was absent.
  bool delDup(Dbi dbi, std::string_view key, std::string_view value);
  void commit();

 private:
  friend class Env;
  using Txn::Txn;
};

// A cursor over one table of a transaction (read or write); must not outlive it.
class Cursor {
 public:
  Cursor(const Txn& txn, Dbi dbi);
  ~Cursor();
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;

  using Entry = std::pair<std::string_view, std::string_view>;
  std::optional<Entry> first() { return op(MDB_FIRST); }
  std::optional<Entry> next() { return op(MDB_NEXT); }
  std::optional<Entry> nextNoDup() { return op(MDB_NEXT_NODUP); }
  std::optional<Entry> nextDup() { return op(MDB_NEXT_DUP); }
  // MDB_DUPFIXED tables only: up to a page of the current key's values from the cursor
  // position, concatenated (each the table's fixed size); then the next page of that key's
  // values. The key of the returned Entry is not meaningful (take it from first()/nextNoDup());
  // for a key with a single value LMDB returns success with empty data (use the value from
  // first()/nextNoDup()).
  std::optional<Entry> getMultiple() { return op(MDB_GET_MULTIPLE); }
  std::optional<Entry> nextMultiple() { return op(MDB_NEXT_MULTIPLE); }
  // Positions at `key` (exact match) and returns its first value.
  std::optional<Entry> find(std::string_view key);
  // Positions at the first key >= `key`.
  std::optional<Entry> lowerBound(std::string_view key);

 private:
  std::optional<Entry> op(MDB_cursor_op o, std::string_view key = {});
  MDB_cursor* cursor_ = nullptr;
};

struct EnvOptions {
  std::filesystem::path dir;                // holds data.mdb and lock.mdb
  std::size_t initial_map_size = 64 << 20;  // 0: LMDB's default
  unsigned max_dbs = 16;
};

class Env {
 public:
  static std::shared_ptr<Env> open(const EnvOptions& options);  // throws lmdb::Error
  ~Env();
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

  // Opens (creating when `create`) a named table; call once per table at start-up. An existing
  // table is opened in a read transaction: no writer lock is taken.
  Dbi openDbi(const char* name, unsigned flags, bool create);

  ReadTxn beginRead();
  WriteTxn beginWrite();

  // Runs `fn` in a write transaction and commits when it succeeds (aborts otherwise). On
  // MDB_MAP_FULL grows the map and runs `fn` again, so `fn` must have no effects outside the
  // transaction (or tolerate repetition).
  template <typename T>
  Result<T> write(const std::function<Result<T>(WriteTxn&)>& fn);

  std::size_t mapSize() const;
  std::uint64_t growths() const;

  // Frees the reader slots of processes that died while reading (mdb_reader_check); returns
  // how many. Cheap (one pass over the reader table, one lock probe per slot); thread-safe.
  int clearStaleReaders();

 private:
  friend class Txn;
  friend class WriteTxn;
  Env() = default;
  void enter();
  void leave();
  void grow(std::size_t seen_size);
  void adoptResize();

  MDB_env* env_ = nullptr;
  std::filesystem::path dir_;
  std::mutex dbi_mutex_;  // serialises openDbi()
  mutable std::mutex gate_mutex_;
  std::condition_variable gate_cv_;
  int active_ = 0;
  bool growing_ = false;
  std::size_t map_size_ = 0;  // guarded by gate_mutex_
  std::uint64_t growths_ = 0;
};

template <typename T>
Result<T> Env::write(const std::function<Result<T>(WriteTxn&)>& fn) {
  for (;;) {
    std::size_t seen = mapSize();
    try {
      WriteTxn txn = beginWrite();
      Result<T> result = fn(txn);
      if (result) txn.commit();
      return result;
    } catch (const Error& e) {
      if (e.rc() != MDB_MAP_FULL) throw;
    }
    grow(seen);
  }
}

}  // namespace narcache::narstore::lmdb
