// SPDX-License-Identifier: MIT
#pragma once

// Fault points (private header). A test build of the library, compiled with
// -DTANDEM_FAULT_INJECTION (tests/meson.build: tandem_fault), can make the Nth
// call at a point fail with a chosen errno, so that tests can sweep N and
// check that every failure reaches the right awaiter as a clear error and
// that nothing leaks. In every other build fault_hit() is a constant 0 and
// the hooks compile to nothing.
//
//   point    where                                   what the failure looks like
//   ───────  ──────────────────────────────────────  ────────────────────────────────────
//   sqe      loop::get_sqe                           std::system_error from get_sqe
//   cqe      uring_op's completion                   the operation's result is -err
//                                                    (an fd it made is closed first)
//   memfd    the arena's memfd_create                memfd_create returns -1 / err
//   mmap     the arena's mmap                        mmap returns MAP_FAILED / err
//   fork     the zygote's fork, each worker's clone3  the call returns -1 / err
//   accept   a listener's accepted connection        the accept's result is -err
//                                                    (the connection is closed)
//
// Counting is per process: a forked zygote keeps counting from where its
// parent stood at the fork (so "fork, N = 2" fails the first worker).

namespace tandem::detail {

enum class fault_point : unsigned { sqe, cqe, memfd, mmap, fork, accept };
inline constexpr unsigned fault_point_count = 6;

#if defined(TANDEM_FAULT_INJECTION)

/// The errno the current call at `p` must fail with, or 0. Counts the call.
int fault_hit(fault_point p) noexcept;

/// Test side: the `nth` call at `p` from now on (1-based) fails with `err`,
/// once. nth 0 disarms the point. Resets the point's counters.
void fault_arm(fault_point p, unsigned long nth, int err) noexcept;
/// Calls at `p` since it was last armed.
unsigned long fault_calls(fault_point p) noexcept;
/// Whether the armed failure at `p` has happened.
bool fault_fired(fault_point p) noexcept;

#else

constexpr int fault_hit(fault_point) noexcept {
    return 0;
}

#endif

}  // namespace tandem::detail
