// SPDX-License-Identifier: MIT
#pragma once

// What the coordination primitives (sync.hpp, channel.hpp) share: a spin lock
// guarding each primitive's state, and the waiter a suspended task leaves on a
// primitive's FIFO. Not part of the API.
//
// The protocol, for every primitive:
//   - A primitive's state and its waiter queues change only under its lock.
//   - A waker takes waiters off a queue and marks each one `woken` (handing it
//     what it waited for: the lock, a permit, an item) under the lock, then
//     releases the lock and only then resumes them (wake_all): once a waiter
//     may run, the waker touches neither it nor the primitive again, so the
//     woken task may destroy both at once.
//   - A waiter is resumed on its own loop: scheduled when the waker runs on
//     that loop, posted to it otherwise.
//   - Cancellation runs on the waiter's own loop (stop nodes are loop-local).
//     Under the lock, a waiter still `waiting` leaves the queue and resumes
//     `cancelled`; one already `woken` keeps what it was handed (nothing is
//     lost) and its resumption, already on its way, stands.
//   - The cancel hook stays linked until the waiter resumes, and is unlinked
//     there, on its own loop (a waker on another thread cannot touch it).
// A primitive must outlive every call on it, including a wait that was
// satisfied but has not returned yet (as for std::latch and friends).

#include <tandem/detail/loop_api.hpp>
#include <tandem/detail/stop_node.hpp>
#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include <atomic>
#include <coroutine>
#include <cstdint>

namespace tandem::detail {

/// A test-and-test-and-set lock for critical sections of a few pointer moves.
/// Spins briefly, then yields the CPU (the holder may have been preempted).
class spin_lock {
public:
    void lock() noexcept {
        if (!locked_.exchange(true, std::memory_order_acquire)) return;
        lock_slow();
    }
    bool try_lock() noexcept { return !locked_.exchange(true, std::memory_order_acquire); }
    void unlock() noexcept { locked_.store(false, std::memory_order_release); }

private:
    void lock_slow() noexcept;
    std::atomic<bool> locked_{false};
};

class spin_guard {
public:
    explicit spin_guard(spin_lock& l) noexcept : lock_(l) { lock_.lock(); }
    ~spin_guard() { lock_.unlock(); }
    spin_guard(const spin_guard&) = delete;
    spin_guard& operator=(const spin_guard&) = delete;

private:
    spin_lock& lock_;
};

struct wait_queue;

/// A task suspended on a primitive. Lives in the awaiting coroutine's frame.
struct sync_waiter : cancel_hook, posted_item {
    enum class state : std::uint8_t { idle, waiting, woken, closed, cancelled };

    std::coroutine_handle<> handle;
    loop* home = nullptr;       // the loop it resumes on
    spin_lock* lock = nullptr;  // its primitive's lock, for the cancel hook
    wait_queue* queue = nullptr;
    sync_waiter* next = nullptr;
    sync_waiter* prev = nullptr;
    state st = state::idle;  // guarded by *lock once parked
};

/// An intrusive FIFO of waiters, guarded by its primitive's lock.
struct wait_queue {
    sync_waiter* head = nullptr;
    sync_waiter* tail = nullptr;

    bool empty() const noexcept { return head == nullptr; }

    void push_back(sync_waiter* w) noexcept {
        w->prev = tail;
        w->next = nullptr;
        (tail != nullptr ? tail->next : head) = w;
        tail = w;
    }

    void remove(sync_waiter* w) noexcept {
        (w->prev != nullptr ? w->prev->next : head) = w->next;
        (w->next != nullptr ? w->next->prev : tail) = w->prev;
        w->next = w->prev = nullptr;
    }

    /// Takes the longest-waiting waiter off the queue (the queue is not empty).
    sync_waiter* pop_front() noexcept {
        sync_waiter* w = head;
        remove(w);
        return w;
    }
};

/// Waiters taken off their queues under a lock, to be resumed after it is
/// released (a singly linked chain through `next`).
class wake_list {
public:
    wake_list() noexcept = default;
    wake_list(const wake_list&) = delete;
    wake_list& operator=(const wake_list&) = delete;
    /// Resumes whatever is on the list: declare it before the lock's guard,
    /// so that it runs after the unlock.
    ~wake_list() {
        if (head_ != nullptr) wake_all();
    }

    /// Marks `w` with `outcome` and queues it for wake_all. Under the lock.
    void add(sync_waiter* w, sync_waiter::state outcome) noexcept {
        w->st = outcome;
        w->next = nullptr;
        (tail_ != nullptr ? tail_->next : head_) = w;
        tail_ = w;
    }

    /// Takes every waiter off `q` with `outcome`. Under the lock.
    void add_all(wait_queue& q, sync_waiter::state outcome) noexcept {
        while (!q.empty()) add(q.pop_front(), outcome);
    }

    void wake_all() noexcept;

private:
    sync_waiter* head_ = nullptr;
    sync_waiter* tail_ = nullptr;
};

/// The loop of the calling io thread; aborts (precondition) off io threads.
loop& waiter_home() noexcept;

/// The cancel hook of every parked waiter (lib/sync.cpp).
void on_waiter_cancelled(cancel_hook* hook) noexcept;

/// Registers `w`'s cancel hook with `node` (null: not cancellable). False if the task is
/// already cancelled (then nothing is linked and it must not park).
inline bool arm_waiter(sync_waiter& w, std::coroutine_handle<> h, stop_node* node, spin_lock& lock,
                       wait_queue& queue) noexcept {
    w.handle = h;
    w.home = &waiter_home();
    w.lock = &lock;
    w.queue = &queue;
    if (node == nullptr) return true;
    w.on_cancel = &on_waiter_cancelled;
    if (node->link(&w)) return true;
    w.st = sync_waiter::state::cancelled;
    return false;
}

/// Parks an armed waiter on its queue. Under the lock.
inline void park(sync_waiter& w) noexcept {
    w.st = sync_waiter::state::waiting;
    w.queue->push_back(&w);
}

/// On resumption, on the waiter's own loop: unlinks the cancel hook and says
/// how the wait ended.
inline sync_waiter::state finish_wait(sync_waiter& w) noexcept {
    w.cancel_hook::unlink();
    return w.st;
}

/// The awaitable behind every wait. `Derived` supplies, called under the lock:
///   bool try_now(wake_list&)  take what is waited for if it is there (no
///                             waiting), queueing whoever that frees to wake;
/// and `lock_ref()` / `queue_ref()`: the primitive's lock and the queue to park on.
template <class Derived>
struct wait_op : sync_waiter {
    bool ignore_cancel = false;  // a wait that must finish (a condition variable's re-lock)

    bool await_ready() noexcept {
        wake_list woken;
        spin_guard guard(self().lock_ref());
        return self().try_now(woken);
    }

    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        stop_node* node = ignore_cancel ? nullptr : stop_of(h);
        if (!arm_waiter(*this, h, node, self().lock_ref(), self().queue_ref())) return false;
        {
            wake_list woken;
            spin_guard guard(self().lock_ref());
            if (!self().try_now(woken)) {
                park(*this);
                return true;  // from here on a waker or the cancel hook owns *this
            }
        }
        cancel_hook::unlink();
        return false;
    }

    /// How the wait ended: idle or woken (success), closed, or cancelled.
    sync_waiter::state outcome() noexcept { return finish_wait(*this); }

private:
    Derived& self() noexcept { return static_cast<Derived&>(*this); }
};

/// Aborts with a message: a primitive destroyed while tasks wait on it.
[[noreturn]] void destroyed_with_waiters(const char* what) noexcept;

}  // namespace tandem::detail
