// attnkit_bench_cuda: the cuda flash kernels against the card's own limits,
// measured first in the same run: the dense bf16 matrix rate (cuBLAS,
// 8192^3, fp32 accumulate) and device-to-device copy bandwidth (bytes read
// plus written). Prefill reports TFLOP/s (4 b hq sq skv d, halved when causal)
// and its fraction of the matrix rate; decode reports GB/s of K and V read and
// its fraction of the copy bandwidth. Times are CUDA-event times of the
// kernels alone (manual time), inputs random.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "attnkit/attention/flash_cuda.cuh"

namespace {

using attnkit::bfloat16;
using attnkit::half;

void must(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

/// Device memory of n random elements of T (normal(0, 1), rounded to T).
template <class T>
T* random_device(std::int64_t n, std::uint64_t seed) {
  std::vector<T> host(static_cast<std::size_t>(n));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist;
  for (auto& x : host) x = attnkit::from_float<T>(dist(rng));
  T* p = nullptr;
  must(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  must(cudaMemcpy(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

/// Milliseconds per call of f, the mean over `reps` calls after two warm-ups.
template <class F>
float time_ms(const F& f, int reps) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  f();
  f();
  cudaEventRecord(a);
  for (int r = 0; r < reps; ++r) f();
  cudaEventRecord(b);
  must(cudaEventSynchronize(b), "kernel");
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / reps;
}

struct card {
  double bf16_tflops = 0;  // cuBLAS 8192^3 bf16, fp32 accumulate
  double copy_gbps = 0;    // device-to-device copy, bytes read + written
};
card& limits() {
  static card c;
  return c;
}

card measure_card() {
  card c;
  const int n = 8192;
  auto* a = random_device<bfloat16>(std::int64_t{n} * n, 1);
  auto* b = random_device<bfloat16>(std::int64_t{n} * n, 2);
  float* out = nullptr;
  must(cudaMalloc(&out, sizeof(float) * n * n), "cudaMalloc");
  cublasHandle_t h;
  cublasCreate(&h);
  const float one = 1, zero = 0;
  const float ms = time_ms(
      [&] {
        cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, out,
                     CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      },
      10);
  c.bf16_tflops = 2.0 * n * n * double(n) / (ms * 1e-3) / 1e12;
  cublasDestroy(h);
  cudaFree(a), cudaFree(b), cudaFree(out);

  const std::size_t bytes = std::size_t{2} << 30;
  void *src = nullptr, *dst = nullptr;
  must(cudaMalloc(&src, bytes), "cudaMalloc");
  must(cudaMalloc(&dst, bytes), "cudaMalloc");
  cudaMemset(src, 1, bytes);
  const float copy_ms = time_ms([&] { cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice); }, 10);
  c.copy_gbps = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
  cudaFree(src), cudaFree(dst);
  return c;
}

/// One flash call on random device tensors, timed by events per iteration.
template <class T>
void run_flash(benchmark::State& state, std::int64_t b, std::int64_t hq, std::int64_t hkv, std::int64_t sq,
               std::int64_t skv, bool causal) {
  const std::int64_t d = 128;
  T* q = random_device<T>(b * hq * sq * d, 3);
  T* k = random_device<T>(b * hkv * skv * d, 4);
  T* v = random_device<T>(b * hkv * skv * d, 5);
  T* o = nullptr;
  must(cudaMalloc(&o, b * hq * sq * d * sizeof(T)), "cudaMalloc");
  auto args = attnkit::make_attention_args(attnkit::tensor_view<const T, 4>(q, {b, hq, sq, d}),
                                           attnkit::tensor_view<const T, 4>(k, {b, hkv, skv, d}),
                                           attnkit::tensor_view<const T, 4>(v, {b, hkv, skv, d}),
                                           attnkit::tensor_view<T, 4>(o, {b, hq, sq, d}));
  args.params.causal = causal;
  const std::size_t bytes = attnkit::flash_attention_workspace_size(args, attnkit::cuda{});
  void* ws = nullptr;
  if (bytes) must(cudaMalloc(&ws, bytes), "cudaMalloc");
  const attnkit::cuda backend{nullptr, attnkit::workspace{ws, bytes}};
  for (auto _ : state) state.SetIterationTime(time_ms([&] { attnkit::flash_attention(args, backend); }, 5) * 1e-3);
  const double flops = 4.0 * b * hq * sq * double(skv) * d * (causal ? 0.5 : 1.0);
  const double kv_bytes = 2.0 * b * hkv * skv * d * sizeof(T);
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(kv_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["flops_per_matrix_peak"] =
      benchmark::Counter(flops * 1e-12 / limits().bf16_tflops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes_per_copy_peak"] =
      benchmark::Counter(kv_bytes * 1e-9 / limits().copy_gbps, benchmark::Counter::kIsIterationInvariantRate);
  cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o), cudaFree(ws);
}

// Prefill: d 128, sq = skv = 8192, 16 heads; causal and not, f16 and bf16.
void prefill_f16(benchmark::State& s) { run_flash<half>(s, 1, 16, 16, 8192, 8192, s.range(0) != 0); }
void prefill_bf16(benchmark::State& s) { run_flash<bfloat16>(s, 1, 16, 16, 8192, 8192, s.range(0) != 0); }
BENCHMARK(prefill_f16)->ArgName("causal")->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(prefill_bf16)->ArgName("causal")->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond);

// Decode: one query row, skv 32768, hkv 8, GQA 4, f16 K/V, batch 4 (537 MB of K and V, past the L2).
void decode_f16(benchmark::State& s) { run_flash<half>(s, 4, 32, 8, 1, 32768, true); }
BENCHMARK(decode_f16)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("attnkit_bench_cuda: no CUDA device, nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  limits() = measure_card();
  benchmark::AddCustomContext("device", prop.name);
  benchmark::AddCustomContext("cublas_bf16_tflops", std::to_string(limits().bf16_tflops));
  benchmark::AddCustomContext("d2d_copy_gbps", std::to_string(limits().copy_gbps));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
