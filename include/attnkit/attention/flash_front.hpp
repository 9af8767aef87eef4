// The positional fronts of flash_attention and its workspace query, for every
// backend: flash_attention(q, k, v, o, params, lse, kw, backend) fills an
// attention_args and calls flash_attention(args, backend), which each backend
// defines (flash.hpp: reference, flash_cpu.hpp: cpu<Arch>, cpu_dispatch.hpp).
#pragma once

#include <cstddef>
#include <type_traits>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/key_weights_arg.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// flash_attention(q, k, v, o, params, lse, kw, backend): the positional front
/// of flash_attention(attention_args, backend). k and v are strided views
/// (b, hkv, skv, d) or paged_kv (sequence b attends to its own k.length(b) keys,
/// and bottom-right masks align to that length). Optional: lse (b, hq, sq),
/// natural log; key_weights (key_weights.hpp) from this same call.
template <class TQ, class KS, class VS, class TO, class Backend,
          class = std::enable_if_t<is_backend_v<Backend>>>
void flash_attention(tensor_view<TQ, 4> q,  // (b, hq, sq, d)
                     const KS& k,           // (b, hkv, skv, d) or paged
                     const VS& v,           // (b, hkv, skv, dv) or paged
                     tensor_view<TO, 4> o,  // (b, hq, sq, dv)
                     const attention_params& params, tensor_view<float, 3> lse, const key_weights& kw,
                     const Backend& backend) {
  auto args = make_attention_args(q, k, v, o);
  args.params = params;
  args.lse = lse;
  args.kw = kw;
  flash_attention(args, backend);
}

template <class TQ, class KS, class VS, class TO, class Backend,
          class = std::enable_if_t<is_backend_v<Backend>>>
void flash_attention(tensor_view<TQ, 4> q, const KS& k, const VS& v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const Backend& backend) {
  flash_attention(q, k, v, o, params, lse, key_weights{}, backend);
}

/// Scratch bytes of flash_attention(q, k, v, o, params, lse, kw, backend): the
/// positional front of flash_attention_workspace_size(attention_args, backend).
/// Pass the same lse and kw as the call (o is not needed).
template <class TQ, class KS, class VS, class Backend, class = std::enable_if_t<is_backend_v<Backend>>>
std::size_t flash_attention_workspace_size(tensor_view<TQ, 4> q, const KS& k, const VS& v, const Backend& backend,
                                           tensor_view<float, 3> lse = {}, const key_weights& kw = {}) {
  auto args = make_attention_args(q, k, v, tensor_view<std::remove_const_t<TQ>, 4>{});
  args.lse = lse;
  args.kw = kw;
  return flash_attention_workspace_size(args, backend);
}

ATTNKIT_END_NAMESPACE
