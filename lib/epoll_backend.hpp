// SPDX-License-Identifier: MIT
#pragma once

// The readiness (epoll) backend of a loop, for machines where io_uring is
// blocked or missing (private header).
//
// It keeps the loop's io_uring contract, so nothing above the loop changes:
// callers still fill an io_uring_sqe (get_sqe hands out a staged one) and
// still receive a completion(res, flags) per operation, after the staged SQEs
// are "submitted". Each staged SQE is interpreted:
//
//   staged SQE ─▶ try the syscall now (MSG_DONTWAIT / RWF_NOWAIT)
//                   ├─ done ──────────────────────────▶ completion queue
//                   ├─ EAGAIN on a socket, pipe, eventfd, pidfd
//                   │     ─▶ waiter list of its fd, EPOLLONESHOT armed
//                   │        (epoll_wait says ready: try again)
//                   └─ a regular file that would block, openat, fsync
//                         ─▶ offload_to_thread's pool ─▶ posted back
//
// The loop delivers the completion queue where it would reap CQEs. An
// ASYNC_CANCEL finds a waiting operation by its user_data and completes it
// with -ECANCELED; an operation already running on a pool thread cannot be
// stopped (as in io_uring, -EALREADY) and completes on its own.
//
// The wake eventfd is registered once, level-triggered. Timers are the loop's
// own heap: wait() sleeps in epoll_pwait2 (nanoseconds) until the nearest one.

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace tandem::detail {

class loop;
struct completion;
struct epoll_op;

/// user_data → the operation waiting under it. Open addressing with linear
/// probing and backward-shift deletion: put, find and erase never allocate
/// (the table only grows, doubling when half full), unlike a node per entry.
class op_index {
public:
    /// Adds or replaces `key` (never 0). May throw std::bad_alloc when growing.
    void put(std::uint64_t key, epoll_op* op);
    epoll_op* find(std::uint64_t key) const noexcept;
    void erase(std::uint64_t key) noexcept;

private:
    struct slot {
        std::uint64_t key = 0;  // 0: empty
        epoll_op* op = nullptr;
    };
    std::size_t home(std::uint64_t key) const noexcept {
        return static_cast<std::size_t>((key * 0x9e3779b97f4a7c15ull) >> shift_);
    }
    std::size_t mask() const noexcept { return slots_.size() - 1; }
    void grow();

    std::vector<slot> slots_;
    std::size_t used_ = 0;
    unsigned shift_ = 64;  // 64 - log2(slots_.size())
};

class epoll_backend {
public:
    /// Takes the loop's wake eventfd (still owned by the loop) and makes it
    /// non-blocking. Throws std::system_error when epoll_create1 fails.
    epoll_backend(loop& owner, int wake_fd);
    ~epoll_backend();
    epoll_backend(const epoll_backend&) = delete;
    epoll_backend& operator=(const epoll_backend&) = delete;

    /// A zeroed SQE, staged until the next submit(). Never null.
    io_uring_sqe* get_sqe();
    /// Performs every staged SQE, in order. Completions only queue.
    void submit() noexcept;
    /// Waits for readiness up to `timeout_ns` (-1: no limit, 0: just look)
    /// and performs what became possible.
    void wait(long long timeout_ns) noexcept;
    /// Calls every queued completion's callback.
    void reap() noexcept;
    bool has_completions() const noexcept { return !done_.empty(); }

    /// Cancels every operation waiting on `fd` now (their completions are
    /// queued with -ECANCELED). Operations on a pool thread end on their own.
    void cancel_fd(int fd) noexcept;
    /// Cancels the operation whose user_data is `target`; -ENOENT, -EALREADY or 0.
    int cancel(std::uint64_t target) noexcept;

    /// Queues a completion (also used by operations coming back from a thread).
    void complete(std::uint64_t user_data, int res, std::uint32_t flags = 0);

private:
    struct fd_state {
        epoll_op* head = nullptr;
        epoll_op* tail = nullptr;
        std::uint32_t armed = 0;  // events registered and not yet reported, or 0
    };
    struct done_entry {
        std::uint64_t user_data;
        int res;
        std::uint32_t flags;
    };

    void perform(const io_uring_sqe& sqe);
    bool attempt(epoll_op* op) noexcept;  // true when finished
    void start_wait(epoll_op* op, std::uint32_t events) noexcept;
    void on_ready(int fd, std::uint32_t events) noexcept;
    void unlink(epoll_op* op) noexcept;
    void rearm(int fd) noexcept;
    void to_thread(epoll_op* op) noexcept;
    static void run_on_thread(epoll_op* op) noexcept;
    epoll_op* make_op(const io_uring_sqe& sqe);
    void release(epoll_op* op) noexcept;
    fd_state& state_of(int fd);

    loop& owner_;
    int epfd_ = -1;
    int wake_fd_ = -1;
    bool have_pwait2_ = true;
    std::vector<io_uring_sqe> staged_;
    std::vector<done_entry> done_;
    std::vector<done_entry> delivering_;
    std::vector<fd_state> fds_;
    op_index pending_;                            // waiting or on a thread, by user_data
    std::vector<std::unique_ptr<epoll_op>> ops_;  // every op ever made
    std::vector<epoll_op*> free_;
};

}  // namespace tandem::detail
