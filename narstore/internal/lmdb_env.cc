#include "lmdb_env.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "guarded.h"

namespace narcache::narstore::lmdb {
namespace {

constexpr std::size_t kMaxMapSize = std::size_t{1} << 40;  // 1 TiB of address space

[[noreturn]] void panic(int rc, const char* what) {
  std::fprintf(stderr, "narcache: fatal LMDB error in %s: %s\n", what, mdb_strerror(rc));
  std::abort();
}

void check(int rc, const char* what) {
  if (rc == MDB_SUCCESS) return;
  if (rc == MDB_PANIC || rc == MDB_CORRUPTED) panic(rc, what);
  throw Error(rc, std::string(what) + ": " + mdb_strerror(rc));
}

MDB_val val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}
std::string_view view(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}

// The process-wide registry behind "one Env per file per process".
Guarded<std::map<std::string, std::weak_ptr<Env>>>& registry() {
  static Guarded<std::map<std::string, std::weak_ptr<Env>>> r;
  return r;
}

}  // namespace

Error::Error(int rc, const std::string& what) : std::runtime_error(what), rc_(rc) {}

narcache::Error toError(const Error& e) {
  if (e.rc() == MDB_MAP_FULL || e.rc() == ENOSPC || e.rc() == EDQUOT) {
    return narcache::Error(ErrorCode::kResourceExhausted, std::string("database: ") + e.what());
  }
  return narcache::Error(ErrorCode::kInternal, std::string("database: ") + e.what());
}

// --- Txn ---------------------------------------------------------------------------------

Txn::Txn(Txn&& other) noexcept : env_(other.env_), txn_(other.txn_) {
  other.txn_ = nullptr;
  other.env_ = nullptr;
}

Txn::~Txn() {
  abort();
}

void Txn::abort() {
  if (txn_ != nullptr) {
    MDB_txn* t = txn_;
    txn_ = nullptr;
    mdb_txn_abort(t);
    env_->leave();
  }
}

std::optional<std::string_view> Txn::get(Dbi dbi, std::string_view key) const {
  MDB_val k = val(key);
  MDB_val v;
  int rc = mdb_get(txn_, dbi.handle, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  check(rc, "mdb_get");
  return view(v);
}

std::uint64_t Txn::count(Dbi dbi) const {
  MDB_stat st;
  check(mdb_stat(txn_, dbi.handle, &st), "mdb_stat");
  return st.ms_entries;
}

void WriteTxn::put(Dbi dbi, std::string_view key, std::string_view value, unsigned flags) {
  MDB_val k = val(key);
  MDB_val v = val(value);
  int rc = mdb_put(txn_, dbi.handle, &k, &v, flags);
  if (rc == MDB_KEYEXIST && (flags & MDB_NODUPDATA) != 0) return;
  check(rc, "mdb_put");
}

bool WriteTxn::del(Dbi dbi, std::string_view key) {
  MDB_val k = val(key);
  int rc = mdb_del(txn_, dbi.handle, &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  check(rc, "mdb_del");
  return true;
}

bool WriteTxn::delDup(Dbi dbi, std::string_view key, std::string_view value) {
  MDB_val k = val(key);
  MDB_val v = val(value);
  int rc = mdb_del(txn_, dbi.handle, &k, &v);
  if (rc == MDB_NOTFOUND) return false;
  check(rc, "mdb_del");
  return true;
}

void WriteTxn::commit() {
  MDB_txn* t = txn_;
  txn_ = nullptr;  // LMDB frees the handle whether commit succeeds or not
  int rc = mdb_txn_commit(t);
  env_->leave();
  check(rc, "mdb_txn_commit");
}

// --- Cursor --------------------------------------------------------------------------------

Cursor::Cursor(const Txn& txn, Dbi dbi) {
  check(mdb_cursor_open(txn.handle(), dbi.handle, &cursor_), "mdb_cursor_open");
}

Cursor::~Cursor() {
  mdb_cursor_close(cursor_);
}

std::optional<Cursor::Entry> Cursor::op(MDB_cursor_op o, std::string_view key) {
  MDB_val k = val(key);
  MDB_val v{0, nullptr};
  int rc = mdb_cursor_get(cursor_, &k, &v, o);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  check(rc, "mdb_cursor_get");
  return Entry{view(k), view(v)};
}

std::optional<Cursor::Entry> Cursor::find(std::string_view key) {
  return op(MDB_SET_KEY, key);
}
std::optional<Cursor::Entry> Cursor::lowerBound(std::string_view key) {
  return op(MDB_SET_RANGE, key);
}

// --- Env -----------------------------------------------------------------------------------

std::shared_ptr<Env> Env::open(const EnvOptions& options) {
  std::error_code ec;
  std::filesystem::path canonical = std::filesystem::weakly_canonical(options.dir, ec);
  if (ec) canonical = options.dir;
  auto reg = registry().lock();
  if (auto it = reg->find(canonical.string()); it != reg->end()) {
    if (auto existing = it->second.lock()) return existing;
  }
  std::shared_ptr<Env> env(new Env());
  env->dir_ = canonical;
  check(mdb_env_create(&env->env_), "mdb_env_create");
  check(mdb_env_set_maxdbs(env->env_, options.max_dbs), "mdb_env_set_maxdbs");
  check(mdb_env_set_maxreaders(env->env_, 1024), "mdb_env_set_maxreaders");
  if (options.initial_map_size != 0) {
    check(mdb_env_set_mapsize(env->env_, options.initial_map_size), "mdb_env_set_mapsize");
  }
  int rc = mdb_env_open(env->env_, canonical.c_str(), MDB_NOTLS, 0644);
  if (rc != MDB_SUCCESS) {
    mdb_env_close(env->env_);
    env->env_ = nullptr;
    throw Error(rc, "opening database " + canonical.string() + ": " + mdb_strerror(rc));
  }
  env->clearStaleReaders();
  MDB_envinfo info;
  check(mdb_env_info(env->env_, &info), "mdb_env_info");
  env->map_size_ = info.me_mapsize;
  (*reg)[canonical.string()] = env;
  return env;
}

Env::~Env() {
  if (env_ != nullptr) mdb_env_close(env_);
}

Dbi Env::openDbi(const char* name, unsigned flags, bool create) {
  // An existing table opens in a read transaction, so opening a store never waits for (or
  // holds) the writer lock; only a missing one needs a write transaction to be created.
  std::lock_guard dbi_lock(dbi_mutex_);  // LMDB: one mdb_dbi_open at a time per environment
  for (bool creating : {false, true}) {
    if (creating && !create) break;
    enter();
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env_, nullptr, creating ? 0u : unsigned{MDB_RDONLY}, &txn);
    if (rc != MDB_SUCCESS) {
      leave();
      check(rc, "mdb_txn_begin");
    }
    MDB_dbi dbi = 0;
    rc = mdb_dbi_open(txn, name, flags | (creating ? unsigned{MDB_CREATE} : 0u), &dbi);
    if (rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      leave();
      if (rc == MDB_NOTFOUND && !creating) continue;
      check(rc, "mdb_dbi_open");
    }
    rc = mdb_txn_commit(txn);
    leave();
    check(rc, "mdb_txn_commit");
    return Dbi{dbi};
  }
  throw Error(MDB_NOTFOUND, std::string("table ") + name + " does not exist");
}

void Env::enter() {
  std::unique_lock lock(gate_mutex_);
  gate_cv_.wait(lock, [&] { return !growing_; });
  ++active_;
}

void Env::leave() {
  std::lock_guard lock(gate_mutex_);
  if (--active_ == 0) gate_cv_.notify_all();
}

int Env::clearStaleReaders() {
  int dead = 0;
  check(mdb_reader_check(env_, &dead), "mdb_reader_check");
  return dead;
}

void Env::grow(std::size_t seen_size) {
  // The pages a dead reader's snapshot pinned are free again once its slot is: the write may
  // fit without growing (write() runs it again; it grows next time if it still does not).
  if (clearStaleReaders() > 0) return;
  std::unique_lock lock(gate_mutex_);
  gate_cv_.wait(lock, [&] { return !growing_; });
  if (map_size_ != seen_size) return;  // another thread grew it meanwhile
  if (map_size_ >= kMaxMapSize) {
    throw Error(MDB_MAP_FULL, "database map reached its maximum size");
  }
  growing_ = true;
  gate_cv_.wait(lock, [&] { return active_ == 0; });
  std::size_t new_size = std::min(map_size_ * 2, kMaxMapSize);
  int rc = mdb_env_set_mapsize(env_, new_size);
  if (rc == MDB_SUCCESS) {
    MDB_envinfo info;
    rc = mdb_env_info(env_, &info);
    if (rc == MDB_SUCCESS) map_size_ = info.me_mapsize;
    ++growths_;
  }
  growing_ = false;
  gate_cv_.notify_all();
  check(rc, "mdb_env_set_mapsize");
}

std::size_t Env::mapSize() const {
  std::lock_guard lock(gate_mutex_);
  return map_size_;
}

std::uint64_t Env::growths() const {
  std::lock_guard lock(gate_mutex_);
  return growths_;
}

ReadTxn Env::beginRead() {
  for (;;) {
    enter();
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
    if (rc == MDB_SUCCESS) return ReadTxn(this, txn);
    leave();
    if (rc != MDB_MAP_RESIZED) check(rc, "mdb_txn_begin(read)");
    adoptResize();
  }
}

WriteTxn Env::beginWrite() {
  for (;;) {
    enter();
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
    if (rc == MDB_SUCCESS) return WriteTxn(this, txn);
    leave();
    if (rc != MDB_MAP_RESIZED) check(rc, "mdb_txn_begin(write)");
    adoptResize();
  }
}

// Another process grew the map: adopt its size (needs no active transaction here).
void Env::adoptResize() {
  std::unique_lock lock(gate_mutex_);
  gate_cv_.wait(lock, [&] { return !growing_; });
  growing_ = true;
  gate_cv_.wait(lock, [&] { return active_ == 0; });
  int rc = mdb_env_set_mapsize(env_, 0);
  MDB_envinfo info;
  if (rc == MDB_SUCCESS && mdb_env_info(env_, &info) == MDB_SUCCESS) map_size_ = info.me_mapsize;
  growing_ = false;
  gate_cv_.notify_all();
  check(rc, "mdb_env_set_mapsize");
}

}  // namespace narcache::narstore::lmdb
