// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Sleeping and deadlines. Timers live in a per-loop heap in user space; the
/// loop waits in io_uring with a single timeout for the nearest deadline, so a
/// sleeping task costs one heap entry and no kernel object (README: 100,000
/// sleepers, heap vs one IORING_OP_TIMEOUT each).

#include <tandem/detail/loop_api.hpp>
#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include <chrono>

namespace tandem {

/// Suspends the calling task for at least `d` (a zero or negative `d` still
/// lets the loop turn once). Resumes on the caller's loop. A cancellation
/// point: throws `operation_cancelled` if the caller is cancelled before or
/// during the sleep, and then returns at once. Loop threads only.
task<> sleep_for(std::chrono::nanoseconds d);

/// As sleep_for, until `deadline` on the steady clock.
task<> sleep_until(std::chrono::steady_clock::time_point deadline);

namespace detail {

/// now + d, saturated: `sleep_for(nanoseconds::max())` means "forever", not
/// a signed overflow into the past.
inline std::chrono::steady_clock::time_point deadline_after(std::chrono::nanoseconds d) noexcept {
    auto now = std::chrono::steady_clock::now();
    if (d > std::chrono::steady_clock::time_point::max() - now) {
        return std::chrono::steady_clock::time_point::max();
    }
    return now + d;
}

/// Requests stop on a node when its deadline passes. Loop thread only; the
/// timer is disarmed when the object dies.
class deadline_stop {
public:
    deadline_stop(stop_node* node, std::chrono::steady_clock::time_point when) : node_(node) {
        timer_.deadline = when;
        timer_.fire = &on_fire;
        timer_arm(&timer_);
    }
    ~deadline_stop() { timer_cancel(&timer_); }
    deadline_stop(const deadline_stop&) = delete;
    deadline_stop& operator=(const deadline_stop&) = delete;

    bool fired() const noexcept { return fired_; }

private:
    static void on_fire(timer_node* t) noexcept {
        // timer_ is the first member: the node's address is the object's.
        auto* self = reinterpret_cast<deadline_stop*>(t);
        self->fired_ = true;
        self->node_->request_stop();
    }

    timer_node timer_;
    stop_node* node_;
    bool fired_ = false;
};

}  // namespace detail

/// Runs `inner`; if it has not finished after `d`, cancels it, waits for it to
/// finish and throws `tandem::timed_out`. If `inner` still produced a value
/// after the deadline (its last operation completed before the cancellation
/// reached it), that value is returned: nothing is lost. Exceptions from
/// `inner` propagate. Cancelling the caller cancels `inner` and throws
/// `operation_cancelled`, not `timed_out`. Loop threads only.
template <class T>
task<T> timeout(std::chrono::nanoseconds d, task<T> inner) {
    detail::stop_node* parent = co_await detail::get_stop_node{};
    detail::stop_node node(parent);
    detail::deadline_stop deadline(&node, detail::deadline_after(d));
    try {
        co_return co_await detail::bind_stop(std::move(inner), &node);
    } catch (const operation_cancelled&) {
        if (deadline.fired() && !(parent != nullptr && parent->stop_requested())) {
            throw timed_out();
        }
        throw;
    }
}

}  // namespace tandem
