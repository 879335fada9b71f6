#pragma once
// Dependency order of a set of store items: references first, as a binary cache must be
// written (a narinfo only after the narinfos of everything it references) and a store filled.

#include <cstddef>
#include <vector>

namespace narcache::narstore {

// Indexes 0..refs.size()-1 ordered so that every item comes after the items it references
// (refs[i]: indexes of the items i references; self-references and indexes out of range are
// ignored). A cycle, which valid store paths never form, is broken at an arbitrary edge instead
// of failing: the store's closure check refuses such items later anyway. Boost.Graph's
// depth-first search: the order is its finishing order.
std::vector<std::size_t> referencesFirst(const std::vector<std::vector<std::size_t>>& refs);

}  // namespace narcache::narstore
