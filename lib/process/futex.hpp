// SPDX-License-Identifier: MIT
#pragma once

// Futex wait/wake on words in the shared arena, and the spin-wait hint.
// Shared (not FUTEX_PRIVATE_FLAG): the waiter and the waker are different
// processes, and the kernel must key the futex on the shared page.

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <ctime>

namespace tandem::detail {

/// Sleeps while `*word == expected`, at most `timeout_ns`; returns at once if
/// it differs. Spurious returns happen: callers re-check their condition.
inline void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                       long timeout_ns) noexcept {
    timespec ts{timeout_ns / 1'000'000'000, timeout_ns % 1'000'000'000};
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr,
              0);
}

inline void futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count, nullptr,
              nullptr, 0);
}

/// A full barrier between a store and a later load of another location: the
/// "announce, then re-check" handshake between processes (a waiter announces
/// it sleeps and re-checks for work; a producer publishes work and checks for
/// a sleeper). g++'s ThreadSanitizer rejects std::atomic_thread_fence; there a
/// locked read-modify-write stands in (a full barrier on x86). TSan cannot see
/// the other process anyway.
inline void store_load_barrier() noexcept {
#if defined(__SANITIZE_THREAD__)
    static std::atomic<unsigned> barrier{0};
    barrier.fetch_add(0, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

/// Tells the CPU we are spinning (frees the sibling hyperthread, saves power).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

/// A cheap monotonic clock for bounding spins, in nanoseconds.
inline std::uint64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace tandem::detail
