// SPDX-License-Identifier: MIT
#include <tandem/time.hpp>

#include "loop.hpp"

namespace tandem {

namespace {

/// A sleeping task: one entry in its loop's timer heap, plus a cancel hook
/// that takes it out again. Either the timer fires or the hook runs, never
/// both: each unlinks the other before it schedules the coroutine.
class sleep_awaiter : detail::timer_node, detail::cancel_hook {
public:
    explicit sleep_awaiter(std::chrono::steady_clock::time_point when) noexcept { deadline = when; }

    bool await_ready() const noexcept { return false; }

    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        detail::stop_node* node = detail::stop_of(h);
        if (node != nullptr && node->stop_requested()) {
            cancelled_ = true;
            return false;
        }
        loop_ = &detail::require_loop("sleep_for / sleep_until");
        handle_ = h;
        fire = &on_fire;
        loop_->timer_arm(this);
        if (node != nullptr) {
            on_cancel = &on_cancelled;
            node->link(this);
        }
        return true;
    }

    void await_resume() const {
        if (cancelled_) throw operation_cancelled();
    }

private:
    static void on_fire(detail::timer_node* t) noexcept {
        auto* self = static_cast<sleep_awaiter*>(t);
        self->detail::cancel_hook::unlink();
        self->loop_->schedule(self->handle_);
    }

    static void on_cancelled(detail::cancel_hook* c) noexcept {
        auto* self = static_cast<sleep_awaiter*>(c);
        self->loop_->timer_cancel(self);
        self->cancelled_ = true;
        self->loop_->schedule(self->handle_);
    }

    detail::loop* loop_ = nullptr;
    std::coroutine_handle<> handle_;
    bool cancelled_ = false;
};

}  // namespace

task<> sleep_until(std::chrono::steady_clock::time_point deadline) {
    co_await sleep_awaiter(deadline);
}

task<> sleep_for(std::chrono::nanoseconds d) {
    co_await sleep_awaiter(detail::deadline_after(d));
}

}  // namespace tandem
