// attnkit_tour: measures this machine, runs each kernel family on an LLM-shaped
// problem and prints one table (or JSON) of time, throughput, fraction of the
// machine's peak and error against the fp64 reference.
//
//   attnkit_tour [--filter SUBSTRING] [--json FILE] [--quick]
//
// Exits 1 if any row's error exceeds its tolerance.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "tour/dense_rows.hpp"
#include "tour/flash_rows.hpp"
#include "tour/kv_rows.hpp"
#include "tour/pool_rows.hpp"
#include "tour/quant_rows.hpp"
#include "tour/sparse_rows.hpp"
#include "tour/linear_rows.hpp"
#include "tour/tour.hpp"

namespace {

using attnkit::tour::bound;
using attnkit::tour::row;

void print_table(const std::vector<row>& rows, const attnkit::tour::environment& env) {
  std::printf("machine: fp32 FMA peak %.1f GFLOP/s (1 thread), %.1f GFLOP/s (%d threads); "
              "bf16 dot peak %.1f GFLOP/s (1 thread), %.1f GFLOP/s (%d threads; 0: none); "
              "DRAM read %.1f GB/s (1 thread), %.1f GB/s (%d threads); L2 read %.1f GB/s (1 thread), "
              "%.1f GB/s (%d threads)\n\n",
              env.one_thread.fma_gflops, env.all_threads.fma_gflops, env.all_threads.threads,
              env.one_thread.bf16_dot_gflops, env.all_threads.bf16_dot_gflops, env.all_threads.threads,
              env.one_thread.read_gbps, env.all_threads.read_gbps, env.all_threads.threads,
              env.one_thread.l2_read_gbps, env.all_threads.l2_read_gbps, env.all_threads.threads);
  std::printf("%-16s %-40s %-20s %7s %11s %9s %8s %8s %9s\n", "kernel", "shape", "dtype", "threads", "median ms",
              "GFLOP/s", "GB/s", "% peak", "rel err");
  for (const row& r : rows)
    std::printf("%-16s %-40s %-20s %7d %11.3f %9.2f %8.2f %7.1f%c %9.1e%s\n", r.kernel.c_str(), r.shape.c_str(),
                r.dtype.c_str(), r.threads, r.median_ms, r.gflops, r.gbps, 100 * r.peak_fraction,
                attnkit::tour::bound_letter(r.bounded_by), r.rel_err, r.rel_err <= r.tolerance ? "" : "  FAIL");
  std::printf("\n%% peak: F = of the FMA peak, D = of the bf16 dot peak, B = of the DRAM read bandwidth, on the "
              "row's thread count.\n");
}

void write_json(const std::vector<row>& rows, const std::string& path) {
  std::ofstream out(path);
  out << "[\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const row& r = rows[i];
    char line[768];
    std::snprintf(line, sizeof line,
                  "  {\"kernel\": \"%s\", \"shape\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, "
                  "\"median_ms\": %.6g, \"gflops\": %.6g, \"gbps\": %.6g, \"bound\": \"%s\", "
                  "\"peak_fraction\": %.6g, \"rel_err\": %.6g, \"tolerance\": %.6g}%s\n",
                  r.kernel.c_str(), r.shape.c_str(), r.dtype.c_str(), r.threads, r.median_ms, r.gflops, r.gbps,
                  attnkit::tour::bound_name(r.bounded_by), r.peak_fraction, r.rel_err, r.tolerance,
                  i + 1 < rows.size() ? "," : "");
    out << line;
  }
  out << "]\n";
  if (!out) {
    std::fprintf(stderr, "attnkit_tour: could not write %s\n", path.c_str());
    std::exit(2);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string filter, json;
  attnkit::tour::environment env;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (arg == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else if (arg == "--quick") {
      env.quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--filter SUBSTRING] [--json FILE] [--quick]\n", argv[0]);
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }

  const auto t0 = std::chrono::steady_clock::now();
  env.one_thread = attnkit::bench::measure_machine(1);
  env.all_threads = attnkit::bench::measure_machine(attnkit::bench::max_threads());

  std::vector<attnkit::tour::tour_case> cases = attnkit::tour::dense_cases();
  for (auto& c : attnkit::tour::flash_cases()) cases.push_back(std::move(c));
  for (auto& c : attnkit::tour::quant_cases()) cases.push_back(std::move(c));
  for (auto& c : attnkit::tour::sparse_cases()) cases.push_back(std::move(c));
  for (auto& c : attnkit::tour::kv_cases()) cases.push_back(std::move(c));
  for (auto& c : attnkit::tour::pool_cases()) cases.push_back(std::move(c));
  for (auto& c : attnkit::tour::linear_cases()) cases.push_back(std::move(c));
  std::vector<row> rows;
  for (const auto& c : cases)
    if (c.kernel.find(filter) != std::string::npos) rows.push_back(c.run(env));

  print_table(rows, env);
  std::printf("total %.1f s\n", attnkit::bench::seconds_since(t0));
  if (!json.empty()) write_json(rows, json);
  for (const row& r : rows)
    if (!(r.rel_err <= r.tolerance)) return 1;
  return 0;
}
