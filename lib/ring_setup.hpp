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

}  // namespace tandem::detail
