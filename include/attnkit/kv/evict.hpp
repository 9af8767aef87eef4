// evict: one eviction step of a policy over a cache.
//
// Every policy (kv/policy/) has the same shape:
//   wants_weights            whether observe needs the call's key weights
//   observe(index, w, rows)  takes the key weights (hkv, >= longest head) of an
//                            attention call with `rows` query rows
//   select(index)            the keep_set to apply now, or nullopt
//   retain(keep)             follows the compaction with its own per-row state
// A policy never calls a kernel; the caller runs attention (with key weights
// when the policy wants them), then observe, then evict.
#pragma once

#include "attnkit/core/config.hpp"
#include "attnkit/kv/cache.hpp"
#include "attnkit/kv/pool.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// Asks the policy what to keep and, if it evicts anything, compacts the cache
/// and the policy's state alike. Returns whether the cache changed.
template <class T, class Policy>
bool evict(kv_cache<T>& cache, Policy& policy) {
  const auto keep = policy.select(cache.index());
  if (!keep) return false;
  cache.compact(*keep);
  policy.retain(*keep);
  return true;
}

/// The same step for sequence s at `layer` of a pool: whole pages go back to the pool.
template <class T, class Policy>
bool evict(kv_pool<T>& pool, typename kv_pool<T>::sequence_id s, std::int64_t layer, Policy& policy) {
  const auto keep = policy.select(pool.index(s, layer));
  if (!keep) return false;
  pool.compact(s, layer, *keep);
  policy.retain(*keep);
  return true;
}

ATTNKIT_END_NAMESPACE
