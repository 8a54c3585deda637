// SPDX-License-Identifier: MIT
#pragma once

// Shared by the socket types (lib/net/): tracking and ending a socket's
// pending operations.

namespace tandem::detail {

/// Submits what is queued, then cancels every operation on `fd` and waits for
/// the kernel to confirm (io_uring_register_sync_cancel on this thread's
/// loop; shutdown(2) off the loop). Call it before close(2): a close alone
/// leaves a pending receive waiting forever.
void cancel_all_on(int fd) noexcept;

/// Counts a kernel operation in flight on a socket (its `pending_`), so that
/// close() knows whether it must cancel first.
class pending_op {
public:
    explicit pending_op(unsigned& count) noexcept : count_(count) { ++count_; }
    ~pending_op() { --count_; }
    pending_op(const pending_op&) = delete;
    pending_op& operator=(const pending_op&) = delete;

private:
    unsigned& count_;
};

}  // namespace tandem::detail
