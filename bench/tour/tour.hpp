// The tour's row type and the helpers every kernel family's rows use.
#pragma once

#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "attnkit/backend/tags.hpp"
#include "attnkit/core/dtype.hpp"
#include "support/machine.hpp"

namespace attnkit::tour {

/// What bounds a row: FMA throughput, bf16 pair-dot throughput (rows whose
/// products run on vdpbf16ps), or DRAM read bandwidth.
enum class bound { compute, bf16_dot, memory };

/// bound::bf16_dot where cpu_native runs bf16 prefill on pairs and the probe saw the instruction, else bound::compute.
inline bound bf16_compute_bound(const bench::machine_limits& m) {
  return has_bf16_dot<native_arch> && m.bf16_dot_gflops > 0 ? bound::bf16_dot : bound::compute;
}

/// The letter the table prints after a row's % peak, and the json's word.
inline char bound_letter(bound b) { return b == bound::compute ? 'F' : b == bound::bf16_dot ? 'D' : 'B'; }
inline const char* bound_name(bound b) { return b == bound::compute ? "compute" : b == bound::bf16_dot ? "bf16_dot" : "memory"; }

struct row {
  std::string kernel;  // e.g. "dense.prefill"
  std::string shape;
  std::string dtype;
  int threads = 1;
  double median_ms = 0;
  double gflops = 0;
  double gbps = 0;  // bytes of K and V read per second
  bound bounded_by = bound::compute;
  double peak_fraction = 0;  // of the FMA peak (compute), the bf16 dot peak, or the DRAM read bandwidth (memory)
  double rel_err = 0;        // ||out - fp64 reference|| / ||reference||
  double tolerance = 0;      // rel_err must stay within this (DESIGN §7)
};

struct environment {
  bool quick = false;                  // small shapes, for a smoke test
  bench::machine_limits one_thread;    // the machine measured on 1 thread
  bench::machine_limits all_threads;   // and on all of them

  const bench::machine_limits& limits(int threads) const {
    return threads == 1 ? one_thread : all_threads;
  }

  /// Fills the rate and peak columns of r from its time, FLOPs and bytes.
  void rate(row& r, double flops, double bytes) const {
    const auto& m = limits(r.threads);
    r.gflops = flops / (r.median_ms * 1e6);
    r.gbps = bytes / (r.median_ms * 1e6);
    r.peak_fraction = r.bounded_by == bound::compute    ? r.gflops / m.fma_gflops
                      : r.bounded_by == bound::bf16_dot ? r.gflops / m.bf16_dot_gflops
                                                        : r.gbps / m.read_gbps;
  }
};

/// A named row to run; families register theirs (dense_cases(), ...).
struct tour_case {
  std::string kernel;
  std::function<row(const environment&)> run;
};

/// "f32" when q, k, v and o share a type, else "q f32 kv f16 o f32".
template <class TQ, class TK, class TV, class TO>
std::string dtype_label() {
  static_assert(std::is_same_v<TK, TV>, "tour rows use one K/V type");
  if (std::is_same_v<TQ, TK> && std::is_same_v<TK, TO>) return dtype_name<TQ>();
  return std::string("q ") + dtype_name<TQ>() + " kv " + dtype_name<TK>() + " o " + dtype_name<TO>();
}

}  // namespace attnkit::tour
