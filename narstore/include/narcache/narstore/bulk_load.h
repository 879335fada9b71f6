#pragma once
// Trusted bulk loading: commits many narinfos per LMDB write transaction WITHOUT reading or
// checking their nar files (invariant 2 is the caller's promise; `narcache verify` reports
// files that are missing). The closure invariant is still checked: references must be valid
// items or come earlier in `infos`. For benchmarks (bench/gc_bench.cc fills a store with a
// million items this way) and tests; never reachable from the network.
// Each info needs URL "nar/<file name>", FileHash and FileSize. `created` = 0: now.
// Errors: InvalidArgument (not an LMDB store, incomplete info), Conflict (missing references).

#include <cstdint>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/narinfo.h"
#include "narcache/narstore/store.h"

namespace narcache::narstore {

Result<std::uint64_t> addTrustedNarInfos(Store& store, const std::vector<NarInfo>& infos,
                                         std::int64_t created = 0);

// The benchmark baseline of the GC scan: walks every (item, reference) entry of the refs table
// in one read transaction with one cursor, touching each key and value, and returns the count.
Result<std::uint64_t> scanReferencesTable(const Store& store);

}  // namespace narcache::narstore
