// SPDX-License-Identifier: MIT
#pragma once

// What lives in the shared arena, as both sides see it (the parent in
// pool.cpp, the workers in worker.cpp). Every process maps the arena at the
// same address, so the function pointers in a slot are valid everywhere; the
// parent never follows a pointer or an offset it reads back from here without
// checking it against its own records first (a worker may scribble).
//
//   ┌ arena_header ┬ worker 0 ┬ worker 1 ┬ … ┬ slot 0 ┬ slot 1 ┬ … ┬ heap ……………… ┐
//                   │ control line (futex, sleeping, ready, init_error)
//                   │ submit ring      parent ──slot index──▶ worker
//                   │ done ring × L    worker ──slot index──▶ loop l
//
// A slot holds one job: its state, the trampoline and callable, where its
// arguments are and where its result goes (the slot's inline buffer for small
// payloads, a heap block allocated by the parent for large ones).

#include <tandem/detail/offload_job.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace tandem::detail::shm {

inline constexpr std::uint64_t magic = 0x74616e64656d3031;  // "tandem01"
inline constexpr std::uint32_t ring_capacity = 128;         // a power of two
inline constexpr std::uint32_t max_loops = 64;
inline constexpr std::size_t slot_bytes = 512;
inline constexpr std::size_t cache_line = 64;
inline constexpr std::size_t init_error_bytes = 256;

/// A single-producer single-consumer ring of slot indices. Each entry carries
/// its own sequence stamp (the position + 1, 40 bits) beside the slot index
/// (24 bits), so the consumer polls the entry itself: one cache line moves
/// per hand-off, not a tail and then an entry. The producer never needs the
/// consumer's position: the parent keeps at most ring_capacity jobs in flight
/// per worker, one entry each way, so no entry is overwritten unread. A stamp
/// that is not the expected one means "not yet"; a scribbled entry with the
/// right stamp still has to name a slot the parent handed to that worker.
struct ring {
    std::atomic<std::uint64_t> entries[ring_capacity];

    static constexpr std::uint64_t slot_mask = (std::uint64_t{1} << 24) - 1;
    static constexpr std::uint64_t stamp_of(std::uint64_t position) noexcept {
        return ((position + 1) & ((std::uint64_t{1} << 40) - 1)) << 24;
    }

    void publish(std::uint64_t position, std::uint32_t slot) noexcept {
        entries[position % ring_capacity].store(stamp_of(position) | slot,
                                                std::memory_order_release);
    }
    /// The slot at `position` if it was published, else -1.
    std::int64_t peek(std::uint64_t position) const noexcept {
        const std::uint64_t e = entries[position % ring_capacity].load(std::memory_order_acquire);
        if ((e & ~slot_mask) != stamp_of(position)) return -1;
        return static_cast<std::int64_t>(e & slot_mask);
    }
    void reset() noexcept {
        for (auto& e : entries) e.store(0, std::memory_order_relaxed);
    }
};
static_assert(sizeof(ring) % cache_line == 0);
/// The control part of one worker's area, followed by its rings.
struct worker_area {
    /// Bumped by the parent before FUTEX_WAKE; the worker waits on it.
    alignas(cache_line) std::atomic<std::uint32_t> futex{0};
    /// 1 while the worker sleeps (or is about to) on `futex`.
    std::atomic<std::uint32_t> sleeping{0};
    /// Set to 1 once the initializer has run: a worker that dies before is a
    /// failed start, not a crash.
    std::atomic<std::uint32_t> ready{0};
    /// Why the start failed, written by the worker (NUL-terminated, untrusted).
    char init_error[init_error_bytes];
};

enum class slot_state : std::uint32_t {
    free = 0,
    queued,         // parent → worker: in the submit ring
    started,        // the worker took it (set before decoding anything)
    need_space,     // the worker asks for a result block of `out_len` bytes
    space_granted,  // parent: out_off/out_cap now point at a block
    space_denied,   // parent: no block can ever be that large
    done,           // result (or exception text) in out_off[0, out_len)
    cancelled,      // parent: the waiter left before the worker took it
    skipped,        // worker: saw `cancelled`, did not run it
};

enum class result_kind : std::uint32_t { value = 0, exception = 1, too_large = 2 };

/// A slot: one job. Its first cache line holds what changes with every job
/// (state, lengths) followed by the inline buffer, so a job with small
/// arguments and a small result moves one line each way. What usually stays
/// the same from one job to the next in a slot (the trampoline, the callable,
/// where things are) sits at the end and is rewritten only when it changes.
struct job_slot {
    std::atomic<slot_state> state{slot_state::free};
    result_kind kind = result_kind::value;  // written by the worker: untrusted
    std::uint64_t out_len = 0;              // written by the worker: untrusted
    std::uint64_t run_ns = 0;               // how long the worker ran the job: untrusted
    std::uint64_t args_len = 0;
};
inline constexpr std::uint64_t not_timed = UINT64_MAX;
inline constexpr std::size_t slot_header_bytes = sizeof(std::uint64_t) * 4;
static_assert(sizeof(job_slot) == slot_header_bytes);

struct alignas(cache_line) job_slot_cold {
    job_trampoline trampoline = nullptr;
    std::uint64_t args_off = 0;  // offsets from the arena's base
    std::uint64_t out_off = 0, out_cap = 0;
    std::uint32_t loop = 0;  // which done ring the completion goes to
    alignas(16) std::byte callable[max_callable_bytes];
};
inline constexpr std::size_t slot_cold_offset = slot_bytes - sizeof(job_slot_cold);
/// The inline buffer: from the end of the header to the cold part.
inline constexpr std::size_t inline_capacity = slot_cold_offset - slot_header_bytes;
static_assert(inline_capacity >= 256);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<slot_state>::is_always_lock_free);

/// One cache line per loop: set to 1 by loop l before it sleeps in io_uring;
/// a worker that completes a job for l exchanges it to 0 and, if it was 1,
/// writes l's eventfd.
struct alignas(cache_line) loop_line {
    std::atomic<std::uint32_t> waiting{0};
};

/// Offsets and sizes, fixed when the pool is made. Read by workers; the
/// parent keeps its own copy and never trusts this one.
struct arena_header {
    std::uint64_t magic_word = 0;
    std::uint32_t workers = 0;
    std::uint32_t loops = 0;
    std::uint32_t slots = 0;
    std::uint32_t max_jobs_per_worker = 0;  // 0: unlimited
    std::uint64_t workers_off = 0, worker_stride = 0;
    std::uint64_t slots_off = 0;
    std::uint64_t heap_off = 0, heap_bytes = 0;
    void (*initializer)() = nullptr;
    int loop_fds[max_loops] = {};  // the loops' eventfds, as numbered in a worker
    std::uint32_t spin_ns = 0;     // a worker's bounded spin before it sleeps
    loop_line loop_state[max_loops];
};

/// Where the parts of an arena of `bytes` start, for `workers` workers and
/// `loops` loops. ok is false when the arena is too small for the control
/// part plus a minimal heap.
struct layout {
    bool ok = false;
    std::uint32_t slots = 0;
    std::size_t workers_off = 0, worker_stride = 0, slots_off = 0, heap_off = 0, heap_bytes = 0;
};

inline std::size_t align_up(std::size_t n, std::size_t a) noexcept {
    return (n + a - 1) / a * a;
}

inline std::size_t worker_stride(std::uint32_t loops) noexcept {
    return align_up(sizeof(worker_area), cache_line) + sizeof(ring) * (1 + loops);
}

inline layout plan(std::size_t bytes, std::uint32_t workers, std::uint32_t loops) noexcept {
    layout l;
    // Enough slots to keep every worker's ring full twice over, within bounds.
    std::size_t slots = std::size_t{2} * workers * ring_capacity;
    if (slots < 256) slots = 256;
    if (slots > 4096) slots = 4096;
    l.slots = static_cast<std::uint32_t>(slots);
    l.workers_off = align_up(sizeof(arena_header), 4096);
    l.worker_stride = worker_stride(loops);
    l.slots_off = align_up(l.workers_off + l.worker_stride * workers, 4096);
    l.heap_off = align_up(l.slots_off + slot_bytes * slots, 4096);
    constexpr std::size_t min_heap = 64 * 1024;
    if (l.heap_off > bytes || bytes - l.heap_off < min_heap) return l;
    l.heap_bytes = bytes - l.heap_off;
    l.ok = true;
    return l;
}

/// Addresses of the parts. The parent builds it from its own plan (never
/// from the header, which a worker could overwrite); a worker from the header.
struct view {
    std::byte* base = nullptr;
    std::size_t workers_off = 0, worker_stride = 0, slots_off = 0;

    arena_header* header() const noexcept { return reinterpret_cast<arena_header*>(base); }
    worker_area* worker(std::uint32_t i) const noexcept {
        return reinterpret_cast<worker_area*>(base + workers_off + worker_stride * i);
    }
    ring* submit_ring(std::uint32_t i) const noexcept {
        return reinterpret_cast<ring*>(reinterpret_cast<std::byte*>(worker(i)) +
                                       align_up(sizeof(worker_area), cache_line));
    }
    ring* done_ring(std::uint32_t worker_index, std::uint32_t loop) const noexcept {
        return submit_ring(worker_index) + 1 + loop;
    }
    job_slot* slot(std::uint32_t i) const noexcept {
        return reinterpret_cast<job_slot*>(base + slots_off + slot_bytes * i);
    }
    std::byte* inline_buf(std::uint32_t i) const noexcept {
        return base + slots_off + slot_bytes * i + slot_header_bytes;
    }
    job_slot_cold* cold(std::uint32_t i) const noexcept {
        return reinterpret_cast<job_slot_cold*>(base + slots_off + slot_bytes * i +
                                                slot_cold_offset);
    }
};

}  // namespace tandem::detail::shm
