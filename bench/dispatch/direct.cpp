// The direct call the dispatch benchmark compares with: cpu<xsimd::avx512bw>,
// compiled with exactly the flags of the AVX-512 dispatch unit and in a
// namespace of its own, so the two runs differ only in the dispatch front.
#define ATTNKIT_ARCH_NAMESPACE bench_direct_avx512
#include "attnkit/attention/flash_cpu.hpp"
#include "dispatch/direct_decode.hpp"

namespace attnkit_bench_dispatch {
namespace {

struct views {
  attnkit::tensor_view<const float, 4> q;           // (1, hq, 1, d)
  attnkit::tensor_view<const attnkit::half, 4> k;   // (1, hkv, skv, d)
  attnkit::tensor_view<const attnkit::half, 4> v;   // (1, hkv, skv, d)
  attnkit::tensor_view<float, 4> o;                 // (1, hq, 1, d)
};

views make_views(const decode_buffers& b) {
  const auto* k = static_cast<const attnkit::half*>(b.k);
  const auto* v = static_cast<const attnkit::half*>(b.v);
  return {attnkit::make_bhsd(b.q, 1, b.hq, 1, b.d), attnkit::make_bhsd(k, 1, b.hkv, b.skv, b.d),
          attnkit::make_bhsd(v, 1, b.hkv, b.skv, b.d), attnkit::make_bhsd(b.o, 1, b.hq, 1, b.d)};
}

}  // namespace

void direct_decode(const decode_buffers& b) {
  const views w = make_views(b);
  const attnkit::cpu<xsimd::avx512bw> backend{attnkit::default_executor(), {b.scratch, b.scratch_bytes}};
  attnkit::flash_attention(w.q, w.k, w.v, w.o, {}, {}, backend);
}

std::size_t direct_decode_workspace(const decode_buffers& b) {
  const views w = make_views(b);
  return attnkit::flash_attention_workspace_size(w.q, w.k, w.v, attnkit::cpu<xsimd::avx512bw>{});
}

}  // namespace attnkit_bench_dispatch
