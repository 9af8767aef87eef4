// executor / parallel_for: each index runs exactly once, on every kind of executor.
#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/core/parallel.hpp"

namespace attnkit {
namespace {

void expect_each_index_once(const executor& exec, std::int64_t n) {
  std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
  parallel_for(exec, n, [&](std::int64_t i) { hits[static_cast<std::size_t>(i)].fetch_add(1); });
  for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<std::size_t>(i)].load(), 1) << i;
}

TEST(Parallel, SerialVisitsEachIndexOnce) {
  for (std::int64_t n : {0, 1, 7, 1000}) expect_each_index_once(executor::serial(), n);
  EXPECT_EQ(executor::serial().concurrency(), 1);
}

#if defined(_OPENMP)
TEST(Parallel, OpenMpVisitsEachIndexOnce) {
  for (int threads : {1, 2, 3})
    for (std::int64_t n : {0, 1, 7, 1000}) expect_each_index_once(executor::openmp(threads), n);
  EXPECT_EQ(executor::openmp(3).concurrency(), 3);
  EXPECT_THROW(executor::openmp(-1), error);
}
#endif

TEST(Parallel, CustomRunnerIsUsed) {
  // A caller's pool: two std::threads taking interleaved indices.
  std::atomic<int> calls{0};
  const executor exec = executor::custom(2, [&](std::int64_t n, const std::function<void(std::int64_t)>& task) {
    calls.fetch_add(1);
    std::thread other([&] {
      for (std::int64_t i = 1; i < n; i += 2) task(i);
    });
    for (std::int64_t i = 0; i < n; i += 2) task(i);
    other.join();
  });
  EXPECT_EQ(exec.concurrency(), 2);
  expect_each_index_once(exec, 999);
  EXPECT_EQ(calls.load(), 1);
}

TEST(Parallel, CustomRejectsBadArguments) {
  EXPECT_THROW(executor::custom(0, [](std::int64_t, const std::function<void(std::int64_t)>&) {}), error);
  EXPECT_THROW(executor::custom(2, nullptr), error);
}

TEST(Parallel, DefaultExecutorRuns) {
  expect_each_index_once(default_executor(), 257);
  EXPECT_GE(default_executor().concurrency(), 1);
}

}  // namespace
}  // namespace attnkit
