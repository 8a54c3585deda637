// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// CPU offload to a prefork pool of worker processes: `offload_to_process(fn, args...)`
/// runs `fn(args...)` in another process, on another core, and lets a task `co_await` the
/// result. The pool belongs to the runtime (`runtime_options::processes`) and is made before
/// any io thread starts; see lib/process/pool.cpp for the job's path through shared memory.

#include <tandem/codec.hpp>
#include <tandem/detail/offload_job.hpp>
#include <tandem/shared_array.hpp>
#include <tandem/task.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <type_traits>

namespace tandem {

/// Options of the runtime's process pool.
struct process_pool_options {
    unsigned workers = 0;  ///< 0: one per core
    /// The shared arena: job slots plus a heap for arguments, results and shared_arrays
    /// (the largest payload is a little less than this).
    std::size_t arena_bytes = std::size_t{256} << 20;
    unsigned max_jobs_per_worker = 0;  ///< 0: unlimited; else a worker is replaced after this many
    void (*initializer)() = nullptr;   ///< runs once in each worker, before its first job
    bool enabled = true;               ///< false: no arena, no processes
};

/// A snapshot of the pool's counters.
struct process_pool_stats {
    unsigned workers = 0;             ///< configured
    unsigned workers_alive = 0;       ///< running now (started, not yet seen dead)
    std::uint64_t jobs_done = 0;      ///< finished with a value or the job's own exception
    std::uint64_t crashes = 0;        ///< workers that died while running a job (or unexpectedly)
    std::uint64_t kills = 0;          ///< workers killed for a timed-out or cancelled job
    std::uint64_t recycled = 0;       ///< workers retired by max_jobs_per_worker
    std::uint64_t replacements = 0;   ///< workers started to replace one that ended
    std::uint64_t failed_starts = 0;  ///< spawns that failed (fork, initializer)
};

namespace detail {
class process_pool_impl;

/// A concept, so that `void` is never handed to encodable (a disjunction of
/// constraints stops at the first that holds; `||` in an expression does not).
template <class T>
concept void_or_encodable = std::is_void_v<T> || encodable<T>;
}  // namespace detail

/// The runtime's pool of worker processes (`runtime::processes()`). Thread-safe.
class process_pool {
public:
    explicit process_pool(detail::process_pool_impl* impl) noexcept : impl_(impl) {}

    /// The counters, consistent with each other at one instant.
    process_pool_stats stats() const;
    /// False when the runtime was made with `processes.enabled = false`.
    bool enabled() const noexcept { return impl_ != nullptr; }

private:
    detail::process_pool_impl* impl_;
};

/// Runs `fn(args...)` in a worker process of the current runtime's pool and returns its
/// result to the awaiting task.
///
/// - What may cross: `fn` is a function pointer or a trivially copyable callable of at most
///   64 bytes (a lambda capturing numbers by value); it is named by address, since every
///   worker runs the same binary image. Arguments and the result are encoded with
///   `tandem::codec` (see <tandem/codec.hpp>); a `shared_array` passes by handle, without
///   copying. Arguments are taken by value and encoded before the job is sent.
/// - Threads: `fn` runs in a worker, never on an io thread; the caller resumes on its own loop.
///   The loop keeps serving other tasks meanwhile: it picks completions off shared memory
///   between its other work, may spin briefly when nothing else is ready and jobs were
///   returning quickly, and otherwise sleeps in io_uring until a worker signals its eventfd.
/// - Backpressure: a job waits (suspended, in FIFO order) for one of the arena's slots and for
///   room in its heap; nothing is queued without bound.
/// - Errors: an exception thrown by `fn`, or by decoding the arguments or encoding the result
///   in the worker, arrives as `remote_error` naming the original type and message; the same
///   worker then serves the next job. A worker that dies (signal, `_exit`) fails its one job
///   with `worker_crashed` naming the signal or exit status, and is replaced; jobs queued
///   behind it run elsewhere. Arguments or a result too large for the arena throw
///   `payload_too_large`. Exceptions from encoding the arguments or decoding the result in the
///   parent propagate as they are (`decode_error` for bytes that are not a valid encoding).
///   If no worker can be started (fork fails, the initializer throws) after a few tries,
///   waiting jobs fail with `worker_crashed` saying why.
/// - Cancellation: while the job waits for room or for a worker, it is withdrawn and
///   `operation_cancelled` is thrown. Once a worker runs it, cancelling (or `timeout`) kills
///   that worker (SIGKILL) and replaces it; the task resumes at once with
///   `operation_cancelled` (`timed_out` under `timeout`), and the job's slot is reused only
///   after the worker is gone.
/// - Loop threads only (aborts with a message elsewhere); throws std::logic_error when the
///   runtime's pool is disabled.
template <class F, class... Args>
task<std::invoke_result_t<F, Args...>> offload_to_process(F fn, Args... args) {
    using result = std::invoke_result_t<F, Args...>;
    static_assert(std::is_trivially_copyable_v<F>,
                  "offload_to_process: fn must be a function pointer or a trivially copyable "
                  "callable (a lambda capturing numbers by value): it is copied byte for byte "
                  "into another process");
    static_assert(sizeof(F) <= detail::max_callable_bytes,
                  "offload_to_process: the callable is larger than 64 bytes; pass its data as "
                  "arguments instead");
    static_assert(!std::is_reference_v<result>, "offload_to_process: fn must return by value");
    static_assert((encodable<Args> && ...),
                  "offload_to_process: every argument type needs a tandem::codec");
    static_assert(detail::void_or_encodable<result>,
                  "offload_to_process: the result type needs a tandem::codec");

    detail::offload_job job(&detail::run_in_worker<F, result, Args...>, &fn, sizeof(F));
    encoder measure = encoder::measuring();
    (encode(measure, args), ...);
    co_await job.reserve(measure.size());
    encoder e = job.args_encoder();
    (encode(e, args), ...);
    job.set_args_size(e.size());
    co_await job.submit();
    if constexpr (std::is_void_v<result>) {
        co_return;
    } else {
        decoder d = job.result_decoder();
        result value = decode<result>(d);
        if (d.remaining() != 0) detail::throw_decode_error("bytes left after the result");
        job.release();
        co_return value;
    }
}

}  // namespace tandem
