// SPDX-License-Identifier: MIT
#pragma once

// Coroutine frames come from a per-thread cache, by size class (lib/frame_pool.cpp).
// Creating, awaiting and destroying a trivial task costs ~23 ns with operator
// new/delete and ~15 ns with the cache (bench/core_bench.cpp).
//
// The functions are compiled into the library, not inline, on purpose: a
// coroutine that moves between threads must not reuse a thread_local address
// computed before it suspended (clang may keep one in the frame), and a call
// into another translation unit cannot be cached that way.

#include <cstddef>

namespace tandem::detail {

void* frame_alloc(std::size_t n);
void frame_free(void* p, std::size_t n) noexcept;

}  // namespace tandem::detail
