// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `tandem::task_group`: structured concurrency on the current loop.

#include <tandem/task.hpp>

#include <cstddef>
#include <exception>

namespace tandem {

namespace detail {
struct group_state;
}

/// Runs spawned tasks concurrently on the current loop; `join()` waits for all.
///
/// - Threading: `spawn` and `join` must be called from a task on an io thread;
///   children run on that thread's loop.
/// - Errors: the first child to throw cancels the others; `join()` waits for
///   every child and then rethrows that first exception. Cancellations that
///   follow it are not reported.
/// - Cancellation: once `join()` is awaited, cancelling the awaiter cancels the
///   children. Children spawned after the group was cancelled start cancelled.
/// - Lifetime: destroying a group whose children are still running (the parent
///   threw before `join()`) cancels them; they finish in the background and the
///   runtime waits for them at shutdown.
class task_group {
public:
    task_group();
    ~task_group();
    task_group(const task_group&) = delete;
    task_group& operator=(const task_group&) = delete;

    /// Starts `t` on the next turn of the current loop. Never suspends.
    void spawn(task<> t);

    /// Waits until every spawned task has finished; rethrows the first failure.
    /// Tasks may be spawned while a join is pending; the join waits for them too.
    task<> join();

    /// Number of spawned tasks that have not finished.
    std::size_t running() const noexcept;

private:
    detail::group_state* state_;
};

}  // namespace tandem
