// cpu_dispatch: one binary that runs the best cpu<Arch> kernels of whatever
// x86-64 CPU it lands on.
//
// attnkit_add_cpu_dispatch(target) (cmake/attnkit_dispatch.cmake) adds to a
// target one translation unit per arch (AVX-512BW + AVX512_BF16; AVX-512BW;
// AVX2 + FMA + F16C), each
// compiled with that arch's flags and nothing wider and each in its own
// ATTNKIT_ARCH_NAMESPACE (core/config.hpp), so no function compiled for one
// arch can be linked into another arch's path or into baseline code. This
// header is the front the rest of the program calls: it picks the best arch
// the CPU has (once per process; ATTNKIT_CPU_ARCH=avx2 or avx512 in the
// environment caps it), hands the call's arguments to that arch's entry point, and returns what
// it returns. The arch's kernel validates the call exactly as cpu<Arch> does;
// its attnkit::error reaches the caller as the caller's attnkit::error. A CPU
// below every compiled arch gets attnkit::error naming what it lacks, never SIGILL.
//
// One table serves every op: dispatch_abi::dispatched_ops lists each op with
// the element types it is compiled for. The arch translation units instantiate
// exactly that list (cpu_dispatch_arch.hpp); a call outside it fails to
// compile here, with a message naming the types that are dispatched.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/flash_front.hpp"
#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/linear/based.hpp"
#include "attnkit/attention/linear/linear_params.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/backend/cpu/cpu_features.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/tensor_view.hpp"

#if defined(ATTNKIT_NO_EXCEPTIONS)
#include <cstdio>
#endif

// The boundary between the front and the arch translation units. It sits
// outside the arch namespaces on purpose: both sides name these, and nothing
// here has a function body that could be compiled differently on each side.
namespace attnkit::dispatch_abi {

enum class isa : int { avx2, avx512, avx512bf16 };
enum class op : int {
  flash,
  flash_workspace,
  flash_bound,
  key_weights,
  linear,
  linear_varlen,
  linear_workspace,
  based,
  based_workspace,
};
enum class dtype : int { f32, f16, bf16, i8, e4m3, e5m2, other };  // order: dispatch_elements (cpu_dispatch_arch.hpp)

template <dtype... Ts>
struct types {};
template <class... Ts>
struct type_list {};
/// An op and the element-type tuples it is compiled for.
template <op Op, class Types>
struct entry {};

using attention_types =  // (q, k and v, o)
    type_list<types<dtype::f32, dtype::f32, dtype::f32>, types<dtype::f16, dtype::f16, dtype::f16>,
              types<dtype::bf16, dtype::bf16, dtype::bf16>, types<dtype::f32, dtype::f16, dtype::f32>,
              types<dtype::f32, dtype::bf16, dtype::f32>, types<dtype::f32, dtype::i8, dtype::f32>,
              types<dtype::f32, dtype::e4m3, dtype::f32>, types<dtype::f32, dtype::e5m2, dtype::f32>>;
using key_weight_types =  // (q, k)
    type_list<types<dtype::f32, dtype::f32>, types<dtype::f16, dtype::f16>, types<dtype::bf16, dtype::bf16>,
              types<dtype::f32, dtype::f16>, types<dtype::f32, dtype::bf16>>;
using linear_types =  // (q, k and v, o)
    type_list<types<dtype::f32, dtype::f32, dtype::f32>, types<dtype::f16, dtype::f16, dtype::f16>,
              types<dtype::bf16, dtype::bf16, dtype::bf16>, types<dtype::f16, dtype::f16, dtype::f32>,
              types<dtype::bf16, dtype::bf16, dtype::f32>>;
using untyped = type_list<types<>>;

/// The one list: every op cpu_dispatch runs, with the element types it runs it for.
using dispatched_ops =
    type_list<entry<op::flash, attention_types>, entry<op::flash_workspace, attention_types>,
              entry<op::flash_bound, untyped>,
              entry<op::key_weights, key_weight_types>, entry<op::linear, linear_types>,
              entry<op::linear_varlen, linear_types>, entry<op::linear_workspace, untyped>,
              entry<op::based, linear_types>, entry<op::based_workspace, untyped>>;

template <op Op, class Types, class Entry>
struct lists : std::false_type {};
template <op Op, class Types, class... Ts>
struct lists<Op, Types, entry<Op, type_list<Ts...>>> : std::bool_constant<(std::is_same_v<Types, Ts> || ...)> {};
template <op Op, class Types, class List = dispatched_ops>
struct listed;
template <op Op, class Types, class... Entries>
struct listed<Op, Types, type_list<Entries...>> : std::bool_constant<(lists<Op, Types, Entries>::value || ...)> {};
/// Whether dispatched_ops compiles op Op for the element types Types.
template <op Op, class Types>
inline constexpr bool is_dispatched = listed<Op, Types>::value;

/// One dispatched call. The caller's executor and error type stay on the
/// caller's side: the arch side reaches them through these function pointers.
struct call {
  const void* args;  // the op's argument struct (detail::dispatch), read through its bytes
  void* scratch;     // the caller's workspace, or null
  std::size_t scratch_bytes;
  int exec_kind;     // the caller's executor: executor::kind as an int
  int concurrency;   // of the caller's executor
  const void* exec;  // the caller's executor, run by parallel_for when it is custom
  void (*parallel_for)(const void* exec, std::int64_t n, void (*task)(const void* ctx, std::int64_t i),
                       const void* ctx);
  void (*raise)(const char* message);  // throws the caller's attnkit::error with this what(); never returns
};

/// The entry point of one (arch, op, element types); each arch's translation unit defines it.
template <isa I, op Op, class Types>
std::size_t run(const call& c);

}  // namespace attnkit::dispatch_abi

ATTNKIT_BEGIN_NAMESPACE
namespace detail::dispatch {

template <class T, class U = std::remove_const_t<T>>
inline constexpr dispatch_abi::dtype dtype_of = std::is_same_v<U, float>      ? dispatch_abi::dtype::f32
                                                : std::is_same_v<U, half>     ? dispatch_abi::dtype::f16
                                                : std::is_same_v<U, bfloat16> ? dispatch_abi::dtype::bf16
                                                : std::is_same_v<U, std::int8_t> ? dispatch_abi::dtype::i8
                                                : std::is_same_v<U, fp8_e4m3> ? dispatch_abi::dtype::e4m3
                                                : std::is_same_v<U, fp8_e5m2> ? dispatch_abi::dtype::e5m2
                                                                              : dispatch_abi::dtype::other;
template <class... Ts>
using types_of = dispatch_abi::types<dtype_of<Ts>...>;

// Argument structs, one per op family. Both sides compile these same
// definitions in their own namespace, so their layouts are identical; the arch
// side copies the caller's bytes into its own (cpu_dispatch_arch.hpp).
template <class T>
using view4 = tensor_view<T, 4>;

/// A flash call's arguments (attention_args.hpp) with read-only inputs.
template <class TQ, class TKV, class TO>
using flash_args = attention_args<const TQ, const TKV, const TKV, TO>;

template <class TQ, class TK>
struct key_weights_args {
  tensor_view<const TQ, 4> q;       // (b, hq, sq, d)
  tensor_view<const TK, 4> k;       // (b, hkv, skv, d)
  attention_params params;
  tensor_view<const float, 3> lse;  // (b, hq, sq)
  key_weights kw;
};

template <class TQ, class TKV, class TO>
struct linear_args {
  tensor_view<const TQ, 4> q;   // (b, h, t, K)
  tensor_view<const TKV, 4> k;  // (b, h, t, K)
  tensor_view<const TKV, 4> v;  // (b, h, t, V)
  tensor_view<TO, 4> o;         // (b, h, t, V)
  linear_decay decay;
  linear_state state;
  linear_params params;
  tensor_view<const std::int64_t, 1> cu_seqlens;  // (N + 1), varlen only
  based_params based;                             // based_attention only
};

/// The sizes a linear or BASED workspace query depends on.
struct linear_size_args {
  std::int64_t dk, dv;
  linear_params params;
  based_params based;
};

/// The arch this process runs, or why none: chosen once.
struct dispatch_choice {
  bool ok = false;
  dispatch_abi::isa isa = dispatch_abi::isa::avx2;
  std::string why;
};

inline dispatch_choice choose_isa() {
  const cpu_features f = detect_cpu_features();
  dispatch_choice c;
  if (!f.has_avx2_kernels()) {
    c.why = "cpu_dispatch needs a CPU with AVX2, FMA and F16C (the lowest arch this binary is built for); "
            "this CPU lacks " + f.missing_for_avx2_kernels();
    return c;
  }
  using dispatch_abi::isa;
  c.ok = true;
  c.isa = f.has_avx512bf16_kernels() ? isa::avx512bf16 : f.has_avx512_kernels() ? isa::avx512 : isa::avx2;
  if (const char* cap = std::getenv("ATTNKIT_CPU_ARCH")) {
    const std::string s = cap;
    if (s == "avx2") {
      c.isa = isa::avx2;
    } else if (s == "avx512") {
      c.isa = std::min(c.isa, isa::avx512);
    } else if (s != "avx512bf16" && !s.empty()) {
      c.ok = false;
      c.why = "the environment's ATTNKIT_CPU_ARCH must be avx2, avx512 or avx512bf16 (a cap on the arch), got '" +
              s + "'";
    }
  }
  return c;
}

inline const dispatch_choice& chosen_isa() {
  static const dispatch_choice choice = choose_isa();
  return choice;
}

inline void run_items(const void* exec, std::int64_t n, void (*task)(const void*, std::int64_t), const void* ctx) {
  static_cast<const executor*>(exec)->parallel_for(n, [&](std::int64_t i) { task(ctx, i); });
}

[[noreturn]] inline void raise_error(const char* message) {
#if defined(ATTNKIT_NO_EXCEPTIONS)
  std::fprintf(stderr, "%s\n", message);
  std::abort();
#else
  throw error(message);
#endif
}

/// Runs op Op for element types Types on the chosen arch.
template <dispatch_abi::op Op, class Types, class Args>
std::size_t dispatch(const char* fn, const Args& args, const cpu_dispatch& backend) {
  static_assert(std::is_trivially_copyable_v<Args>, "dispatched arguments cross as bytes");
  static_assert(dispatch_abi::is_dispatched<Op, Types>);  // each front names the types in its own message
  const dispatch_choice& choice = chosen_isa();
  ATTNKIT_CHECK(choice.ok, fn, ": ", choice.why);
  const dispatch_abi::call c{&args,
                             backend.scratch.data,
                             backend.scratch.bytes,
                             static_cast<int>(backend.exec.runs_on()),
                             backend.exec.concurrency(),
                             &backend.exec,
                             &run_items,
                             &raise_error};
  switch (choice.isa) {
    case dispatch_abi::isa::avx512bf16:
      return dispatch_abi::run<dispatch_abi::isa::avx512bf16, Op, Types>(c);
    case dispatch_abi::isa::avx512:
      return dispatch_abi::run<dispatch_abi::isa::avx512, Op, Types>(c);
    default:
      return dispatch_abi::run<dispatch_abi::isa::avx2, Op, Types>(c);
  }
}

template <class T, std::size_t R>
tensor_view<const std::remove_const_t<T>, R> as_const(const tensor_view<T, R>& v) {
  return v;
}
/// args with read-only q, k and v: the form the arch side compiles.
template <class TQ, class TK, class TV, class TO>
flash_args<std::remove_const_t<TQ>, std::remove_const_t<TK>, TO> as_const_args(const attention_args<TQ, TK, TV, TO>& a) {
  flash_args<std::remove_const_t<TQ>, std::remove_const_t<TK>, TO> c;
  c.q = a.q;
  c.k = a.k;
  c.v = a.v;
  c.o = a.o;
  c.params = a.params;
  c.lse = a.lse;
  c.kw = a.kw;
  c.cu_seqlens_q = a.cu_seqlens_q;
  c.q_pos = a.q_pos;
  c.k_pos = a.k_pos;
  c.mask = a.mask;
  c.sparse = a.sparse;
  return c;
}

template <class TQ, class TK, class TV, class TO>
inline constexpr bool attention_dispatched =
    std::is_same_v<std::remove_const_t<TK>, std::remove_const_t<TV>> &&
    dispatch_abi::is_dispatched<dispatch_abi::op::flash, types_of<TQ, TK, TO>>;
template <class TQ, class TK, class TV, class TO>
inline constexpr bool linear_dispatched =
    std::is_same_v<std::remove_const_t<TQ>, std::remove_const_t<TK>> &&
    std::is_same_v<std::remove_const_t<TK>, std::remove_const_t<TV>> &&
    dispatch_abi::is_dispatched<dispatch_abi::op::linear, types_of<TQ, TK, TO>>;

#define ATTNKIT_ATTENTION_DISPATCHED_(TQ, TK, TV, TO)                                                        \
  static_assert(detail::dispatch::attention_dispatched<TQ, TK, TV, TO>,                                      \
                "cpu_dispatch runs attention for (q, k = v, o) element types (f32, f32, f32), (f16, f16, f16), " \
                "(bf16, bf16, bf16), (f32, f16, f32), (f32, bf16, f32), (f32, int8, f32), (f32, e4m3, f32) and "  \
                "(f32, e5m2, f32); use cpu<Arch> for other mixes")
#define ATTNKIT_LINEAR_DISPATCHED_(TQ, TK, TV, TO)                                                         \
  static_assert(detail::dispatch::linear_dispatched<TQ, TK, TV, TO>,                                       \
                "cpu_dispatch runs linear attention for (q = k = v, o) element types (f32, f32), (f16, f16), " \
                "(bf16, bf16), (f16, f32) and (bf16, f32); use cpu<Arch> for other mixes")

}  // namespace detail::dispatch

/// The arch cpu_dispatch runs on this CPU: "avx512bf16" (AVX-512BW and
/// AVX512_BF16: bf16 prefill on the pair dot product), "avx512" or "avx2".
/// Throws attnkit::error, naming what is missing, on a CPU below all three.
inline const char* cpu_dispatch_arch() {
  const detail::dispatch::dispatch_choice& choice = detail::dispatch::chosen_isa();
  ATTNKIT_CHECK(choice.ok, "cpu_dispatch_arch: ", choice.why);
  using dispatch_abi::isa;
  return choice.isa == isa::avx512bf16 ? "avx512bf16" : choice.isa == isa::avx512 ? "avx512" : "avx2";
}

/// flash_attention on the best arch of this CPU; same contract as cpu<Arch> (flash_cpu.hpp).
template <class TQ, class TK, class TV, class TO>
void flash_attention(const attention_args<TQ, TK, TV, TO>& args, const cpu_dispatch& backend) {
  ATTNKIT_ATTENTION_DISPATCHED_(TQ, TK, TV, TO);
  using namespace detail::dispatch;
  dispatch<dispatch_abi::op::flash, types_of<TQ, TK, TO>>("flash_attention", as_const_args(args), backend);
}

/// attention_key_weights (the second pass on its own) on the best arch of this CPU.
template <class TQ, class TK>
void attention_key_weights(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, const attention_params& params,
                           tensor_view<const float, 3> lse, const key_weights& kw, const cpu_dispatch& backend) {
  using namespace detail::dispatch;
  static_assert(dispatch_abi::is_dispatched<dispatch_abi::op::key_weights, types_of<TQ, TK>>,
                "cpu_dispatch runs attention_key_weights for (q, k) element types (f32, f32), (f16, f16), "
                "(bf16, bf16), (f32, f16) and (f32, bf16)");
  const key_weights_args<std::remove_const_t<TQ>, std::remove_const_t<TK>> args{as_const(q), as_const(k), params,
                                                                              lse, kw};
  dispatch<dispatch_abi::op::key_weights, types_of<TQ, TK>>("attention_key_weights", args, backend);
}

/// Scratch bytes of flash_attention(args, backend) on the arch chosen here.
template <class TQ, class TK, class TV, class TO>
std::size_t flash_attention_workspace_size(const attention_args<TQ, TK, TV, TO>& args, const cpu_dispatch& backend) {
  ATTNKIT_ATTENTION_DISPATCHED_(TQ, TK, TV, TO);
  using namespace detail::dispatch;
  return dispatch<dispatch_abi::op::flash_workspace, types_of<TQ, TK, TO>>("flash_attention_workspace_size",
                                                                         as_const_args(args), backend);
}

/// Scratch bytes covering every flash_attention call within limits, on the arch chosen here.
template <class Backend>
std::enable_if_t<std::is_same_v<Backend, cpu_dispatch>, std::size_t> flash_attention_workspace_bound(
    const attention_limits& limits, const Backend& backend) {
  return detail::dispatch::dispatch<dispatch_abi::op::flash_bound, dispatch_abi::types<>>(
      "flash_attention_workspace_bound", limits, backend);
}

/// linear_attention on the best arch of this CPU (lightning_attention and
/// gla_attention reach it too); same contract as cpu<Arch> (linear_cpu.hpp).
template <class TQ, class TK, class TV, class TO>
void linear_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                      const linear_decay& decay, const linear_state& state, const linear_params& params,
                      const cpu_dispatch& backend) {
  ATTNKIT_LINEAR_DISPATCHED_(TQ, TK, TV, TO);
  using namespace detail::dispatch;
  const linear_args<std::remove_const_t<TQ>, std::remove_const_t<TK>, TO> args{
      as_const(q), as_const(k), as_const(v), o, decay, state, params, {}, {}};
  dispatch<dispatch_abi::op::linear, types_of<TQ, TK, TO>>("linear_attention", args, backend);
}

/// linear_attention_varlen (packed sequences) on the best arch of this CPU.
template <class TQ, class TK, class TV, class TO>
void linear_attention_varlen(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                             tensor_view<TO, 4> o, tensor_view<const std::int64_t, 1> cu_seqlens,
                             const linear_decay& decay, const linear_state& state, const linear_params& params,
                             const cpu_dispatch& backend) {
  ATTNKIT_LINEAR_DISPATCHED_(TQ, TK, TV, TO);
  using namespace detail::dispatch;
  const linear_args<std::remove_const_t<TQ>, std::remove_const_t<TK>, TO> args{
      as_const(q), as_const(k), as_const(v), o, decay, state, params, cu_seqlens, {}};
  dispatch<dispatch_abi::op::linear_varlen, types_of<TQ, TK, TO>>("linear_attention_varlen", args, backend);
}

/// based_attention on the best arch of this CPU.
template <class TQ, class TK, class TV, class TO>
void based_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const linear_state& state, const based_params& p, const cpu_dispatch& backend) {
  ATTNKIT_LINEAR_DISPATCHED_(TQ, TK, TV, TO);
  using namespace detail::dispatch;
  const linear_args<std::remove_const_t<TQ>, std::remove_const_t<TK>, TO> args{
      as_const(q), as_const(k), as_const(v), o, {}, state, {}, {}, p};
  dispatch<dispatch_abi::op::based, types_of<TQ, TK, TO>>("based_attention", args, backend);
}

// The two size queries below take no element types, so they are templates on
// the backend: only a caller instantiates them, never an arch translation unit.

/// Scratch bytes of linear_attention on the arch chosen here, for state sides dk x dv.
template <class Backend>
std::enable_if_t<std::is_same_v<Backend, cpu_dispatch>, std::size_t> linear_attention_workspace_size(
    std::int64_t dk, std::int64_t dv, const linear_params& params, const Backend& backend) {
  const detail::dispatch::linear_size_args args{dk, dv, params, {}};
  return detail::dispatch::dispatch<dispatch_abi::op::linear_workspace, dispatch_abi::types<>>(
      "linear_attention_workspace_size", args, backend);
}

/// Scratch bytes of based_attention on the arch chosen here, for head dim d and value dim dv.
template <class Backend>
std::enable_if_t<std::is_same_v<Backend, cpu_dispatch>, std::size_t> based_attention_workspace_size(
    std::int64_t d, std::int64_t dv, const based_params& params, const Backend& backend) {
  const detail::dispatch::linear_size_args args{d, dv, {}, params};
  return detail::dispatch::dispatch<dispatch_abi::op::based_workspace, dispatch_abi::types<>>(
      "based_attention_workspace_size", args, backend);
}

ATTNKIT_END_NAMESPACE
