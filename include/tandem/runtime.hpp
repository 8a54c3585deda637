// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The runtime: one io_uring event loop per io thread.

#include <tandem/detail/loop_api.hpp>
#include <tandem/process.hpp>
#include <tandem/task.hpp>

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>

namespace tandem {

/// What the event loops wait with.
enum class io_backend : unsigned char {
    /// io_uring where this process can use it, else epoll (an option, never what runs).
    automatic,
    /// io_uring: one ring per io thread. If it cannot be set up, construction throws.
    io_uring,
    /// epoll readiness, for where io_uring is blocked (Docker's default seccomp profile) or
    /// missing. Same API and semantics: sockets, timers, cancellation, offload completions;
    /// file operations run on offload_to_thread's pool. Slower per operation than io_uring.
    epoll,
};

/// "automatic", "io_uring" or "epoll".
const char* to_string(io_backend b) noexcept;

struct runtime_options {
    unsigned io_threads = 1;       ///< event loops, one thread and one io_uring each
    unsigned ring_entries = 1024;  ///< submission queue size of each ring (io_uring)
    process_pool_options processes{};
    unsigned blocking_threads = 0;  ///< offload_to_thread's pool; 0: max(2, cores)
    /// `automatic` probes io_uring at construction (a ring, a NOP under the live seccomp
    /// policy, the opcodes and registrations tandem uses) and falls back to epoll, saying
    /// why in one line on stderr (once per process), when io_uring is blocked or lacking.
    io_backend backend = io_backend::automatic;
};

/// The backend a runtime runs (never `automatic`) and why it was chosen.
struct backend_info {
    io_backend kind = io_backend::io_uring;
    std::string reason;  ///< e.g. "io_uring_setup failed with EPERM (...): ..."
};

namespace detail {

class thread_pool;                            // detail/thread_pool.hpp
thread_pool& current_thread_pool() noexcept;  // offload_to_thread's pool
class process_pool_impl;                      // lib/process/pool.hpp
process_pool_impl& current_pool(const char* what);

/// How a root reaches its loop: posted from any thread, run on the loop.
struct root_start : posted_item {
    std::coroutine_handle<> handle;
    stop_node* node = nullptr;
    loop* target = nullptr;
};

/// A detached coroutine started on a loop: it registers with the loop (so
/// shutdown can cancel and await it) and frees itself when it finishes.
class root_task {
public:
    struct promise_type : promise_base {
        stop_node node_;
        root_start start_;

        promise_type() noexcept { stop_ = &node_; }
        ~promise_type();  // tells the loop this root is gone
        root_task get_return_object() noexcept {
            return root_task(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_never final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }
    };

    explicit root_task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    std::coroutine_handle<promise_type> handle() const noexcept { return h_; }

private:
    std::coroutine_handle<promise_type> h_;
};

/// Starts `root` on `target` (any thread). The root owns itself from here on.
void start_root(loop& target, root_task root) noexcept;

/// Where block_on's caller waits for the result.
template <class T>
class blocking_result {
public:
    void set_value(non_void_t<T> v) { value_.emplace(std::move(v)); }
    void set_error(std::exception_ptr e) noexcept { error_ = std::move(e); }
    void notify() noexcept {
        // Notify while holding the lock: the waiter may destroy *this as soon
        // as it can take the lock again.
        std::lock_guard lock(mutex_);
        done_ = true;
        cv_.notify_one();
    }
    T wait() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return done_; });
        if (error_) std::rethrow_exception(error_);
        if constexpr (!std::is_void_v<T>) return std::move(*value_);
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::optional<non_void_t<T>> value_;
    std::exception_ptr error_;
};

template <class T>
root_task blocking_root(task<T> t, blocking_result<T>* out) {
    {
        // The task's frame, and the exception it may hold, go before the waiter
        // wakes: nothing of the task is released while the waiter reads it.
        task<T> inner = std::move(t);
        try {
            if constexpr (std::is_void_v<T>) {
                co_await std::move(inner);
                out->set_value({});
            } else {
                out->set_value(co_await std::move(inner));
            }
        } catch (...) {
            out->set_error(std::current_exception());
        }
    }
    out->notify();  // the last touch of *out
}

}  // namespace detail

/// Owns the io threads and their loops, and the process pool.
///
/// - Construction first chooses the backend (`runtime_options::backend`),
///   then makes the process pool (unless `processes.enabled` is false): the
///   shared arena, the zygote and the workers, before any thread starts, so
///   that they inherit nothing of the io threads. Then it starts `io_threads`
///   threads, each with its own io_uring (SINGLE_ISSUER | DEFER_TASKRUN |
///   COOP_TASKRUN where the kernel has them) or epoll instance. If io_uring
///   was asked for and cannot be set up, it throws `std::system_error` naming
///   the errno, the likely cause and the fix; a pool that cannot be made
///   throws `std::system_error` (or `std::invalid_argument` for options that
///   cannot work).
/// - Destruction cancels every task still running, waits for each to finish
///   (and for every kernel completion they wait on), then joins the threads,
///   then kills and reaps the workers and the zygote. Tasks that ignore
///   cancellation (compute forever) make it wait forever.
class runtime {
public:
    explicit runtime(runtime_options options = {});
    ~runtime();
    runtime(const runtime&) = delete;
    runtime& operator=(const runtime&) = delete;

    /// Runs `t` on one of the loops and blocks the calling thread until it
    /// finishes; returns its value or rethrows its exception. Must not be
    /// called from an io thread (that would deadlock: it aborts instead).
    template <class T>
    T block_on(task<T> t) {
        detail::blocking_result<T> result;
        detail::start_root(pick_loop_for_block_on(), detail::blocking_root(std::move(t), &result));
        return result.wait();
    }

    /// Starts `t` detached. Called from a task on one of this runtime's io
    /// threads, it runs on that thread's loop; from any other thread, loops are
    /// chosen round-robin. An exception escaping `t` is printed on stderr
    /// (`operation_cancelled` silently ends it). Thread-safe.
    void spawn(task<> t);

    /// Number of io threads (event loops).
    unsigned io_threads() const noexcept;

    /// The runtime whose io thread is calling, or null.
    static runtime* current() noexcept;

    /// Which flags the rings were set up with, for diagnostics ("SINGLE_ISSUER|...";
    /// "epoll" on that backend).
    const char* ring_features() const noexcept;

    /// The backend the io threads run and why (fixed for the runtime's life).
    const backend_info& backend() const noexcept;

    /// The process pool behind offload_to_process (`enabled()` is false when
    /// the runtime was made with `processes.enabled = false`). Lives as long
    /// as the runtime.
    process_pool& processes() noexcept;

private:
    friend detail::loop* detail_loop_of(runtime&, unsigned) noexcept;
    friend detail::thread_pool& detail::current_thread_pool() noexcept;
    friend detail::process_pool_impl& detail::current_pool(const char*);
    detail::loop& pick_loop_for_block_on();
    detail::loop& pick_loop_for_spawn();

    struct impl;
    std::unique_ptr<impl> impl_;
};

/// Internal (tests, benchmarks): the loop of io thread `index`.
detail::loop* detail_loop_of(runtime& rt, unsigned index) noexcept;

/// Creates a runtime with `options`, runs `t` to completion on it, destroys the
/// runtime and returns `t`'s value (or rethrows), like Python's asyncio.run.
template <class T>
T run(task<T> t, runtime_options options = {}) {
    runtime rt(options);
    return rt.block_on(std::move(t));
}

}  // namespace tandem
