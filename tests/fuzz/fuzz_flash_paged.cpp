// flash_attention over paged K/V on cpu against the reference over each
// sequence's keys copied out contiguously: page sizes, shuffled tables, empty
// sequences, unused pool slots holding NaN, key weights, the workspace query,
// and hostile tables (ids out of the pool, bad indptr, null arrays).
#include "fuzz_support.hpp"

using namespace attnkit;
using namespace attnkit::fuzz;

namespace {

/// A pool and a table that the fuzzer shapes; a corrupt table stays in its arrays' memory.
struct fuzz_pages {
  std::int64_t b, hkv, page_size, d, dv, num_pages = 0;
  std::vector<std::int64_t> lengths;
  std::vector<std::int32_t> indptr{0}, indices, last;
  std::vector<float> k_pool, v_pool;

  fuzz_pages(FuzzedDataProvider& in, std::int64_t b_, std::int64_t hkv_, std::int64_t d_, std::int64_t dv_)
      : b(b_), hkv(hkv_), page_size(std::int64_t{1} << in.ConsumeIntegralInRange<int>(0, 4)), d(d_), dv(dv_) {
    for (std::int64_t i = 0; i < b; ++i) {
      const std::int64_t len = small(in, 70), pages = (len + page_size - 1) / page_size;
      lengths.push_back(len);
      indptr.push_back(static_cast<std::int32_t>(indptr.back() + pages));
      last.push_back(static_cast<std::int32_t>(pages ? len - (pages - 1) * page_size : 0));
    }
    num_pages = indptr.back() + small(in, 3);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(num_pages));
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(i);
    for (std::size_t i = ids.size(); i > 1; --i) std::swap(ids[i - 1], ids[in.ConsumeIntegralInRange<std::size_t>(0, i - 1)]);
    indices.assign(ids.begin(), ids.begin() + indptr.back());
    const bool poisoned = in.ConsumeBool();  // some K or V values are NaN or inf
    k_pool.assign(static_cast<std::size_t>(num_pages * hkv * page_size * d), std::nanf(""));
    v_pool.assign(static_cast<std::size_t>(num_pages * hkv * page_size * dv), std::nanf(""));
    for (std::int64_t i = 0; i < b; ++i)
      for (std::int64_t h = 0; h < hkv; ++h)
        for (std::int64_t j = 0; j < lengths[i]; ++j) {
          for (std::int64_t x = 0; x < d; ++x) *row(k_pool, d, i, h, j, x) = value(in, poisoned);
          for (std::int64_t x = 0; x < dv; ++x) *row(v_pool, dv, i, h, j, x) = value(in, poisoned);
        }
    if (corruptions() == 0 && in.ConsumeIntegralInRange<int>(0, 20) == 0) corrupt(in);
  }

  float* row(std::vector<float>& pool, std::int64_t width, std::int64_t i, std::int64_t h, std::int64_t j,
             std::int64_t x) const {
    const std::int64_t page = indices[static_cast<std::size_t>(indptr[i] + j / page_size)];
    return pool.data() + ((page * hkv + h) * page_size + j % page_size) * width + x;
  }

  void corrupt(FuzzedDataProvider& in) {
    ++corruptions();
    const std::int32_t bad[] = {-1, static_cast<std::int32_t>(num_pages), INT32_MAX, INT32_MIN, 0};
    const std::int32_t x = bad[in.ConsumeIntegralInRange<int>(0, 4)];
    const int field = in.ConsumeIntegralInRange<int>(0, 2);
    if (field == 0 && !indices.empty()) indices[in.ConsumeIntegralInRange<std::size_t>(0, indices.size() - 1)] = x;
    if (field == 1) indptr[in.ConsumeIntegralInRange<std::size_t>(0, indptr.size() - 1)] = x;
    if (field == 2 && !last.empty()) last[in.ConsumeIntegralInRange<std::size_t>(0, last.size() - 1)] = x;
  }

  paged_kv<const float> view(const std::vector<float>& pool, std::int64_t width, bool null_indices) const {
    paged_kv<const float> kv;
    kv.pages = tensor_view<const float, 4>(pool.empty() ? nullptr : pool.data(), {num_pages, hkv, page_size, width});
    kv.table.indptr = tensor_view<const std::int32_t, 1>(indptr.data(), {b + 1});
    kv.table.indices = tensor_view<const std::int32_t, 1>(null_indices || indices.empty() ? nullptr : indices.data(),
                                                          {static_cast<std::int64_t>(indices.size())});
    kv.table.last_page_len = tensor_view<const std::int32_t, 1>(last.empty() ? nullptr : last.data(), {b});
    return kv;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  begin_input();
  const std::int64_t b = small(in, 3), hkv = 1 + small(in, 2), group = 1 + small(in, 4), hq = hkv * group;
  const std::int64_t sq = small(in, 24), d = 1 + small(in, 24), dv = 1 + small(in, 24);
  const fuzz_pages pages(in, b, hkv, d, dv);
  const bool null_indices = corruptions() == 0 && in.ConsumeIntegralInRange<int>(0, 30) == 0;
  corruptions() += null_indices;
  const paged_kv<const float> k = pages.view(pages.k_pool, d, null_indices), v = pages.view(pages.v_pool, dv, false);
  fuzz_view<4> q(in, {b, hq, sq, d}, true, false, true);
  fuzz_view<4> o(in, {b, hq, sq, dv}, false, false, true);
  fuzz_view<3> lse = fuzz_view<3>(in, {b, hq, sq}, false, false, true);
  std::int64_t longest = 0;
  for (std::int64_t len : pages.lengths) longest = std::max(longest, len);
  fuzz_view<3> kw_out;
  key_weights kw;
  if (in.ConsumeBool()) {
    kw_out = fuzz_view<3>(in, {b, hq, longest}, false, false, false);
    kw.out = kw_out.view;
  }
  attention_params params;
  params.causal = in.ConsumeBool();
  if (in.ConsumeBool()) params.window_left = small(in, 30);
  if (in.ConsumeBool()) params.sinks = small(in, 3);
  const executor exec = pick_executor(in);

  if (std::getenv("ATTNKIT_FUZZ_VERBOSE")) {
    std::fprintf(stderr, "b %ld hq %ld hkv %ld sq %ld d %ld dv %ld page_size %ld causal %d left %ld sinks %ld; lengths",
                 long(b), long(hq), long(hkv), long(sq), long(d), long(dv), long(pages.page_size), int(params.causal),
                 long(params.window_left), long(params.sinks));
    for (std::int64_t len : pages.lengths) std::fprintf(stderr, " %ld", long(len));
    std::fprintf(stderr, "; q %s o %s lse %s kw %s; pages %ld:", describe(q).c_str(), describe(o).c_str(),
                 describe(lse).c_str(), describe(kw_out).c_str(), long(pages.num_pages));
    for (std::int32_t id : pages.indices) std::fprintf(stderr, " %d", int(id));
    std::fprintf(stderr, "\n");
  }
  if (!accepted([&] { flash_attention(q.in(), k, v, o.view, params, lse.view, kw, cpu_native{exec}); })) {
    if (!o.untouched() || !lse.untouched() || !kw_out.untouched()) fail("a rejected call wrote its output");
    return 0;
  }

  // Each sequence on the reference, its keys and values copied out contiguously.
  for (std::int64_t i = 0; i < b; ++i) {
    const std::int64_t len = k.length(i);  // the table's: a corrupt entry may still be a valid length
    std::vector<float> kc(static_cast<std::size_t>(hkv * len * d)), vc(static_cast<std::size_t>(hkv * len * dv));
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t j = 0; j < len; ++j) {
        std::copy_n(k.row(i, h, j), d, kc.data() + (h * len + j) * d);
        std::copy_n(v.row(i, h, j), dv, vc.data() + (h * len + j) * dv);
      }
    tensor<float, 4> ref_o({1, hq, sq, dv});
    tensor<float, 3> ref_lse({1, hq, sq}), ref_kw({1, hq, len});
    key_weights one_kw;
    if (detail::is_given(kw)) one_kw.out = ref_kw.view();
    if (!accepted([&] {
          flash_attention(q.in().slice(0, i, i + 1), tensor_view<const float, 4>(kc.data(), {1, hkv, len, d}),
                          tensor_view<const float, 4>(vc.data(), {1, hkv, len, dv}), ref_o.view(), params,
                          ref_lse.view(), one_kw, reference{});
        }))
      fail("the reference rejected a sequence of an accepted paged call");
    const tensor_view<float, 4> kv_k(kc.data(), {1, hkv, len, d}), kv_v(vc.data(), {1, hkv, len, dv});
    const auto key_bad = [&](std::int64_t, std::int64_t h, std::int64_t j) {
      return row_bad(kv_k, 0, h, j) || row_bad(kv_v, 0, h, j);
    };
    expect_rows_close(o.view.slice(0, i, i + 1), ref_o.view(), lse.view.slice(0, i, i + 1), ref_lse.view(), params,
                      hkv, [&](std::int64_t) { return len; }, key_bad);
    bool any_bad = false;  // a poisoned value, or an unused NaN slot a corrupt last_page_len brought in
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t j = 0; j < len; ++j) any_bad |= key_bad(0, h, j);
    if (!detail::is_given(kw) || any_bad) continue;  // every row's lse, and so every weight, may differ
    expect_close(kw_out.view.slice(0, i, i + 1).slice(2, 0, len), ref_kw.view(), "key weights");
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t j = len; j < kw_out.view.extent(2); ++j)
        if (kw_out.view(i, h, j) != 0.0f) fail("a key weight past a sequence's end is not 0");
  }

  std::size_t bytes = 0;
  if (!accepted([&] { bytes = flash_attention_workspace_size(q.in(), k, v, cpu_native{exec}, lse.view, kw); }))
    fail("the workspace query rejected an accepted call");
  std::vector<std::byte> ws(bytes);
  fuzz_view<4> lent_o = fresh_output_like(o);
  if (!accepted([&] {
        flash_attention(q.in(), k, v, lent_o.view, params, lse.view, kw, cpu_native{exec, workspace{ws.data(), ws.size()}});
      }))
    fail("the call rejected the workspace its query sized");
  expect_close(lent_o.view, o.view, "o with a lent workspace");
  return 0;
}
