// SPDX-License-Identifier: MIT
#pragma once

// The helper coroutine under when_all / when_any: it awaits one user task,
// stores the outcome into a slot owned by the combinator's frame, and on its
// final suspend counts down a join_state, resuming the combinator after the
// last child (symmetric transfer, never a nested resume from a loop).

#include <tandem/task.hpp>

#include <cstddef>
#include <exception>
#include <optional>

namespace tandem::detail {

/// Starts at children + 1: the extra count belongs to the combinator while it
/// starts the children, so a child finishing synchronously cannot resume it
/// from inside its own await_suspend.
struct join_state {
    std::size_t remaining;
    std::coroutine_handle<> waiter{};

    /// Returns the coroutine to transfer to when one count is dropped.
    std::coroutine_handle<> arrive() noexcept {
        return --remaining == 0 ? waiter : std::noop_coroutine();
    }
};

/// One child's outcome: a value (void becomes monostate) or an exception.
template <class T>
struct result_slot {
    std::optional<non_void_t<T>> value;
    std::exception_ptr error;

    non_void_t<T> take() {
        if (error) std::rethrow_exception(error);
        return std::move(*value);
    }
};

class child_task {
public:
    struct promise_type : promise_base {
        join_state* join_ = nullptr;

        child_task get_return_object() noexcept {
            return child_task(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct final_arrive {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<> await_suspend(
                std::coroutine_handle<promise_type> h) const noexcept {
                return h.promise().join_->arrive();
            }
            void await_resume() const noexcept {}
        };
        final_arrive final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept {
            // child bodies catch everything into their slot
            std::terminate();
        }
    };

    child_task() noexcept = default;
    explicit child_task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    child_task(child_task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    child_task& operator=(child_task&& o) noexcept {
        if (this != &o) {
            if (h_) h_.destroy();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    ~child_task() {
        if (h_) h_.destroy();
    }

    /// Runs the child until its first suspension, answering to `node`.
    void start(join_state* join, stop_node* node) noexcept {
        h_.promise().join_ = join;
        h_.promise().stop_ = node;
        h_.resume();
    }

private:
    std::coroutine_handle<promise_type> h_;
};

/// Awaits one user task into `slot`. Pointers, not references: the slot and
/// the join state live in the combinator's frame, which outlives the child.
template <class T>
child_task run_child(task<T> t, result_slot<T>* slot) {
    try {
        if constexpr (std::is_void_v<T>) {
            co_await std::move(t);
            slot->value.emplace();
        } else {
            slot->value.emplace(co_await std::move(t));
        }
    } catch (...) {
        slot->error = std::current_exception();
    }
}

/// Suspends the combinator until every started child has arrived.
struct join_all {
    join_state* join_;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) const noexcept {
        join_->waiter = h;
        return join_->arrive() != h;  // drop the combinator's own count
    }
    void await_resume() const noexcept {}
};

}  // namespace tandem::detail
