// SPDX-License-Identifier: MIT
#pragma once

// One io_uring operation awaited by a coroutine (private header).
//
// The awaitable lives in the awaiting coroutine's frame: the SQE's user_data
// points at it, so there is no allocation per operation. It resumes exactly
// once: with the kernel's result, or with operation_cancelled when the task was
// cancelled before submission or the kernel confirmed the cancellation
// (-ECANCELED / -EINTR after our IORING_OP_ASYNC_CANCEL). Either way it waits
// for the CQE, so buffers and the frame outlive the kernel's use of them.
//
// await_resume returns the raw result (>= 0, or -errno): callers convert
// errors to std::system_error at their edge.
//
// Built for servers with thousands of connections, where an operation
// completes long after it was submitted and everything it touches has left the
// cache (bench/echo_bench.cpp): the completion callback only records the
// result and prefetches what the resumption will touch (this frame, the frame
// it returns to, the neighbours in the cancellation list), and the cancel hook
// is unlinked when the coroutine resumes, by which time those lines have
// arrived. A stop request between completion and resumption finds the hook
// still linked and leaves the finished operation alone: its result stands, as
// it would had the stop come a moment later.

#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include "fault.hpp"
#include "loop.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tandem::detail {

template <class Prep>
class uring_op : completion, cancel_hook {
public:
    explicit uring_op(Prep prep) noexcept(std::is_nothrow_move_constructible_v<Prep>)
        : prep_(std::move(prep)) {}
    ~uring_op() { cancel_hook::unlink(); }  // normally done by await_resume already
    uring_op(const uring_op&) = delete;
    uring_op& operator=(const uring_op&) = delete;

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
#if defined(TANDEM_FAULT_INJECTION)
        makes_fd_ = sqe->opcode == IORING_OP_ACCEPT || sqe->opcode == IORING_OP_OPENAT;
#endif
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
        auto* self = static_cast<uring_op*>(c);
        if (const int injected = fault_hit(fault_point::cqe)) {
#if defined(TANDEM_FAULT_INJECTION)
            if (res >= 0 && self->makes_fd_) ::close(res);  // the fd nobody will get
#endif
            res = -injected;
        }
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
        auto* self = static_cast<uring_op*>(c);
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
#if defined(TANDEM_FAULT_INJECTION)
    bool makes_fd_ = false;
#endif
};

/// Throws std::system_error for a negative result, else returns it.
inline int check(int res, const char* what) {
    if (res < 0) throw std::system_error(-res, std::system_category(), what);
    return res;
}

}  // namespace tandem::detail
