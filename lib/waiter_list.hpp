// SPDX-License-Identifier: MIT
#pragma once

// A FIFO of tasks parked on one loop until something they wait for is handed
// to them (a connection accepted, a pooled connection freed). Private header.
//
// Users derive their waiter from `waiter` (adding what is handed over), keep a
// `waiter_list`, and `co_await list.wait(w)`. A cancelled task leaves the list
// and resumes with `w.cancelled` set; a woken one is taken off the list first,
// so it is never woken twice. Loop thread only; nothing is resumed inline.

#include <tandem/task.hpp>

#include "loop.hpp"

#include <coroutine>

namespace tandem::detail {

class waiter_list;

struct waiter : cancel_hook {
    std::coroutine_handle<> handle;
    waiter_list* list = nullptr;  // null once off the list
    waiter* next = nullptr;
    waiter* prev = nullptr;
    bool cancelled = false;
};

class waiter_list {
public:
    loop* owner = nullptr;

    bool empty() const noexcept { return head_ == nullptr; }
    /// The longest-waiting task, or null.
    waiter* front() const noexcept { return head_; }

    /// Takes `w` off the list and schedules it on the owner loop.
    void wake(waiter* w) noexcept {
        remove(w);
        w->cancel_hook::unlink();
        owner->schedule(w->handle);
    }

    struct [[nodiscard]] wait_awaiter {
        waiter_list* list;
        waiter* w;
        bool await_ready() const noexcept { return false; }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) noexcept {
            w->handle = h;
            if (stop_node* node = stop_of(h); node != nullptr) {
                w->on_cancel = &on_cancelled;
                if (!node->link(w)) {  // already stopped: resume at once, cancelled
                    w->cancelled = true;
                    return false;
                }
            }
            list->push(w);
            return true;
        }
        void await_resume() const noexcept {}
    };
    /// Parks the calling task in the FIFO until woken or cancelled.
    wait_awaiter wait(waiter& w) noexcept { return {this, &w}; }

private:
    void push(waiter* w) noexcept {
        w->list = this;
        w->prev = tail_;
        w->next = nullptr;
        (tail_ != nullptr ? tail_->next : head_) = w;
        tail_ = w;
    }

    void remove(waiter* w) noexcept {
        (w->prev != nullptr ? w->prev->next : head_) = w->next;
        (w->next != nullptr ? w->next->prev : tail_) = w->prev;
        w->next = w->prev = nullptr;
        w->list = nullptr;
    }

    static void on_cancelled(cancel_hook* hook) noexcept {
        auto* w = static_cast<waiter*>(hook);
        waiter_list* list = w->list;
        if (list == nullptr) return;
        list->remove(w);
        w->cancelled = true;
        list->owner->schedule(w->handle);
    }

    waiter* head_ = nullptr;
    waiter* tail_ = nullptr;
};

}  // namespace tandem::detail
