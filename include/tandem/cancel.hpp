// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Cancellation. It is cooperative: cancelling a task makes its pending and
/// future awaitables end with `tandem::operation_cancelled`; an in-flight
/// kernel operation is cancelled with IORING_OP_ASYNC_CANCEL, and its buffers
/// and frame stay alive until the kernel's completion arrives. A cancelled
/// operation resumes its coroutine exactly once: with its real result if the
/// kernel finished it first, otherwise with `operation_cancelled`.
///
/// Sources of cancellation: `when_any` (the losers), `timeout`, `task_group`
/// (a failed sibling), `with_stop_token`, and runtime destruction.

#include <tandem/detail/loop_api.hpp>
#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include <atomic>
#include <stop_token>

namespace tandem {

namespace detail {

/// Carries a std::stop_source's request, made on any thread, to a stop node
/// on its loop. The shared part is refcounted because a posted request can
/// still be queued when the awaiting frame is gone.
class stop_token_bridge {
public:
    explicit stop_token_bridge(stop_node* node);
    ~stop_token_bridge();
    stop_token_bridge(const stop_token_bridge&) = delete;
    stop_token_bridge& operator=(const stop_token_bridge&) = delete;

    /// Called by std::stop_callback, on whichever thread requested the stop.
    void request() noexcept;

private:
    struct shared;
    shared* shared_;
};

struct bridge_callback {
    stop_token_bridge* bridge;
    void operator()() const noexcept { bridge->request(); }
};

}  // namespace detail

/// Runs `inner`, cancelling it when `token`'s stop source requests a stop (from
/// any thread). The request reaches the task on its own loop; the result is
/// `operation_cancelled` from whatever `inner` was awaiting. Cancelling the
/// caller also cancels `inner`. Loop threads only.
template <class T>
task<T> with_stop_token(std::stop_token token, task<T> inner) {
    detail::stop_node node(co_await detail::get_stop_node{});
    detail::stop_token_bridge bridge(&node);
    std::stop_callback<detail::bridge_callback> callback(token, detail::bridge_callback{&bridge});
    co_return co_await detail::bind_stop(std::move(inner), &node);
}

}  // namespace tandem
