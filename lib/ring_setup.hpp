// SPDX-License-Identifier: MIT
#pragma once

// Creating an io_uring with the best flags this kernel accepts, and turning a
// failure into a message that says what to do about it (private header).

#include <liburing.h>

#include <string>

namespace tandem::detail {

struct ring_setup_result {
    unsigned flags = 0;     // IORING_SETUP_* in force
    unsigned features = 0;  // IORING_FEAT_* reported by the kernel
    std::string description;
};

/// Initialises `ring` with `entries` SQEs on the calling thread, trying
/// SINGLE_ISSUER | DEFER_TASKRUN, then COOP_TASKRUN, then no flags. Throws
/// std::system_error (message from setup_error_message) when none works or the
/// kernel lacks a feature the loop needs.
ring_setup_result setup_ring(io_uring* ring, unsigned entries);

/// "io_uring_setup failed with EPERM (...): <likely cause>. <fix>."
std::string setup_error_message(int err);

/// Empty when this process can use io_uring as the loop does: a ring can be
/// made, a NOP completes under the live seccomp policy, and the opcodes and
/// registrations tandem uses exist. Otherwise why not, in one line. A process
/// merely short of fds or memory gets "" (epoll would not help; the loop's own
/// setup then throws with advice).
std::string io_uring_unavailable();

}  // namespace tandem::detail
