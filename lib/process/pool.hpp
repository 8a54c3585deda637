// SPDX-License-Identifier: MIT
#pragma once

// The process pool, parent side (lib/process/pool.cpp has the data-flow
// diagram). One per runtime; made before the io threads start.

#include "../loop.hpp"
#include "arena.hpp"
#include "heap.hpp"
#include "shm_layout.hpp"
#include "zygote.hpp"

#include <tandem/process.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace tandem::detail {

class process_pool_impl final : public loop_poller {
public:
    /// Makes the arena, the zygote and the first workers (blocking: called
    /// before any io thread exists). `loop_fds` are the loops' eventfds, in
    /// loop order: the workers signal them. Throws std::invalid_argument for
    /// options that cannot work, std::system_error for a failed step.
    process_pool_impl(const process_pool_options& options, std::span<const int> loop_fds);
    /// Kills and reaps every worker and the zygote; frees the arena. Aborts
    /// with a message if a shared_array is still alive.
    ~process_pool_impl();
    process_pool_impl(const process_pool_impl&) = delete;
    process_pool_impl& operator=(const process_pool_impl&) = delete;

    /// The loops run: loop 0 starts watching the workers' pidfds.
    void start(std::span<loop* const> loops);
    /// The runtime is going away: no more replacements.
    void begin_shutdown() noexcept;

    void poll(loop& l) noexcept override;
    bool before_sleep(loop& l) noexcept override;

    // offload_job's steps, each on the job's own loop.
    bool try_reserve(offload_job& job);  // true: room granted; throws payload_too_large
    void wait_for_room(offload_job& job);
    /// False if the job ended at once (cancelled): do not suspend.
    bool send(offload_job& job);
    void cancel(offload_job& job) noexcept;
    void abandon(offload_job& job) noexcept;  // release, whatever the job's state

    shared_block* allocate_shared(std::size_t bytes);
    void free_shared(shared_block* block) noexcept;
    shared_ref resolve_shared(std::uint64_t address, std::uint64_t bytes, std::size_t align);

    process_pool_stats stats() const;
    unsigned worker_count() const noexcept { return workers_n_; }

private:
    struct worker_rec;
    struct slot_rec;
    struct job_list {
        offload_job* head = nullptr;
        offload_job* tail = nullptr;
        bool empty() const noexcept { return head == nullptr; }
        void push_back(offload_job* j) noexcept;
        void push_front(offload_job* j) noexcept;
        void remove(offload_job* j) noexcept;
        offload_job* pop_front() noexcept;
    };
    struct watch_op : completion {
        process_pool_impl* pool = nullptr;
        std::uint32_t index = 0;  // worker index, or UINT32_MAX for the zygote socket
    };

    // Construction steps.
    void init_shared_state();
    void init_parent_state();
    void start_first_workers();
    void start_populator(std::size_t from);

    // All private members below run under mutex_ unless they say otherwise.
    bool grant_room(offload_job& job);
    void satisfy_waiters();
    void pump();
    void wake_worker(std::uint32_t w) noexcept;
    void deliver(offload_job& job) noexcept;
    void free_slot(std::uint32_t index) noexcept;
    bool completions_waiting(std::uint32_t l) const noexcept;  // no mutex
    void reap(loop& l);                                        // takes the mutex
    void reap_ring(std::uint32_t w, std::uint32_t l);
    bool take_completion(std::uint32_t w, std::uint32_t l, std::uint32_t index);
    void finish_slot(std::uint32_t index);
    void need_space(std::uint32_t index);
    void grant_space(std::uint32_t index, std::size_t offset, std::size_t bytes);
    void kill_worker(std::uint32_t w, std::string reason) noexcept;
    bool any_worker_usable() const noexcept;
    void fail_pending(const std::string& why);
    void retry_failed_workers();

    // The manager: loop 0 only.
    void manage();
    void handle_death(std::uint32_t w);
    void reclaim_slots(std::uint32_t w, const std::string& died);
    void count_death(std::uint32_t w, const exit_info& info, bool was_ready);
    void replace_worker(std::uint32_t w);
    void handle_replies();
    void request_spawn(std::uint32_t w);
    void spawn_failed(std::uint32_t w, const std::string& why);
    /// Watches `fd` for POLLIN on the manager's loop and sets `armed`. When no
    /// SQE can be had, leaves `armed` false and asks for another manager turn.
    void arm_watch(watch_op& op, int fd, bool& armed) noexcept;
    void write_header() noexcept;
    void reset_worker_area(std::uint32_t w) noexcept;
    void kick_manager() noexcept;
    static void on_watch(completion* c, int res, std::uint32_t flags) noexcept;
    static void on_respawn_timer(timer_node* t) noexcept;
    static void on_kick(posted_item* item) noexcept;

    process_pool_options options_;
    std::uint32_t workers_n_ = 0;
    std::uint32_t loops_n_ = 0;
    std::uint32_t depth_ = 0;  // jobs in flight per worker, at most
    shm::layout plan_;
    shared_arena arena_;
    std::thread populator_;  // pre-faults the heap in the background
    std::atomic<bool> stop_populating_{false};
    shm::view view_;
    std::unique_ptr<zygote> zygote_;

    mutable std::mutex mutex_;
    arena_heap heap_;
    std::vector<std::unique_ptr<worker_rec>> workers_;
    std::vector<slot_rec> slots_;
    std::vector<std::uint32_t> free_slots_;
    std::vector<std::uint32_t> space_waiters_;  // slots whose worker waits for a result block
    job_list waiters_;                          // jobs waiting for a slot or arena room
    job_list pending_;                          // jobs with a slot, waiting for a worker
    std::uint64_t dispatch_seq_ = 0;
    std::map<std::uintptr_t, shared_block*> shared_;
    process_pool_stats stats_;
    std::string start_error_;  // why the last worker start failed
    bool stopping_ = false;

    // Read without the mutex by the loops' fast paths (written under it).
    std::unique_ptr<std::atomic<std::uint32_t>[]> done_heads_;     // [w * loops + l], positions
    std::unique_ptr<std::atomic<std::uint32_t>[]> loop_inflight_;  // [l]
    std::vector<std::uint32_t> submit_tails_;                      // [w], positions

    struct alignas(64) spin_state {
        std::atomic<std::uint64_t> job_ns{10'000};  // moving average of a job's run time
    };
    std::unique_ptr<spin_state[]> spin_;    // [l]
    std::unique_ptr<timer_node[]> safety_;  // [l], a periodic look while jobs are out

    // Manager state: loop 0's thread only.
    std::vector<loop*> loops_;
    std::atomic<loop*> manager_{nullptr};  // loop 0, once start() ran
    std::atomic<bool> manager_work_{false};
    std::atomic<bool> kick_posted_{false};
    struct kick_item : posted_item {
        process_pool_impl* pool = nullptr;
    } kick_;
    watch_op socket_watch_{};
    bool socket_watch_armed_ = false;
    unsigned spawns_outstanding_ = 0;
};

/// The pool of the runtime whose io thread calls; aborts off io threads,
/// throws std::logic_error if the pool is disabled.
process_pool_impl& current_pool(const char* what);

}  // namespace tandem::detail
