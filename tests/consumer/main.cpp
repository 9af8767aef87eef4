// Includes the umbrella header and checks one attention result it can predict:
// with equal scores everywhere, each output row is the mean of the value rows.
#include <attnkit/attnkit.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const std::int64_t hq = 4, hkv = 2, sq = 3, skv = 5, d = 8;
  std::vector<float> q(hq * sq * d, 0.5f), k(hkv * skv * d, 0.25f), v(hkv * skv * d), o(hq * sq * d);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 7);
  attnkit::dense_attention(attnkit::make_bhsd(q.data(), 1, hq, sq, d), attnkit::make_bhsd(k.data(), 1, hkv, skv, d),
                           attnkit::make_bhsd(v.data(), 1, hkv, skv, d), attnkit::make_bhsd(o.data(), 1, hq, sq, d));
  for (std::int64_t h = 0; h < hq; ++h)
    for (std::int64_t c = 0; c < d; ++c) {
      double mean = 0;
      for (std::int64_t j = 0; j < skv; ++j) mean += v[((h / 2) * skv + j) * d + c] / double(skv);
      if (std::abs(o[(h * sq + 1) * d + c] - mean) > 1e-5) {
        std::printf("mismatch at head %lld dim %lld\n", static_cast<long long>(h), static_cast<long long>(c));
        return 1;
      }
    }
  std::printf("attnkit %d.%d.%d consumer ok\n", ATTNKIT_VERSION_MAJOR, ATTNKIT_VERSION_MINOR, ATTNKIT_VERSION_PATCH);
  return 0;
}
