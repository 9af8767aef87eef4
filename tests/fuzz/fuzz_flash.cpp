// flash_attention over contiguous K/V, cpu against reference: shapes, layouts,
// GQA, masks, score modifiers, sinks, lse, key weights, the workspace query, a
// lent workspace of exactly that size, and hostile views (fuzz_support.hpp).
#include "fuzz_support.hpp"

using namespace attnkit;
using namespace attnkit::fuzz;

namespace {

attention_params pick_params(FuzzedDataProvider& in, std::int64_t hq, std::vector<float>& per_head) {
  attention_params p;
  p.causal = in.ConsumeBool();
  if (in.ConsumeBool()) p.window_left = in.ConsumeIntegralInRange<std::int64_t>(0, 40);
  if (in.ConsumeBool()) p.window_right = in.ConsumeIntegralInRange<std::int64_t>(0, 40);
  if (in.ConsumeBool()) p.sinks = in.ConsumeIntegralInRange<std::int64_t>(0, 6);
  if (in.ConsumeBool()) p.scale = in.ConsumeFloatingPointInRange<float>(0.01f, 4.0f);
  if (in.ConsumeBool()) p.softcap = in.ConsumeFloatingPointInRange<float>(0.5f, 50.0f);
  per_head.resize(static_cast<std::size_t>(2 * std::max<std::int64_t>(hq, 0)));
  for (float& x : per_head) x = in.ConsumeFloatingPointInRange<float>(-1.0f, 1.0f);
  if (in.ConsumeIntegralInRange<int>(0, 20) == 0 && !per_head.empty()) per_head[0] = std::nanf("");  // must be rejected
  if (in.ConsumeBool()) p.alibi_slopes = tensor_view<const float, 1>(per_head.data(), {hq});
  if (in.ConsumeBool()) p.sink_logits = tensor_view<const float, 1>(per_head.data() + hq, {hq});
  if (in.ConsumeIntegralInRange<int>(0, 30) == 0) p.sinks = in.ConsumeIntegralInRange<std::int64_t>(-3, 200);
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  begin_input();
  const std::int64_t b = small(in, 2), hkv = 1 + small(in, 2), group = 1 + small(in, 4);
  const std::int64_t hq = hkv * group, sq = small(in, 40), skv = small(in, 300);
  const std::int64_t d = 1 + small(in, 40), dv = 1 + small(in, 40);
  const bool poison = in.ConsumeBool();
  fuzz_view<4> q(in, {b, hq, sq, d}, true, false, true);
  fuzz_view<4> k(in, {b, hkv, skv, d}, true, poison, true);
  fuzz_view<4> v(in, {b, hkv, skv, dv}, true, poison, true);
  fuzz_view<4> o(in, {b, hq, sq, dv}, false, false, true);
  fuzz_view<3> lse;
  if (in.ConsumeBool()) lse = fuzz_view<3>(in, {b, hq, sq}, false, false, true);
  fuzz_view<3> kw_out;
  std::vector<float> row_weights;
  key_weights kw;
  if (in.ConsumeBool()) {
    kw_out = fuzz_view<3>(in, {b, in.ConsumeBool() ? hq : hkv, skv}, false, false, true);
    kw.out = kw_out.view;
    if (in.ConsumeBool()) {
      row_weights.resize(static_cast<std::size_t>(sq));
      for (float& w : row_weights) w = in.ConsumeFloatingPointInRange<float>(0.0f, 2.0f);
      kw.row_weights = tensor_view<const float, 1>(row_weights.data(), {sq});
    }
  }
  std::vector<float> per_head;
  const attention_params params = pick_params(in, hq, per_head);
  const executor exec = pick_executor(in);

  fuzz_view<4> ref_o = fresh_output_like(o);
  fuzz_view<3> ref_lse = fresh_output_like(lse), ref_kw_out = fresh_output_like(kw_out);
  key_weights ref_kw = kw;
  ref_kw.out = ref_kw_out.view;

  if (std::getenv("ATTNKIT_FUZZ_VERBOSE"))
    std::fprintf(stderr, "b %ld hq %ld hkv %ld sq %ld skv %ld d %ld dv %ld; q %s k %s v %s o %s lse %s kw %s\n", long(b),
                 long(hq), long(hkv), long(sq), long(skv), long(d), long(dv), describe(q).c_str(), describe(k).c_str(),
                 describe(v).c_str(), describe(o).c_str(), describe(lse).c_str(), describe(kw_out).c_str());
  const bool cpu_ok = accepted([&] {
    flash_attention(q.in(), k.in(), v.in(), o.view, params, lse.view, kw, cpu_native{exec});
  });
  const bool ref_ok = accepted([&] {
    flash_attention(q.in(), k.in(), v.in(), ref_o.view, params, ref_lse.view, ref_kw, reference{});
  });
  if (cpu_ok != ref_ok) fail("cpu and reference disagree on accepting a call");
  if (!cpu_ok) {
    for (bool clean : {o.untouched(), lse.untouched(), kw_out.untouched(), ref_o.untouched(), ref_lse.untouched(),
                       ref_kw_out.untouched()})
      if (!clean) fail("a rejected call wrote its output");
    return 0;
  }
  const auto key_bad = [&](std::int64_t i, std::int64_t h, std::int64_t j) {
    return row_bad(k.view, i, h, j) || row_bad(v.view, i, h, j);
  };
  expect_rows_close(o.view, ref_o.view, lse.view, ref_lse.view, params, hkv, [&](std::int64_t) { return skv; },
                    key_bad);
  if (!poison) expect_close(kw_out.view, ref_kw_out.view, "key weights");

  // The workspace query accepts what the call accepted, and its size suffices.
  const cpu_native probe{exec};
  std::size_t bytes = 0;
  if (!accepted([&] { bytes = flash_attention_workspace_size(q.in(), k.in(), v.in(), probe, lse.view, kw); }))
    fail("the workspace query rejected an accepted call");
  std::vector<std::byte> ws(bytes);
  fuzz_view<4> lent_o = fresh_output_like(o);
  if (!accepted([&] {
        flash_attention(q.in(), k.in(), v.in(), lent_o.view, params, lse.view, kw,
                        cpu_native{exec, workspace{ws.data(), ws.size()}});
      }))
    fail("the call rejected the workspace its query sized");
  expect_close(lent_o.view, o.view, "o with a lent workspace");
  return 0;
}
