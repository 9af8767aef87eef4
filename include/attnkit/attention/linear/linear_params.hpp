// The parameters, explicit state and call checks shared by every linear
// attention backend (linear.hpp has the algorithm).
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>

#include "attnkit/attention/linear/decay.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/workspace.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct linear_params {
  std::optional<float> scale;  ///< multiplies q·k; unset: 1/sqrt(K). Finite.
  bool normalize = false;      ///< divide by the decayed key sum (needs state.z when a state is given)
  float eps = 1e-6f;           ///< added to the normalizer, >= 0
  std::int64_t chunk = 64;     ///< chunkwise rows per chunk, >= 1; a call over t < chunk rows runs one chunk of t
};

/// Explicit recurrent state, fp32: read as the initial state, overwritten with
/// the final one. Empty: start from zero and keep nothing.
struct linear_state {
  tensor_view<float, 4> s;  ///< (b, h, K, V)
  tensor_view<float, 3> z;  ///< (b, h, K), with normalize
};

struct linear_shape {
  std::int64_t b, h, t, K, V;
  float scale;
};

namespace detail {

/// Scratch for one slot of plan.slot_floats() per task exec runs at once: its bytes,
/// and the slots taken from an arena (slot i at base + i * plan.slot_floats()).
template <class Plan>
std::size_t slot_bytes(const Plan& plan, const executor& exec) {
  return scratch_arena::bytes_for({plan.slot_floats() * static_cast<std::size_t>(exec.concurrency())});
}
template <class Plan>
float* take_slots(scratch_arena& arena, const Plan& plan, const executor& exec) {
  return arena.take(plan.slot_floats() * static_cast<std::size_t>(exec.concurrency()));
}

/// Checks a state against (b, h, K, V): s (b, h, K, V), and z (b, h, K) exactly when normalizing.
inline void check_linear_state(const char* fn, const linear_state& state, std::int64_t b, std::int64_t h,
                               std::int64_t K, std::int64_t V, bool normalize) {
  if (is_given(state.s)) {
    check_view(fn, "state.s", state.s, true);
    const std::int64_t want[] = {b, h, K, V};
    const char* dims[] = {"b", "h", "K", "V"};
    for (std::size_t r = 0; r < 4; ++r) check_extent(fn, "state.s", state.s, r, dims[r], want[r], "q and v's");
    ATTNKIT_CHECK(!normalize || is_given(state.z), fn, ": normalize with a state needs state.z (b, h, K)");
  }
  if (is_given(state.z)) {
    ATTNKIT_CHECK(normalize && is_given(state.s), fn, ": state.z is only used with normalize and state.s");
    check_view(fn, "state.z", state.z, true);
    const std::int64_t want[] = {b, h, K};
    const char* dims[] = {"b", "h", "K"};
    for (std::size_t r = 0; r < 3; ++r) check_extent(fn, "state.z", state.z, r, dims[r], want[r], "q's");
  }
}

/// scale finite, eps finite and >= 0, chunk >= 1 (a chunk longer than t runs as t).
inline void check_linear_params(const char* fn, const linear_params& p) {
  ATTNKIT_CHECK(!p.scale || std::isfinite(*p.scale), fn, ": params.scale must be finite");
  ATTNKIT_CHECK(p.eps >= 0.0f && std::isfinite(p.eps), fn, ": params.eps must be finite and >= 0, got ", p.eps);
  ATTNKIT_CHECK(p.chunk >= 1, fn, ": params.chunk must be >= 1, got ", p.chunk);
}

/// The checks of a workspace query: dims >= 0 and the params as a call checks them.
inline void check_linear_sizes(const char* fn, std::int64_t dk, std::int64_t dv, const linear_params& p) {
  ATTNKIT_CHECK(dk >= 0 && dv >= 0, fn, ": the key and value dims must be >= 0, got ", dk, " and ", dv);
  check_linear_params(fn, p);
}

template <class TQ, class TK, class TV, class TO>
linear_shape check_linear_call(const char* fn, const tensor_view<TQ, 4>& q, const tensor_view<TK, 4>& k,
                               const tensor_view<TV, 4>& v, const tensor_view<TO, 4>& o, const linear_decay& decay,
                               const linear_state& state, const linear_params& p,
                               const executor& exec = executor::serial()) {
  check_view(fn, "q", q, true);
  check_view(fn, "k", k, true);
  check_view(fn, "v", v, true);
  check_view(fn, "o", o, true);
  const linear_shape s{q.extent(0), q.extent(1), q.extent(2), q.extent(3), v.extent(3), 0.0f};
  for (std::size_t r = 0; r < 4; ++r)
    ATTNKIT_CHECK(k.extent(r) == q.extent(r), fn, ": k.extent(", r, ") must equal q.extent(", r, ") = ", q.extent(r),
                  ", got ", k.extent(r), " (q and k are (b, h, t, K))");
  for (std::size_t r = 0; r < 3; ++r) {
    check_extent(fn, "v", v, r, r == 0 ? "b" : r == 1 ? "h" : "t", q.extent(r), "q's");
    check_extent(fn, "o", o, r, r == 0 ? "b" : r == 1 ? "h" : "t", q.extent(r), "q's");
  }
  check_extent(fn, "o", o, 3, "V", s.V, "v.extent(3)");
  check_linear_params(fn, p);
  check_decay(fn, decay, s.b, s.h, s.t, s.K, exec);
  check_linear_state(fn, state, s.b, s.h, s.K, s.V, p.normalize);
  linear_shape out = s;
  out.scale = p.scale ? *p.scale : 1.0f / std::sqrt(static_cast<float>(s.K > 0 ? s.K : 1));
  return out;
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
