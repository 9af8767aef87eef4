// workspace: caller-owned scratch memory a kernel may use instead of allocating.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <new>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// A byte range the caller lends to a kernel call. Empty: the kernel allocates.
struct workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

namespace detail {

/// Fails unless `floats` fits a byte count below 2^62. Plans estimate their scratch
/// in long double first, so no size product can overflow on huge (valid) shapes.
inline void check_scratch_floats(const char* fn, long double floats) {
  ATTNKIT_CHECK(floats * sizeof(float) < 0x1p62L, fn, ": this call would need ", floats * sizeof(float),
                " bytes of scratch, more than 2^62");
}

/// Hands out 64-byte aligned float arrays from a caller's workspace, or from one
/// allocation of its own when the caller gave none.
class scratch_arena {
 public:
  static constexpr std::size_t alignment = 64;

  /// Bytes an arena needs for arrays of these float counts, alignment slack included.
  static std::size_t bytes_for(std::initializer_list<std::size_t> floats) {
    std::size_t total = alignment;
    for (const std::size_t n : floats) total += round_up(n * sizeof(float));
    return total;
  }

  scratch_arena(const char* fn, workspace ws, std::size_t needed) {
    if (ws.data == nullptr && ws.bytes == 0) {
      void* p = ::operator new(needed, std::align_val_t(alignment), std::nothrow);
      ATTNKIT_CHECK(p != nullptr, fn, ": cannot allocate ", needed, " bytes of scratch");
      owned_.reset(static_cast<std::byte*>(p));
      base_ = owned_.get();
    } else {
      ATTNKIT_CHECK(ws.data != nullptr, fn, ": workspace.data is null but workspace.bytes = ", ws.bytes);
      ATTNKIT_CHECK(ws.bytes >= needed, fn, ": workspace.bytes must be >= ", needed,
                    " (the kernel's workspace_size), got ", ws.bytes);
      base_ = static_cast<std::byte*>(ws.data);
    }
    const auto addr = reinterpret_cast<std::uintptr_t>(base_);
    next_ = base_ + (alignment - addr % alignment) % alignment;
  }

  /// The next n int64 (index tables); bytes_for counts them as 2 n floats.
  std::int64_t* take_indices(std::size_t n) {
    std::int64_t* p = reinterpret_cast<std::int64_t*>(next_);
    next_ += round_up(n * sizeof(std::int64_t));
    return p;
  }

  /// The next n floats.
  float* take(std::size_t n) {
    float* p = reinterpret_cast<float*>(next_);
    next_ += round_up(n * sizeof(float));
    return p;
  }

 private:
  struct aligned_delete {
    void operator()(std::byte* p) const { ::operator delete(p, std::align_val_t(alignment)); }
  };
  static std::size_t round_up(std::size_t b) { return (b + alignment - 1) / alignment * alignment; }

  std::unique_ptr<std::byte, aligned_delete> owned_;
  std::byte* base_ = nullptr;
  std::byte* next_ = nullptr;
};

}  // namespace detail
ATTNKIT_END_NAMESPACE
