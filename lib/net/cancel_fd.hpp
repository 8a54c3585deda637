// SPDX-License-Identifier: MIT
#pragma once

// Shared by the socket types (lib/net/): tracking and ending a socket's
// pending operations, and the awaitable a stream's receives and sends use.

#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include "../loop.hpp"

#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <type_traits>
#include <utility>

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

/// One socket operation awaited by a coroutine: the contract of uring_op
/// (lib/uring_op.hpp): no allocation, resumed exactly once through the ready
/// queue, operation_cancelled when cancelled before submission or when the
/// kernel confirms a cancellation, the CQE always awaited. Raw result
/// (>= 0 or -errno) from await_resume.
///
/// What differs is for servers with thousands of connections, where a
/// receive completes long after it was submitted and everything it touches
/// has left the cache (bench/echo_bench.cpp): the completion callback only
/// records the result and prefetches what the resumption will touch (this
/// frame, the frame it returns to, the neighbours in the cancellation list),
/// and the cancel hook is unlinked when the coroutine resumes, by which time
/// those lines have arrived. A stop request between completion and resumption
/// finds the hook still linked and leaves the finished operation alone: its
/// result stands, as it would had the stop come a moment later.
template <class Prep>
class socket_op : completion, cancel_hook {
public:
    explicit socket_op(Prep prep) noexcept(std::is_nothrow_move_constructible_v<Prep>)
        : prep_(std::move(prep)) {}
    ~socket_op() { cancel_hook::unlink(); }  // normally done by await_resume already
    socket_op(const socket_op&) = delete;
    socket_op& operator=(const socket_op&) = delete;

    bool await_ready() const noexcept { return false; }

    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        stop_node* node = stop_of(h);
        if (node != nullptr && node->stop_requested()) {
            cancelled_early_ = true;
            return false;
        }
        loop_ = &require_loop("an io operation");
        io_uring_sqe* sqe = loop_->get_sqe();
        prep_(sqe);
        io_uring_sqe_set_data(sqe, static_cast<completion*>(this));
        complete = &on_complete;
        handle_ = h;
        if constexpr (std::is_base_of_v<promise_base, P>) {
            resumes_next_ = h.promise().continuation_.address();
        }
        if (node != nullptr) {
            on_cancel = &on_cancelled;
            node->link(this);
        }
        return true;
    }

    int await_resume() {
        cancel_hook::unlink();
        if (cancelled_early_) throw operation_cancelled();
        if (cancel_sent_ && (res_ == -ECANCELED || res_ == -EINTR)) throw operation_cancelled();
        return res_;
    }

private:
    static void on_complete(completion* c, int res, std::uint32_t) noexcept {
        auto* self = static_cast<socket_op*>(c);
        self->res_ = res;
        self->done_ = true;
        // Written when the coroutine resumes (run_ready), after this reap.
        __builtin_prefetch(self->handle_.address(), 1);
        __builtin_prefetch(self->resumes_next_, 1);
        __builtin_prefetch(self->cancel_hook::next_, 1);
        __builtin_prefetch(self->cancel_hook::prev_, 1);
        self->loop_->schedule(self->handle_);
    }

    static void on_cancelled(cancel_hook* c) noexcept {
        auto* self = static_cast<socket_op*>(c);
        if (self->done_) return;  // finished, not resumed yet: nothing to cut short
        self->cancel_sent_ = true;
        try {
            self->loop_->cancel_op(self);
        } catch (...) {
            // No SQE could be had (a broken ring): the operation still
            // completes on its own; it is just not cut short.
        }
    }

    Prep prep_;
    loop* loop_ = nullptr;
    std::coroutine_handle<> handle_;
    void* resumes_next_ = nullptr;  // the frame this coroutine returns to
    int res_ = 0;
    bool done_ = false;
    bool cancelled_early_ = false;
    bool cancel_sent_ = false;
};

}  // namespace tandem::detail
