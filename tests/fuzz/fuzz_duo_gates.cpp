// DuoAttention's gate file format (duo_gates::parse) on arbitrary text, and the
// head split that follows from a parsed file.
#include <sstream>
#include <string>

#include "fuzz_support.hpp"

using namespace attnkit;
using namespace attnkit::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  begin_input();
  const double sparsity = in.ConsumeFloatingPointInRange<double>(-0.5, 1.5);
  const float threshold = in.ConsumeFloatingPointInRange<float>(-2.0f, 2.0f);
  std::istringstream text(in.ConsumeRemainingBytesAsString());
  std::optional<duo_gates> gates;
  if (!accepted([&] { gates.emplace(duo_gates::parse(text, "fuzz input")); })) return 0;
  if (gates->layers < 1 || gates->heads < 1 ||
      static_cast<std::int64_t>(gates->values.size()) != gates->layers * gates->heads)
    fail("a parsed file's shape does not match its gates");
  for (float g : gates->values)
    if (!std::isfinite(g)) fail("a parsed gate is not finite");
  std::optional<duo_heads> heads;
  if (accepted([&] { heads.emplace(duo_heads::by_sparsity(*gates, sparsity)); })) {
    if (sparsity < 0.0 || sparsity > 1.0) fail("a sparsity outside [0, 1] was accepted");
    if (static_cast<std::int64_t>(heads->retrieval.size()) != gates->layers * gates->heads)
      fail("by_sparsity lost heads");
  }
  heads.reset();
  if (!accepted([&] { heads.emplace(duo_heads::by_threshold(*gates, threshold)); }))
    fail("by_threshold rejected parsed gates");
  for (std::int64_t l = 0; l < gates->layers; ++l)
    if (static_cast<std::int64_t>(heads->layer(l).size()) != gates->heads) fail("a layer has the wrong head count");
  return 0;
}
