// SPDX-License-Identifier: MIT
#pragma once

// What offload_to_process (process.hpp) needs from the pool in lib/process/.
// Not part of the API.
//
//   parent task                                         worker process
//   ───────────                                         ──────────────
//   offload_job job{trampoline, &fn}
//   co_await job.reserve(n)  ── waits for a slot and n bytes of arena (backpressure)
//   encode args into job.args_encoder()
//   co_await job.submit()       ── slot index ─▶ submit ring ─▶ run_in_worker<F, R, Args...>:
//                                                           decode args, call fn, encode
//                                                           the result into result_space()
//                            ◀─ slot index ─ done ring ◀──┘ (or the exception's type + text)
//   decode the result from job.result_decoder(); ~offload_job frees the slot

#include <tandem/codec.hpp>
#include <tandem/detail/loop_api.hpp>
#include <tandem/detail/stop_node.hpp>

#include <array>
#include <bit>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace tandem::detail {

/// The largest callable offload_to_process accepts (it is copied into the job's slot).
inline constexpr std::size_t max_callable_bytes = 64;

/// A worker's view of the job it runs: handed to the job's trampoline, which
/// lives in the same binary image in every process. Worker side only.
class worker_job {
public:
    const std::byte* args() const noexcept { return args_; }
    std::size_t args_size() const noexcept { return args_size_; }
    const std::byte* callable() const noexcept { return callable_; }

    /// Where to encode a result of `n` bytes: the job's own region when it is
    /// large enough, otherwise a block the parent allocates while this worker
    /// waits. Throws payload_too_large when the arena can never hold `n`.
    std::byte* result_space(std::size_t n);
    /// The result is encoded: `n` bytes at what result_space returned.
    void result_written(std::size_t n) noexcept;
    /// Records the exception being handled (its type name and what()) as the
    /// job's outcome. Call from a catch block only.
    void fail_with_current_exception() noexcept;

    // Filled in by the worker loop (lib/process/worker.cpp).
    const std::byte* args_ = nullptr;
    std::size_t args_size_ = 0;
    const std::byte* callable_ = nullptr;
    void* context_ = nullptr;
};

using job_trampoline = void (*)(worker_job&) noexcept;

/// Runs in a worker: decodes Args, calls the F whose bytes the parent copied
/// into the slot, encodes the R it returns. Every exception (decoding,
/// fn itself, encoding) becomes the job's outcome.
template <class F, class R, class... Args>
void run_in_worker(worker_job& job) noexcept {
    try {
        decoder d(job.args(), job.args() + job.args_size());
        // A braced list evaluates left to right, matching the encoding order.
        std::tuple<Args...> args{decode<Args>(d)...};
        if (d.remaining() != 0) throw_decode_error("arguments left unread");
        std::array<std::byte, sizeof(F)> raw;
        std::memcpy(raw.data(), job.callable(), sizeof(F));
        F fn = std::bit_cast<F>(raw);
        if constexpr (std::is_void_v<R>) {
            std::apply(fn, std::move(args));
            job.result_written(0);
        } else {
            R result = std::apply(fn, std::move(args));
            const std::size_t n = encoded_size(result);
            std::byte* out = job.result_space(n);
            encoder e(out, out + n);
            encode(e, result);
            job.result_written(e.size());
        }
    } catch (...) {
        job.fail_with_current_exception();
    }
}

class process_pool_impl;  // lib/process/pool.hpp

/// One offloaded call, from the parent's side. Lives in the awaiting frame;
/// the pool links it into its queues and never allocates or frees it.
/// The fields below belong to the pool (lib/process/pool.cpp).
class offload_job : public posted_item, public cancel_hook {
public:
    /// Binds to the current runtime's pool. Aborts off an io thread; throws
    /// std::logic_error when the pool is disabled.
    offload_job(job_trampoline trampoline, const void* callable, std::size_t callable_size);
    ~offload_job();  // release()
    offload_job(const offload_job&) = delete;
    offload_job& operator=(const offload_job&) = delete;

    /// Waits for a slot and `args_bytes` of arena (FIFO with the other
    /// waiters). Throws payload_too_large if the arena can never hold them,
    /// operation_cancelled if the task is cancelled while waiting.
    struct [[nodiscard]] reserve_awaiter {
        offload_job* job;
        bool await_ready();
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            return job->suspend(h, stop_of(h));
        }
        void await_resume() { job->resume_or_throw(); }
    };
    reserve_awaiter reserve(std::size_t args_bytes) noexcept {
        args_need = args_bytes;
        return {this};
    }

    /// The reserved region, for the caller to encode the arguments into.
    encoder args_encoder() const noexcept { return {args_region, args_region + args_capacity}; }
    void set_args_size(std::size_t n) noexcept { args_size = n; }

    /// Sends the job and waits for its outcome. Throws remote_error,
    /// worker_crashed, payload_too_large, operation_cancelled.
    struct [[nodiscard]] run_awaiter {
        offload_job* job;
        bool await_ready() const noexcept { return false; }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            return job->dispatch(h, stop_of(h));
        }
        void await_resume() { job->resume_or_throw(); }
    };
    run_awaiter submit() noexcept { return {this}; }

    /// The result's bytes, after submit() returned.
    decoder result_decoder() const noexcept { return {result, result + result_size}; }

    /// Frees the slot and arena blocks (idempotent; the destructor calls it).
    void release() noexcept;

    // ---- the pool's fields ----------------------------------------------------
    enum class phase : std::uint8_t { idle, waiting, pending, dispatched, asking_space, finished };
    enum class outcome : std::uint8_t { none, value, remote_error, crashed, cancelled, too_large };

    process_pool_impl* pool = nullptr;
    loop* owner = nullptr;
    std::coroutine_handle<> handle;
    job_trampoline trampoline;
    const void* callable;
    std::size_t callable_size;
    std::size_t args_need = 0;
    std::byte* args_region = nullptr;
    std::size_t args_capacity = 0;
    std::size_t args_size = 0;
    const std::byte* result = nullptr;
    std::size_t result_size = 0;
    std::uint32_t slot = UINT32_MAX;
    std::int32_t worker = -1;
    phase state = phase::idle;
    outcome end = outcome::none;
    std::string message;
    offload_job* next_job = nullptr;
    offload_job* prev_job = nullptr;

private:
    bool suspend(std::coroutine_handle<> h, stop_node* node);
    bool dispatch(std::coroutine_handle<> h, stop_node* node);
    void resume_or_throw();
};

}  // namespace tandem::detail
