// SPDX-License-Identifier: MIT
#pragma once

// What the process pool's sources share (pool.cpp: the job path;
// pool_manager.cpp: deaths and replacements; offload_job.cpp: the entry
// points): tuning constants and the parent's records of workers and slots.

#include "pool.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <sys/types.h>

namespace tandem::detail {

inline constexpr std::size_t no_block = SIZE_MAX;        // a slot_rec without a heap block
inline constexpr unsigned max_start_attempts = 3;        // consecutive failed starts, then give up
inline constexpr std::uint32_t worker_spin_ns = 50'000;  // a worker's spin before it sleeps
inline constexpr std::uint64_t max_loop_spin_ns = 50'000;  // a loop's, while jobs are short
inline constexpr auto safety_interval = std::chrono::milliseconds(100);  // see before_sleep
inline constexpr std::size_t populate_ahead = std::size_t{4} << 20;      // heap populated at once
inline constexpr std::size_t populate_chunk = std::size_t{2} << 20;      // then this much per step

inline std::string size_text(std::size_t bytes) {
    return std::to_string(bytes) + " bytes";
}

struct process_pool_impl::worker_rec {
    enum class state : std::uint8_t { starting, alive, retiring, dying, dead, failed };
    state st = state::starting;
    pid_t pid = -1;
    int pidfd = -1;
    std::uint32_t inflight = 0;    // dispatched, completion not yet taken
    std::uint64_t dispatched = 0;  // since this process started
    unsigned failures = 0;         // consecutive failed starts
    bool replacement = false;      // counts in stats().replacements once started
    bool killed = false;
    std::string kill_reason;
    bool watch_armed = false;
    bool death_seen = false;               // the pidfd watch fired (loop 0)
    std::atomic<bool> respawn_due{false};  // set by a timer on loop 0 or a retry on any loop
    bool wake = false;                     // pump queued work for it
    watch_op watch;
    struct respawn_timer : timer_node {
        process_pool_impl* pool = nullptr;
        std::uint32_t index = 0;
    } timer;
};

struct process_pool_impl::slot_rec {
    offload_job* job = nullptr;  // null: free, or orphaned by a cancelled job
    bool in_use = false;
    std::int32_t worker = -1;  // dispatched to, or -1
    std::uint32_t loop = 0;
    std::uint64_t seq = 0;  // dispatch order, to re-queue in order
    std::size_t args_block = no_block, args_block_bytes = 0;
    std::size_t out_block = no_block, out_block_bytes = 0;
    std::size_t out_off = 0, out_cap = 0;  // where the result may be: our record, not the slot's
    bool space_waiting = false;
    std::size_t space_need = 0;  // the result block asked for (checked, rounded)
};

}  // namespace tandem::detail
