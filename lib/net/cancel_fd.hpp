// SPDX-License-Identifier: MIT
#pragma once

// Shared by the socket types (lib/net/): ending a socket's pending operations.

namespace tandem::detail {

/// Submits what is queued, then cancels every operation on `fd` and waits for
/// the kernel to confirm (io_uring_register_sync_cancel on this thread's
/// loop; shutdown(2) off the loop). Call it before close(2): a close alone
/// leaves a pending receive waiting forever.
void cancel_all_on(int fd) noexcept;

}  // namespace tandem::detail
