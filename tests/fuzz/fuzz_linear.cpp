// linear_attention (every decay grain, states, normalize, chunk sizes up to
// huge), linear_attention_varlen and based_attention, cpu against reference,
// with hostile gates (-inf, far below the decay floor, positive, NaN) and views.
#include "fuzz_support.hpp"

using namespace attnkit;
using namespace attnkit::fuzz;

namespace {

float gate(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 40)) {
    case 0: return -std::numeric_limits<float>::infinity();
    case 1: return -1e9f;
    case 2: return -3.4e38f;
    case 3: return -90.0f;
    case 4: return in.ConsumeBool() ? 0.5f : std::nanf("");  // must be rejected
    default: return in.ConsumeFloatingPointInRange<float>(-3.0f, 0.0f);
  }
}

std::int64_t pick_chunk(FuzzedDataProvider& in) {
  static constexpr std::int64_t chunks[] = {1, 3, 16, 64, std::int64_t{1} << 40, INT64_MAX, 0, -5};
  return chunks[in.ConsumeIntegralInRange<std::size_t>(0, std::size(chunks) - 1)];
}

/// A state (s, z) the caller owns, and a copy for the second backend.
struct fuzz_state {
  std::vector<float> s, z;
  linear_state view;
  fuzz_state(FuzzedDataProvider& in, bool given, bool with_z, std::int64_t n, std::int64_t h, std::int64_t K,
             std::int64_t V) {
    if (!given) return;
    s.resize(static_cast<std::size_t>(n * h * K * V));
    for (float& x : s) x = value(in, false);
    view.s = tensor_view<float, 4>(s.empty() ? nullptr : s.data(), {n, h, K, V});
    if (!with_z) return;
    z.resize(static_cast<std::size_t>(n * h * K));
    for (float& x : z) x = std::abs(value(in, false));
    view.z = tensor_view<float, 3>(z.empty() ? nullptr : z.data(), {n, h, K});
  }
  fuzz_state(const fuzz_state& o) : s(o.s), z(o.z), view(o.view) {
    if (is_given(o.view.s)) view.s = tensor_view<float, 4>(s.empty() ? nullptr : s.data(), o.view.s.extents());
    if (is_given(o.view.z)) view.z = tensor_view<float, 3>(z.empty() ? nullptr : z.data(), o.view.z.extents());
  }
  static bool is_given(const tensor_view<float, 4>& v) { return detail::is_given(v); }
  static bool is_given(const tensor_view<float, 3>& v) { return detail::is_given(v); }
};

/// Runs one op on both backends and checks accept/reject, untouched outputs and values.
template <class Call>
void compare(fuzz_view<4>& o, const fuzz_state& state, const executor& exec, Call&& call) {
  fuzz_view<4> ref_o = fresh_output_like(o);
  fuzz_state cpu_state(state), ref_state(state);
  const bool cpu_ok = accepted([&] { call(o.view, cpu_state.view, cpu_native{exec}); });
  const bool ref_ok = accepted([&] { call(ref_o.view, ref_state.view, reference{}); });
  if (cpu_ok != ref_ok) fail("cpu and reference disagree on accepting a call");
  if (!cpu_ok) {
    if (!o.untouched() || !ref_o.untouched() || cpu_state.s != state.s || ref_state.s != state.s)
      fail("a rejected call wrote its output or state");
    return;
  }
  expect_close(o.view, ref_o.view, "o");
  if (!cpu_state.s.empty())
    expect_close(tensor_view<float, 1>(cpu_state.s.data(), {static_cast<std::int64_t>(cpu_state.s.size())}),
                 tensor_view<float, 1>(ref_state.s.data(), {static_cast<std::int64_t>(ref_state.s.size())}),
                 "state");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  begin_input();
  const int op = in.ConsumeIntegralInRange<int>(0, 2);  // linear, varlen, based
  const std::int64_t b = op == 1 ? 1 : small(in, 2), h = 1 + small(in, 2), t = small(in, 80);
  const std::int64_t K = small(in, op == 2 ? 6 : 24), V = small(in, 24);
  const bool normalize = in.ConsumeBool();
  const bool poison = in.ConsumeIntegralInRange<int>(0, 8) == 0;
  fuzz_view<4> q(in, {b, h, t, K}, true, poison, true), k(in, {b, h, t, K}, true, poison, true);
  fuzz_view<4> v(in, {b, h, t, V}, true, poison, true), o(in, {b, h, t, V}, false, false, true);
  if (normalize)  // positive q and k keep the normalizer away from 0
    for (auto* x : {&q, &k})
      for (float& e : x->storage) e = std::abs(e);

  if (std::getenv("ATTNKIT_FUZZ_VERBOSE"))
    std::fprintf(stderr, "op %d b %ld h %ld t %ld K %ld V %ld normalize %d poison %d\n", op, long(b), long(h), long(t),
                 long(K), long(V), int(normalize), int(poison));
  if (op == 2) {
    based_params p;
    p.chunk = pick_chunk(in);
    p.output = normalize ? based_output::normalized : based_output::numerator;
    const std::int64_t D = taylor_features(p.map, std::max<std::int64_t>(K, 0));
    const fuzz_state state(in, in.ConsumeBool(), normalize, b, h, D, V);
    compare(o, state, pick_executor(in), [&](auto out, const linear_state& st, auto backend) {
      based_attention(q.in(), k.in(), v.in(), out, st, p, backend);
    });
    return 0;
  }

  linear_params p;
  p.chunk = pick_chunk(in);
  p.normalize = normalize;
  if (in.ConsumeBool()) p.scale = in.ConsumeFloatingPointInRange<float>(0.1f, 2.0f);
  std::vector<float> g(static_cast<std::size_t>(b * h * t * std::max<std::int64_t>(K, 1)));
  for (float& x : g) x = gate(in);
  linear_decay decay;
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 1: decay.per_head = tensor_view<const float, 1>(g.data(), {h}); break;
    case 2: decay.per_token = tensor_view<const float, 3>(g.data(), {b, h, t}); break;
    case 3: decay.per_channel = tensor_view<const float, 4>(g.data(), {b, h, t, K}); break;
    default: break;
  }

  if (std::getenv("ATTNKIT_FUZZ_VERBOSE")) {
    std::fprintf(stderr, "chunk %ld decay %d%d%d gates", long(p.chunk), int(detail::is_given(decay.per_head)),
                 int(detail::is_given(decay.per_token)), int(detail::is_given(decay.per_channel)));
    for (std::size_t i = 0; i < std::min<std::size_t>(g.size(), 40); ++i) std::fprintf(stderr, " %g", g[i]);
    std::fprintf(stderr, "\n");
  }
  if (op == 0) {
    const fuzz_state state(in, in.ConsumeBool(), normalize, b, h, K, V);
    compare(o, state, pick_executor(in), [&](auto out, const linear_state& st, auto backend) {
      linear_attention(q.in(), k.in(), v.in(), out, decay, st, p, backend);
    });
    return 0;
  }
  // Packed sequences: cu_seqlens from the fuzzer, sometimes broken.
  std::vector<std::int64_t> cu{0};
  while (cu.back() < t && cu.size() < 8) cu.push_back(std::min(t, cu.back() + small(in, 30)));
  cu.back() = t;
  if (in.ConsumeBool()) cu.push_back(t);  // an empty last sequence
  if (in.ConsumeIntegralInRange<int>(0, 20) == 0) cu[in.ConsumeIntegralInRange<std::size_t>(0, cu.size() - 1)] = hostile_extent(in);
  const tensor_view<const std::int64_t, 1> cu_seqlens(cu.data(), {static_cast<std::int64_t>(cu.size())});
  const std::int64_t n = static_cast<std::int64_t>(cu.size()) - 1;
  const fuzz_state state(in, in.ConsumeBool(), normalize, n, h, K, V);
  compare(o, state, pick_executor(in), [&](auto out, const linear_state& st, auto backend) {
    linear_attention_varlen(q.in(), k.in(), v.in(), out, cu_seqlens, decay, st, p, backend);
  });
  return 0;
}
