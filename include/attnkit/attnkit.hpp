// attnkit: attention and KV-cache kernels. This header includes the public surface.
#pragma once

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/softmax_state.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/workspace.hpp"

#include "attnkit/backend/tags.hpp"

#include "attnkit/attention/dense.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/linear/based.hpp"
#include "attnkit/attention/linear/feature_maps.hpp"
#include "attnkit/attention/linear/gla.hpp"
#include "attnkit/attention/linear/lightning.hpp"
#include "attnkit/attention/linear/linear.hpp"
#include "attnkit/attention/linear/varlen.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/paged.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/sparse/hip.hpp"
#include "attnkit/attention/sparse/landmark.hpp"
#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/attention/sparse/quest.hpp"
#include "attnkit/attention/sparse/routing.hpp"
#include "attnkit/attention/variant.hpp"

#include "attnkit/kv/cache.hpp"
#include "attnkit/kv/evict.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/policy/a2sf.hpp"
#include "attnkit/kv/policy/duo.hpp"
#include "attnkit/kv/policy/h2o.hpp"
#include "attnkit/kv/policy/snapkv.hpp"
#include "attnkit/kv/policy/streaming.hpp"
#include "attnkit/kv/policy/tova.hpp"
#include "attnkit/kv/rope.hpp"
#include "attnkit/kv/scores.hpp"
#include "attnkit/kv/token_index.hpp"

// Composes the two wings: flash_attention over a kv_cache.
#include "attnkit/cached_attention.hpp"

// Run-time arch dispatch (attnkit/cpu_dispatch.hpp) is included on its own: a
// program that calls it links the per-arch translation units that
// attnkit_add_cpu_dispatch() adds.
