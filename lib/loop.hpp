// SPDX-License-Identifier: MIT
#pragma once

// The event loop of one io thread (private header).
//
//   run():  drain posted items ─▶ resume a batch of ready coroutines ─▶ fire
//           expired timers ─▶ one io_uring_submit_and_wait(_timeout) ─▶ reap
//           every CQE: each CQE's user_data is a `completion` whose callback
//           records the result and *queues* its coroutine (never resumes it).
//
// The io_uring part sits behind a small seam (get_sqe / submit / wait / reap):
// on machines where io_uring is blocked an epoll_backend takes its place and
// interprets the same SQEs (lib/epoll_backend.hpp).

#include <tandem/detail/loop_api.hpp>
#include <tandem/detail/stop_node.hpp>

#include "epoll_backend.hpp"

#include <liburing.h>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tandem::detail {

/// What a CQE's user_data points at. user_data 0 is ignored (fire-and-forget
/// SQEs such as ASYNC_CANCEL use it).
struct completion {
    void (*complete)(completion*, int res, std::uint32_t flags) noexcept = nullptr;
};

/// A FIFO of coroutine handles: a ring buffer that only grows (no allocation
/// in steady state).
class ready_queue {
public:
    bool empty() const noexcept { return head_ == tail_; }
    std::size_t size() const noexcept { return tail_ - head_; }
    void push(std::coroutine_handle<> h) {
        if (size() == buf_.size()) grow();
        buf_[tail_++ & (buf_.size() - 1)] = h;
    }
    std::coroutine_handle<> pop() noexcept { return buf_[head_++ & (buf_.size() - 1)]; }

private:
    void grow();
    std::vector<std::coroutine_handle<>> buf_;
    std::size_t head_ = 0;
    std::size_t tail_ = 0;
};

/// Binary min-heap of timer_nodes keyed on deadline; each node knows its index
/// so cancellation is O(log n). The deadline is copied into the array so that
/// sifting compares without touching the sleeping frames (about twice as fast
/// with 100,000 timers: bench/core_bench.cpp).
class timer_heap {
public:
    bool empty() const noexcept { return heap_.empty(); }
    std::size_t size() const noexcept { return heap_.size(); }
    timer_node* top() const noexcept { return heap_.front().node; }
    std::chrono::steady_clock::time_point top_deadline() const noexcept {
        return heap_.front().deadline;
    }
    void push(timer_node* t);
    void remove(timer_node* t) noexcept;

private:
    struct entry {
        std::chrono::steady_clock::time_point deadline;
        timer_node* node;
    };
    void sift_up(std::size_t i, entry e) noexcept;
    void sift_down(std::size_t i, entry e) noexcept;
    void place(std::size_t i, entry e) noexcept {
        heap_[i] = e;
        e.node->heap_index_ = i;
    }
    std::vector<entry> heap_;
};

class loop;

/// A heap object the ring may still point at when its loop is destroyed: a
/// listener's multishot accept whose listener is closed after the runtime, or
/// from another thread. The loop's destructor calls loop_gone() on each one
/// still bound, under bound_mutex(), once the ring is gone (nothing completes
/// on it any more); the object then frees itself or waits for its owner.
class loop_bound {
public:
    virtual void loop_gone() noexcept = 0;

protected:
    ~loop_bound() = default;

private:
    friend class loop;
    loop_bound* bound_next_ = nullptr;
    loop_bound* bound_prev_ = nullptr;
};

/// Guards every loop's list of loop_bound objects, and what those objects say
/// about their loop (is it still there?).
std::mutex& bound_mutex() noexcept;

/// Work the loop checks between its other work and before it sleeps: the
/// process pool's completions, which arrive through shared memory rather than
/// the ring. Called on the loop's thread only.
class loop_poller {
public:
    /// Takes whatever is ready for `l`; schedules coroutines, never resumes them.
    virtual void poll(loop& l) noexcept = 0;
    /// `l` has nothing ready and is about to sleep in io_uring. May spin
    /// briefly; true if it found work (the loop then does not sleep). When it
    /// returns false it has arranged to be woken through the loop's eventfd.
    virtual bool before_sleep(loop& l) noexcept = 0;

protected:
    ~loop_poller() = default;
};

class loop {
public:
    /// Creates the ring on the calling thread (SINGLE_ISSUER binds it there),
    /// or with `use_epoll` the epoll backend instead. `wake_fd`, if not -1, is
    /// an eventfd made beforehand (the process pool hands it to its workers);
    /// the loop owns it from here on, even if this throws. Throws
    /// std::system_error with an explanatory message on failure.
    explicit loop(unsigned entries, int wake_fd = -1, bool use_epoll = false);
    ~loop();
    loop(const loop&) = delete;
    loop& operator=(const loop&) = delete;

    /// Runs until shutdown was requested and every root task has finished.
    void run();

    /// An SQE, never null: if the SQ is full it submits (reaping completions
    /// first when the kernel pushes back) and retries. Loop thread only.
    io_uring_sqe* get_sqe();

    /// Submits an IORING_OP_ASYNC_CANCEL for the operation at `target`.
    void cancel_op(const completion* target);
    /// Submits what is queued, then cancels every operation on `fd` and
    /// returns once each is cancelled (its completion still comes through the
    /// loop). Loop thread only.
    void cancel_fd_now(int fd) noexcept;
    /// The same for the one operation at `target` (a multishot accept).
    void cancel_op_now(const completion* target) noexcept;

    void schedule(std::coroutine_handle<> h) { ready_.push(h); }
    void post(posted_item* item) noexcept;
    void timer_arm(timer_node* t);
    void timer_cancel(timer_node* t) noexcept;

    /// Root tasks (spawned, block_on, orphaned task_group children) hang under
    /// this node; shutdown stops it.
    stop_node& roots() noexcept { return roots_; }
    void root_started() noexcept { ++live_roots_; }
    void root_finished() noexcept { --live_roots_; }

    /// Thread-safe: cancel every root, finish once they are all done.
    void request_shutdown() noexcept;

    /// Sets the poller (before run(); null for none) and this loop's index
    /// among the runtime's loops.
    void attach_poller(loop_poller* p, unsigned index) noexcept {
        poller_ = p;
        index_ = index;
    }
    unsigned index() const noexcept { return index_; }
    /// For a poller's spin: completions in the CQ or items in the inbox.
    bool has_other_work() noexcept {
        const bool completions =
            epoll_ ? epoll_->has_completions() : io_uring_cq_ready(&ring_) != 0;
        return completions || inbox_.load(std::memory_order_relaxed) != nullptr;
    }
    /// Submits queued SQEs without waiting (before a poller spins).
    void submit_pending() noexcept {
        if (epoll_) {
            epoll_->submit();
        } else {
            io_uring_submit(&ring_);
        }
    }

    /// Adds or removes `b` from the objects told when this loop goes; the
    /// caller holds bound_mutex().
    void bind(loop_bound* b) noexcept;
    void unbind(loop_bound* b) noexcept;

    /// Flags the ring was set up with, as text ("epoll" on that backend).
    const std::string& features() const noexcept { return features_; }
    unsigned setup_flags() const noexcept { return ring_.flags; }

private:
    static void on_wake(completion* c, int res, std::uint32_t flags) noexcept;
    static void on_shutdown(posted_item* item) noexcept;
    void arm_wake();
    void drain_posted() noexcept;
    void run_ready() noexcept;
    void fire_timers() noexcept;
    void wait_and_reap();
    void epoll_wait_and_reap();
    void reap() noexcept;
    void flush_overflow() noexcept;

    io_uring ring_{};
    std::unique_ptr<epoll_backend> epoll_;  // instead of ring_, when set
    std::string features_;
    ready_queue ready_;
    timer_heap timers_;
    stop_node roots_;
    std::size_t live_roots_ = 0;
    bool shutting_down_ = false;

    // Cross-thread inbox: a lock-free stack (MPSC). The producer that makes it
    // non-empty writes the eventfd, whose read is always armed on the ring.
    std::atomic<posted_item*> inbox_{nullptr};
    int wake_fd_ = -1;
    std::uint64_t wake_buf_ = 0;
    completion wake_op_{};
    bool wake_armed_ = false;
    bool skip_cancel_cqe_ = false;
    posted_item shutdown_item_{};
    loop_poller* poller_ = nullptr;
    loop_bound* bound_ = nullptr;  // guarded by bound_mutex()
    unsigned index_ = 0;
    unsigned busy_turns_ = 0;  // epoll backend: turns with work since epoll was last asked
};

/// The loop of the calling thread (null off io threads); set by run().
loop* this_thread_loop() noexcept;
void set_this_thread_loop(loop* l) noexcept;

}  // namespace tandem::detail
