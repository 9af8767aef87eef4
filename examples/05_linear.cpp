// 05_linear: linear attention as an engine runs it. Each variant prefills a
// prompt in one chunkwise call that leaves its fp32 state behind, then decodes
// token by token from that state in O(1) time and memory per token; the
// decoded outputs are compared with one prefill over the whole sequence.
//
//   05_linear [prompt_tokens] [decode_tokens]      (defaults 4096 and 64)
//
// Variants: Lightning (a fixed decay per head, fla's rule), GLA (data-dependent
// gates per channel), and BASED (Taylor linear attention, normalized) with its
// sliding-window softmax partner decoding from a ring buffer.
#include <attnkit/attention/flash.hpp>
#include <attnkit/attention/linear/based.hpp>
#include <attnkit/attention/linear/gla.hpp>
#include <attnkit/attention/linear/lightning.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

using namespace attnkit;

namespace {

constexpr std::int64_t heads = 8;

tensor<float, 4> random(std::int64_t t, std::int64_t d, std::mt19937_64& rng, float sd) {
  tensor<float, 4> x({1, heads, t, d});
  std::normal_distribution<float> n(0.0f, sd);
  for (std::int64_t i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  return x;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double rel_diff(const tensor<float, 4>& a, const tensor<float, 4>& b, std::int64_t from) {
  double d = 0, n = 0;
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t t = from; t < a.extent(2); ++t)
      for (std::int64_t y = 0; y < a.extent(3); ++y) {
        d += std::pow(a(0, h, t, y) - b(0, h, t, y), 2.0);
        n += std::pow(b(0, h, t, y), 2.0);
      }
  return std::sqrt(d / n);
}

/// Prefill [0, T) then one call per token, state carried; `call(t0, t1, state)` runs rows [t0, t1).
template <class Call>
void prefill_then_decode(const char* name, std::int64_t T, std::int64_t N, const tensor<float, 4>& whole,
                         tensor<float, 4>& o, const linear_state& state, Call&& call) {
  auto t0 = std::chrono::steady_clock::now();
  call(0, T, state);
  const double prefill_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = T; i < T + N; ++i) call(i, i + 1, state);
  const double decode_s = seconds_since(t0);
  std::printf("%-10s prefill %6lld tokens %8.2f ms   decode %8.1f us/token   vs one prefill: %.1e\n", name,
              static_cast<long long>(T), 1e3 * prefill_s, 1e6 * decode_s / N, rel_diff(o, whole, T));
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t T = argc > 1 ? std::atoll(argv[1]) : 4096, N = argc > 2 ? std::atoll(argv[2]) : 64;
  if (T < 1 || N < 1) {
    std::fprintf(stderr, "usage: %s [prompt_tokens >= 1] [decode_tokens >= 1]\n", argv[0]);
    return 2;
  }
  const std::int64_t t = T + N, d = 128;
  std::mt19937_64 rng(5);
  const auto rows = [](const tensor<float, 4>& x, std::int64_t a, std::int64_t b) { return x.cview().slice(2, a, b); };
  const tensor<float, 4> q = random(t, d, rng, 0.1f), k = random(t, d, rng, 0.1f), v = random(t, d, rng, 1.0f);

  {  // Lightning: log decay per head, no scale, no normalizer.
    const std::vector<float> log_lambda = lightning_log_decay_fla(heads, 1, 4);
    const tensor_view<const float, 1> g(log_lambda.data(), {heads});
    tensor<float, 4> whole({1, heads, t, d}), o({1, heads, t, d}), s({1, heads, d, d});
    lightning_attention(q.cview(), k.cview(), v.cview(), whole.view(), g, {}, {}, cpu_native{});
    std::fill(s.data(), s.data() + s.size(), 0.0f);
    prefill_then_decode("lightning", T, N, whole, o, {s.view(), {}}, [&](std::int64_t a, std::int64_t b, const linear_state& st) {
      lightning_attention(rows(q, a, b), rows(k, a, b), rows(v, a, b), o.view().slice(2, a, b), g, st, {},
                          cpu_native{});
    });
  }
  {  // GLA: per-channel gates logsigmoid(x) / 16.
    tensor<float, 4> gates = random(t, d, rng, 2.0f);
    gla_log_gates(gates.view());
    tensor<float, 4> whole({1, heads, t, d}), o({1, heads, t, d}), s({1, heads, d, d});
    gla_attention(q.cview(), k.cview(), v.cview(), whole.view(), gates.cview(), {}, {}, cpu_native{});
    std::fill(s.data(), s.data() + s.size(), 0.0f);
    prefill_then_decode("gla", T, N, whole, o, {s.view(), {}}, [&](std::int64_t a, std::int64_t b, const linear_state& st) {
      gla_attention(rows(q, a, b), rows(k, a, b), rows(v, a, b), o.view().slice(2, a, b), rows(gates, a, b), st, {},
                    cpu_native{});
    });
  }
  {  // BASED: feature dim 16, value dim 64; state (153, 64) + (153) per head.
    const tensor<float, 4> qf = random(t, 16, rng, 0.5f), kf = random(t, 16, rng, 0.5f), vf = random(t, 64, rng, 1.0f);
    const based_params p;
    const std::int64_t D = based_state_features(p, 16);
    tensor<float, 4> whole({1, heads, t, 64}), o({1, heads, t, 64}), s({1, heads, D, 64});
    tensor<float, 3> z({1, heads, D});
    based_attention(qf.cview(), kf.cview(), vf.cview(), whole.view(), {}, p, cpu_native{});
    std::fill(s.data(), s.data() + s.size(), 0.0f);
    std::fill(z.data(), z.data() + z.size(), 0.0f);
    prefill_then_decode("based", T, N, whole, o, {s.view(), z.view()}, [&](std::int64_t a, std::int64_t b, const linear_state& st) {
      based_attention(rows(qf, a, b), rows(kf, a, b), rows(vf, a, b), o.view().slice(2, a, b), st, p,
                      cpu_native{});
    });

    // Its window layer (window 128: 64 tokens back): prefill with the mask, decode from a ring of 65 rows.
    const std::int64_t window = 128;
    tensor<float, 4> wwhole({1, heads, t, d}), wo({1, heads, 1, d});
    flash_attention(q.cview(), k.cview(), v.cview(), wwhole.view(), based_window_params(window));
    window_ring<half> ring(heads, d, d, window);
    for (std::int64_t i = 0; i < T; ++i)
      ring.append(tensor_view<const float, 2>(&k(0, 0, i, 0), {heads, d}, {t * d, 1}),
                  tensor_view<const float, 2>(&v(0, 0, i, 0), {heads, d}, {t * d, 1}));
    double worst = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::int64_t i = T; i < t; ++i) {
      ring.append(tensor_view<const float, 2>(&k(0, 0, i, 0), {heads, d}, {t * d, 1}),
                  tensor_view<const float, 2>(&v(0, 0, i, 0), {heads, d}, {t * d, 1}));
      flash_attention(rows(q, i, i + 1), ring.keys(), ring.values(), wo.view(), attention_params{});
      double diff = 0, norm = 0;
      for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t y = 0; y < d; ++y) {
          diff += std::pow(wo(0, h, 0, y) - wwhole(0, h, i, y), 2.0);
          norm += std::pow(wwhole(0, h, i, y), 2.0);
        }
      worst = std::max(worst, std::sqrt(diff / norm));
    }
    std::printf("%-10s ring of %lld rows (f16)            decode %8.1f us/token   vs windowed prefill: %.1e\n",
                "window", static_cast<long long>(window / 2 + 1), 1e6 * seconds_since(t0) / N, worst);
    if (worst > 2e-3) return 1;  // f16 keys and values
  }
  return 0;
}
