// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Blocking calls off the event loop: `offload_to_thread` runs a call that has
/// no io_uring form (getaddrinfo, a blocking library, a short CPU burst) on a
/// small per-runtime thread pool and lets a task `co_await` its result.

#include <tandem/detail/thread_pool.hpp>
#include <tandem/task.hpp>

#include <functional>
#include <type_traits>
#include <utility>

namespace tandem {

/// Runs `fn(args...)` on one of the current runtime's blocking threads and
/// returns its result (`void` allowed) to the awaiting task.
///
/// - Lifetime: `fn` and `args` are taken by value and live in the coroutine
///   frame until the call has finished; the pool thread invokes them as
///   rvalues (`std::invoke(std::move(fn), std::move(args)...)`). Pass pointers
///   or `std::ref` only to objects that outlive the `co_await`. `fn` may be any
///   movable callable (a capturing lambda is fine: it is not a coroutine). It
///   must return by value: a reference result does not compile.
///   g++ 12.2 bug (clang is not affected): a capturing lambda with a
///   non-trivially-copyable capture (a std::string, a shared_ptr) written
///   inside the `co_await` expression is copied bitwise into the caller's
///   frame; its destructor then frees a bad pointer. Build such a callable in
///   a named variable first (`auto f = [s] {...};`, then
///   `co_await offload_to_thread(std::move(f))`) or
///   pass the value as an argument (`offload_to_thread(fn, s)`).
/// - Threads: `fn` runs on a pool thread, never on an io thread, so it may
///   block as long as it likes without stalling any loop; the caller resumes on
///   its own loop (the result is posted there, never resumed on the pool
///   thread). The pool has `runtime_options::blocking_threads` threads at most
///   (0: max(2, cores)), started on first use and joined when the runtime is
///   destroyed. Jobs beyond that wait in a FIFO queue; a queued job costs no
///   allocation (it is a node in the waiting frame), so the queue holds as
///   many jobs as there are tasks waiting on it. `fn` must not use tandem
///   awaitables (it is not on a loop); thread-local state differs per call.
/// - Errors: an exception thrown by `fn` (or by moving its result) is rethrown
///   as is, same type and object, in the awaiting task. If no pool thread
///   exists and none can be started, `std::system_error` is thrown.
/// - Cancellation: a cancellation point while the job is queued: if the
///   awaiting task is cancelled (timeout, when_any, task_group, shutdown)
///   before a pool thread has taken the job, the job is removed, `fn` never
///   runs and `operation_cancelled` is thrown. Once `fn` is running it cannot
///   be interrupted: the task keeps waiting and gets `fn`'s real result or
///   exception (so `timeout(d, offload_to_thread(...))` may return late with
///   the value). A task already cancelled when it awaits throws at once.
/// - Shutdown: destroying the runtime cancels its tasks; those waiting on a
///   running call wait for it to return, so a call that never returns makes
///   the runtime's destructor wait forever.
/// - Loop threads only (aborts with a message elsewhere).
template <class F, class... Args>
task<std::invoke_result_t<F, Args...>> offload_to_thread(F fn, Args... args) {
    using result = std::invoke_result_t<F, Args...>;
    static_assert(!std::is_reference_v<result>,
                  "offload_to_thread: fn must return by value (a reference would dangle)");
    static_assert(std::is_void_v<result> || std::is_move_constructible_v<result>,
                  "offload_to_thread: fn's result must be movable");
    // fn and args live in this frame; the thunk refers to them from the pool thread.
    auto thunk = [&fn, &args...]() -> result {
        return std::invoke(std::move(fn), std::move(args)...);
    };
    if constexpr (std::is_void_v<result>) {
        co_await detail::blocking_call<result, decltype(thunk)>(std::move(thunk));
    } else {
        co_return co_await detail::blocking_call<result, decltype(thunk)>(std::move(thunk));
    }
}

}  // namespace tandem
