// SPDX-License-Identifier: MIT
#pragma once

// The blocking-call pool behind offload_to_thread (thread.hpp). Not part of the API.
//
//   loop thread                          pool thread
//   ───────────                          ───────────
//   blocking_wait::start ── submit ─▶ FIFO of pool_jobs (intrusive, in the
//     (links a cancel hook)              awaiting frames; mutex + condvar)
//                                        pop: state queued ─▶ taken
//                                        execute: run fn, store the result
//                                        in the frame, post(loop, done item)
//   on_done (posted item): unlink the ◀──┘
//   hook, schedule the coroutine
//
//   cancel hook (loop thread): under the pool mutex, a job still `queued` is
//   unlinked and marked `cancelled` (it never runs; the coroutine is scheduled
//   with operation_cancelled); a job already `taken` cannot be stopped, so the
//   hook does nothing and the real result arrives through on_done as usual.
//   The state field, read and written only under the mutex, decides the race
//   between the hook and a worker dequeuing the same job.
//
// Limits: at most max_threads() threads, started lazily (one more whenever a
// job is queued and no worker is idle) and kept until the runtime is
// destroyed. The queue has no fixed bound but owns no memory: every queued job
// is a node inside a suspended task's frame, so it holds as many jobs as the
// program has tasks waiting on offload_to_thread.

#include <tandem/detail/loop_api.hpp>
#include <tandem/detail/stop_node.hpp>
#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace tandem::detail {

/// One blocking call, queued on or running in a thread_pool. Lives in the
/// awaiting coroutine's frame; the pool never allocates or frees it.
struct pool_job {
    enum class state : unsigned char { idle, queued, taken, cancelled };

    /// Runs on a pool thread. Its last act may free the job (it posts the
    /// result to the waiter's loop), so the pool never touches it afterwards.
    void (*execute)(pool_job*) noexcept = nullptr;
    pool_job* next_job_ = nullptr;
    pool_job* prev_job_ = nullptr;
    state state_ = state::idle;  // guarded by the pool's mutex
};

/// A lazily started pool of threads for blocking calls (one per runtime).
/// Every member function is thread-safe.
class thread_pool {
public:
    /// `max_threads` 0 means max(2, std::thread::hardware_concurrency()).
    explicit thread_pool(unsigned max_threads);
    ~thread_pool();  // stop()
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    /// Queues `job` (FIFO) and starts a thread if none is idle and the limit
    /// allows. Throws std::system_error (and queues nothing) only when no
    /// thread exists and none can be started.
    void submit(pool_job* job);

    /// True if `job` was still queued: it is removed and will never run.
    /// False if a thread has taken it (it runs to the end).
    bool cancel(pool_job* job) noexcept;

    /// Lets the threads finish the queue, then joins them. Idempotent. The
    /// runtime calls it once its loops have stopped, when nothing can be queued.
    void stop() noexcept;

    unsigned max_threads() const noexcept { return max_threads_; }
    /// Threads started so far (they stay until stop()).
    unsigned threads_started() const;

private:
    void worker_main() noexcept;

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    pool_job* head_ = nullptr;
    pool_job* tail_ = nullptr;
    std::size_t queued_ = 0;
    unsigned idle_ = 0;  // threads waiting on wake_
    bool stopping_ = false;
    unsigned max_threads_;
    std::vector<std::thread> threads_;
};

/// The pool of the runtime whose io thread calls; aborts off io threads.
thread_pool& current_thread_pool() noexcept;

/// The part of offload_to_thread's awaiter that does not depend on the
/// callable: queuing, cancellation and the hop back to the waiter's loop.
class blocking_wait : public pool_job, public posted_item, public cancel_hook {
public:
    bool await_ready() const noexcept { return false; }

    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        return start(h, stop_of(h));
    }

protected:
    explicit blocking_wait(void (*exec)(pool_job*) noexcept) noexcept { execute = exec; }
    ~blocking_wait() = default;
    blocking_wait(const blocking_wait&) = delete;
    blocking_wait& operator=(const blocking_wait&) = delete;

    /// Pool thread, after the result is stored: hands the job back to the
    /// waiter's loop. The frame may be gone when this returns.
    void finish() noexcept { post(*loop_, this); }

    /// Loop thread, in await_resume: throws what the call ended with.
    void rethrow_failure() const {
        if (cancelled_) throw operation_cancelled();
        if (error_) std::rethrow_exception(error_);
    }

    std::exception_ptr error_;

private:
    bool start(std::coroutine_handle<> h, stop_node* node);
    static void on_done(posted_item* item) noexcept;
    static void on_cancel_requested(cancel_hook* hook) noexcept;

    thread_pool* pool_ = nullptr;
    loop* loop_ = nullptr;
    std::coroutine_handle<> handle_;
    bool cancelled_ = false;
};

/// The awaiter for one call of `thunk()` (which returns R) on a pool thread.
template <class R, class Thunk>
class [[nodiscard]] blocking_call final : public blocking_wait {
public:
    explicit blocking_call(Thunk thunk) noexcept(std::is_nothrow_move_constructible_v<Thunk>)
        : blocking_wait(&run_on_pool), thunk_(std::move(thunk)) {}

    R await_resume() {
        rethrow_failure();
        if constexpr (!std::is_void_v<R>) return std::move(*value_);
    }

private:
    static void run_on_pool(pool_job* job) noexcept {
        auto* self = static_cast<blocking_call*>(static_cast<blocking_wait*>(job));
        try {
            if constexpr (std::is_void_v<R>) {
                self->thunk_();
            } else {
                self->value_.emplace(self->thunk_());
            }
        } catch (...) {
            self->error_ = std::current_exception();
        }
        self->finish();  // the last touch of *self
    }

    Thunk thunk_;
    std::optional<non_void_t<R>> value_;
};

}  // namespace tandem::detail
