// Median wall time of repeated runs.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace attnkit::bench {

/// Runs fn once to warm up, then at least min_reps times and until min_seconds
/// have passed (at most max_reps); returns the median time in milliseconds.
template <class Fn>
double median_ms(Fn&& fn, int min_reps = 5, double min_seconds = 0.2, int max_reps = 50) {
  fn();
  std::vector<double> ms;
  double total = 0;
  while (static_cast<int>(ms.size()) < min_reps || (total < min_seconds && static_cast<int>(ms.size()) < max_reps)) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ms.push_back(t);
    total += t / 1e3;
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

}  // namespace attnkit::bench
