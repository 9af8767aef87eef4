// Must not compile without AVX-512 flags: cpu<xsimd::avx512bw> in a baseline
// translation unit. The test (tests/CMakeLists.txt) checks that the compiler
// says so in one short static_assert, not pages of xsimd errors.
#include <attnkit/attnkit.hpp>

int main() {
  attnkit::tensor<float, 4> q({1, 1, 4, 16}), o({1, 1, 4, 16});
  attnkit::flash_attention(q.cview(), q.cview(), q.cview(), o.view(), {}, {}, attnkit::cpu<xsimd::avx512bw>{});
}
