// Run-time arch choice for flash_attention: a binary built for a baseline CPU
// runs the AVX-512 kernels where the CPU has them, AVX2+FMA otherwise.
//
// The kernels stay in the headers; the CMake helper attnkit_add_cpu_dispatch()
// (cmake/attnkit_dispatch.cmake) adds to a target one small translation unit
// per arch, compiled with that arch's flags, which instantiates them. This
// header is the front: it validates the call (xsimd's dispatcher is noexcept,
// so errors are raised before it) and lets xsimd::dispatch pick the arch.
//
// Dispatched element types: q, k, v, o all f32, all f16 or all bf16, or f32 q
// and o over f16 or bf16 K/V.
#pragma once

#include <cstddef>
#include <type_traits>

#include "attnkit/attention/params.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/workspace.hpp"

namespace attnkit {

/// The archs dispatched to, best first.
using dispatch_archs = xsimd::arch_list<xsimd::avx512bw, xsimd::fma3<xsimd::avx2>>;

/// Backend tag: the best of dispatch_archs this CPU has, chosen at run time.
struct cpu_dispatch {
  executor exec = default_executor();
  workspace scratch = {};
};

namespace detail {

/// The per-arch kernels; their bodies are instantiated by the per-arch translation units.
struct flash_dispatch_run {
  template <class Arch, class TQ, class TK, class TV, class TO>
  void operator()(Arch, tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k, tensor_view<const TV, 4> v,
                  tensor_view<TO, 4> o, const attention_params* params, tensor_view<float, 3> lse,
                  const executor* exec, workspace scratch) const;
};
struct flash_dispatch_size {
  template <class Arch, class TQ, class TK, class TV>
  std::size_t operator()(Arch, tensor_view<const TQ, 4> q, tensor_view<const TK, 4> k, tensor_view<const TV, 4> v,
                         const executor* exec) const;
};
struct arch_name {
  template <class Arch>
  const char* operator()(Arch) const {
    return Arch::name();
  }
};

inline void check_dispatchable(const char* fn) {
  ATTNKIT_CHECK(xsimd::fma3<xsimd::avx2>::available(), fn, ": cpu_dispatch needs at least AVX2 and FMA on this CPU");
}

template <class T, std::size_t R>
tensor_view<const std::remove_const_t<T>, R> as_const(tensor_view<T, R> v) {
  return v;
}

}  // namespace detail

/// The name of the arch cpu_dispatch runs on this CPU ("avx512bw", "fma3<avx2>").
inline const char* cpu_dispatch_arch() {
  detail::check_dispatchable("cpu_dispatch_arch");
  return xsimd::dispatch<dispatch_archs>(detail::arch_name{})();
}

/// flash_attention on the best arch this CPU has; same shapes and contract as cpu<Arch>.
template <class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const cpu_dispatch& backend) {
  constexpr const char* fn = "flash_attention";
  detail::check_dispatchable(fn);
  detail::check_attention_call(fn, q, k, v, o, params, lse);
  if (backend.scratch.data != nullptr || backend.scratch.bytes != 0) {
    const std::size_t needed = xsimd::dispatch<dispatch_archs>(detail::flash_dispatch_size{})(
        detail::as_const(q), detail::as_const(k), detail::as_const(v), &backend.exec);
    ATTNKIT_CHECK(backend.scratch.data != nullptr && backend.scratch.bytes >= needed, fn,
                  ": workspace.bytes must be >= ", needed, " (the kernel's workspace_size), got ",
                  backend.scratch.bytes);
  }
  xsimd::dispatch<dispatch_archs>(detail::flash_dispatch_run{})(detail::as_const(q), detail::as_const(k),
                                                                detail::as_const(v), o, &params, lse, &backend.exec,
                                                                backend.scratch);
}

/// Scratch bytes of flash_attention(q, k, v, o, params, lse, backend) on the arch chosen here.
template <class TQ, class TK, class TV>
std::size_t flash_attention_workspace_size(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                                           const cpu_dispatch& backend) {
  detail::check_dispatchable("flash_attention_workspace_size");
  return xsimd::dispatch<dispatch_archs>(detail::flash_dispatch_size{})(detail::as_const(q), detail::as_const(k),
                                                                        detail::as_const(v), &backend.exec);
}

}  // namespace attnkit
