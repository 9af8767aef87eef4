// The body of one arch's dispatch translation unit. attnkit_add_cpu_dispatch()
// generates each such unit as
//   #define ATTNKIT_ARCH_NAMESPACE dispatch_avx2      // before any attnkit header
//   #include <attnkit/cpu_dispatch_arch.hpp>
//   ATTNKIT_CPU_DISPATCH_INSTANTIATE(avx2)
// compiled with that arch's flags only. It defines dispatch_abi::run for the
// arch and instantiates it for every entry of dispatch_abi::dispatched_ops.
// Nothing else includes this header.
#pragma once

#include <cstddef>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

#include "attnkit/attention/flash_cpu.hpp"
#include "attnkit/attention/linear/based.hpp"
#include "attnkit/attention/linear/linear_cpu.hpp"
#include "attnkit/attention/linear/varlen.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/cpu_dispatch.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail::dispatch {

template <dispatch_abi::isa I>
struct isa_arch;
template <>
struct isa_arch<dispatch_abi::isa::avx2> {
  using type = xsimd::fma3<xsimd::avx2>;
};
template <>
struct isa_arch<dispatch_abi::isa::avx512> {
  using type = xsimd::avx512bw;
};
template <>
struct isa_arch<dispatch_abi::isa::avx512bf16> {
  using type = avx512bf16;
};

/// The element type of each dispatch_abi::dtype, in the enum's order.
using dispatch_elements = std::tuple<float, half, bfloat16, std::int8_t, fp8_e4m3, fp8_e5m2>;
template <dispatch_abi::dtype D>
using element_t = std::tuple_element_t<static_cast<std::size_t>(D), dispatch_elements>;

/// The caller's argument struct, as this side's type of the same definition.
template <class Args>
Args read_args(const void* bytes) {
  static_assert(std::is_trivially_copyable_v<Args>);
  Args a;
  std::memcpy(static_cast<void*>(&a), bytes, sizeof a);
  return a;
}

/// The caller's executor on this side: serial and OpenMP ones are made anew (the
/// same team size, the same OpenMP runtime), so the kernel runs exactly as a
/// direct cpu<Arch> call would; a custom one gets every parallel loop handed
/// back to the caller's parallel_for.
inline executor caller_executor(const dispatch_abi::call& c) {
  if (c.exec_kind == static_cast<int>(executor::kind::serial)) return executor::serial();
#if defined(_OPENMP)
  if (c.exec_kind == static_cast<int>(executor::kind::openmp)) return executor::openmp(c.concurrency);
#endif
  using task_fn = std::function<void(std::int64_t)>;
  return executor::custom(c.concurrency, [&c](std::int64_t n, const task_fn& task) {
    c.parallel_for(c.exec, n, [](const void* t, std::int64_t i) { (*static_cast<const task_fn*>(t))(i); }, &task);
  });
}

/// flash_args of an element-type pack (an alias template takes no pack).
template <class... E>
struct flash_args_for;
template <class TQ, class TKV, class TO>
struct flash_args_for<TQ, TKV, TO> {
  using type = flash_args<TQ, TKV, TO>;
};

/// The table's bodies: op Op for element types D..., on cpu<Arch>.
template <class Arch, dispatch_abi::op Op, dispatch_abi::dtype... D>
std::size_t run_op(const dispatch_abi::call& c, dispatch_abi::types<D...>) {
  using dispatch_abi::op;
  const cpu<Arch> be{caller_executor(c), workspace{c.scratch, c.scratch_bytes}};
  if constexpr (Op == op::flash) {
    flash_attention(read_args<typename flash_args_for<element_t<D>...>::type>(c.args), be);
  } else if constexpr (Op == op::flash_workspace) {
    return flash_attention_workspace_size(read_args<typename flash_args_for<element_t<D>...>::type>(c.args), be);
  } else if constexpr (Op == op::flash_bound) {
    return flash_attention_workspace_bound(read_args<attention_limits>(c.args), be);
  } else if constexpr (Op == op::key_weights) {
    const auto a = read_args<key_weights_args<element_t<D>...>>(c.args);
    attention_key_weights(a.q, a.k, a.params, a.lse, a.kw, be);
  } else if constexpr (Op == op::linear) {
    const auto a = read_args<linear_args<element_t<D>...>>(c.args);
    linear_attention(a.q, a.k, a.v, a.o, a.decay, a.state, a.params, be);
  } else if constexpr (Op == op::linear_varlen) {
    const auto a = read_args<linear_args<element_t<D>...>>(c.args);
    linear_attention_varlen(a.q, a.k, a.v, a.o, a.cu_seqlens, a.decay, a.state, a.params, be);
  } else if constexpr (Op == op::linear_workspace) {
    const auto a = read_args<linear_size_args>(c.args);
    return linear_attention_workspace_size(a.dk, a.dv, a.params, be);
  } else if constexpr (Op == op::based) {
    const auto a = read_args<linear_args<element_t<D>...>>(c.args);
    based_attention(a.q, a.k, a.v, a.o, a.state, a.based, be);
  } else {
    static_assert(Op == op::based_workspace, "every op of dispatched_ops has a body here");
    const auto a = read_args<linear_size_args>(c.args);
    return based_attention_workspace_size(a.dk, a.dv, a.based, be);
  }
  return 0;
}

}  // namespace detail::dispatch
ATTNKIT_END_NAMESPACE

namespace attnkit::dispatch_abi {

template <isa I, op Op, class Types>
std::size_t run(const call& c) {
  using Arch = typename detail::dispatch::isa_arch<I>::type;
  static_assert(Arch::supported(), "this dispatch translation unit is not compiled with its arch's flags");
#if defined(ATTNKIT_NO_EXCEPTIONS)
  return detail::dispatch::run_op<Arch, Op>(c, Types{});
#else
  try {
    return detail::dispatch::run_op<Arch, Op>(c, Types{});
  } catch (const error& e) {  // this arch's error type: re-raised as the caller's
    c.raise(e.what());
  }
  return 0;
#endif
}

/// Takes the address of run<I, Op, T> for every T of one entry: that instantiates them.
template <isa I, op Op, class... Types>
constexpr auto entry_points(entry<Op, type_list<Types...>>) {
  return std::make_tuple(&run<I, Op, Types>...);
}

/// Instantiates run<I, ...> for every entry of the list.
template <isa I, class... Entries>
const void* instantiate(type_list<Entries...>) {
  static const auto points = std::make_tuple(entry_points<I>(Entries{})...);
  return &points;
}

}  // namespace attnkit::dispatch_abi

/// ATTNKIT_CPU_DISPATCH_INSTANTIATE(avx2 | avx512 | avx512bf16): the dispatch table's entry points for one arch.
#define ATTNKIT_CPU_DISPATCH_INSTANTIATE(ISA)                                                              \
  template const void* attnkit::dispatch_abi::instantiate<attnkit::dispatch_abi::isa::ISA>(               \
      attnkit::dispatch_abi::dispatched_ops);
