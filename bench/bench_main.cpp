// attnkit_bench: Google Benchmark cases for every kernel family. The machine's
// FMA and bf16 dot peaks and DRAM (and L2) bandwidth are measured first so each
// case reports peak_frac.
#include <benchmark/benchmark.h>

#include <string>

#include "support/counters.hpp"
#include "support/machine.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  auto& m = attnkit::bench::machine();
  m.one_thread = attnkit::bench::measure_machine(1);
  m.all_threads = attnkit::bench::measure_machine(attnkit::bench::max_threads());
  benchmark::AddCustomContext("fma_gflops_1_thread", std::to_string(m.one_thread.fma_gflops));
  benchmark::AddCustomContext("fma_gflops_all_threads", std::to_string(m.all_threads.fma_gflops));
  benchmark::AddCustomContext("bf16_dot_gflops_1_thread", std::to_string(m.one_thread.bf16_dot_gflops));
  benchmark::AddCustomContext("bf16_dot_gflops_all_threads", std::to_string(m.all_threads.bf16_dot_gflops));
  benchmark::AddCustomContext("read_gbps_1_thread", std::to_string(m.one_thread.read_gbps));
  benchmark::AddCustomContext("read_gbps_all_threads", std::to_string(m.all_threads.read_gbps));
  benchmark::AddCustomContext("l2_read_gbps_1_thread", std::to_string(m.one_thread.l2_read_gbps));
  benchmark::AddCustomContext("l2_read_gbps_all_threads", std::to_string(m.all_threads.l2_read_gbps));
  benchmark::AddCustomContext("threads", std::to_string(m.all_threads.threads));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
