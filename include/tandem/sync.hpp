// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Coordination between tasks: `mutex`, `event`, `semaphore`,
/// `condition_variable`, `latch` (channels: channel.hpp). The coroutine forms
/// of Python's Lock, Event, Semaphore and Condition: waiting suspends the task,
/// never the thread.
///
/// What holds for all of them:
/// - Threads: an object may be shared by tasks on any of the io threads; the
///   calls that never wait (unlock, set, release, notify, count_down, ...) may
///   also come from any other thread. A waiting task is resumed on its own
///   loop, never inline inside the call that woke it.
/// - Cancellation: every wait is a cancellation point. A task cancelled (or
///   timed out) while waiting leaves the queue of waiters and throws
///   `operation_cancelled` (or `timeout` throws `timed_out`); it takes nothing
///   with it, so no wake-up, permit or ownership is lost. A task woken before
///   its cancellation arrived keeps what it was handed (the lock, the permit)
///   and returns normally; its next wait sees the cancellation. A wait that
///   need not suspend completes at once, without checking for cancellation.
/// - Fairness: mutex, semaphore and condition_variable wake their waiters in
///   FIFO order, and the mutex and semaphore hand ownership or a permit
///   straight to the task they wake, so a newcomer cannot barge in ahead of a
///   waiter. event and latch wake everyone; who runs first is unspecified.
/// - Lifetime: an object must outlive every call on it, including a wait that
///   was satisfied but has not returned yet. Destroying one while tasks wait
///   on it is a programmer error and aborts with a message.
/// - Cost: an uncontended operation takes a spin lock (one atomic exchange)
///   and, for the awaitables, a coroutine frame from the per-thread cache.

#include <tandem/detail/sync_waiter.hpp>
#include <tandem/task.hpp>

#include <cstddef>
#include <utility>

namespace tandem {

namespace detail {
struct mutex_lock_op;
struct event_wait_op;
struct semaphore_acquire_op;
struct latch_wait_op;
struct condition_wait_op;
}  // namespace detail

/// A mutual-exclusion lock held across suspension points (Python's
/// asyncio.Lock). Not recursive; ownership belongs to no particular task, so
/// any task or thread may unlock it.
class mutex {
public:
    mutex() noexcept = default;
    ~mutex();
    mutex(const mutex&) = delete;
    mutex& operator=(const mutex&) = delete;

    /// Waits until the lock is free, then takes it (FIFO among waiters).
    /// Cancellation: throws `operation_cancelled` without the lock.
    task<> lock();

    /// Takes the lock if it is free now; never waits.
    bool try_lock() noexcept;

    /// Releases the lock, handing it to the longest waiter if there is one
    /// (which then resumes on its own loop). Unlocking a mutex that is not
    /// locked aborts. Any thread.
    void unlock() noexcept;

    /// Unlocks on destruction (or on `unlock()`); move-only.
    class [[nodiscard]] scoped_lock {
    public:
        scoped_lock() noexcept = default;
        explicit scoped_lock(mutex& m) noexcept : m_(&m) {}
        scoped_lock(scoped_lock&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
        scoped_lock& operator=(scoped_lock&& o) noexcept {
            if (this != &o) {
                unlock();
                m_ = std::exchange(o.m_, nullptr);
            }
            return *this;
        }
        ~scoped_lock() { unlock(); }
        /// Releases early; then the destructor does nothing.
        void unlock() noexcept {
            if (m_ != nullptr) std::exchange(m_, nullptr)->unlock();
        }
        bool owns_lock() const noexcept { return m_ != nullptr; }

    private:
        mutex* m_ = nullptr;
    };

    /// `auto guard = co_await m.scoped();` locks as `lock()` does and returns
    /// the guard that unlocks.
    task<scoped_lock> scoped();

private:
    friend struct detail::mutex_lock_op;
    friend struct detail::condition_wait_op;
    detail::spin_lock lock_;
    detail::wait_queue waiters_;
    bool locked_ = false;
};

/// A flag tasks can wait for (Python's asyncio.Event). `set()` wakes every
/// waiter; the flag stays set until `reset()`.
class event {
public:
    event() noexcept = default;
    ~event();
    event(const event&) = delete;
    event& operator=(const event&) = delete;

    /// Sets the flag and wakes every waiting task. Any thread.
    void set() noexcept;
    /// Clears the flag; tasks already woken stay woken. Any thread.
    void reset() noexcept;
    bool is_set() const noexcept { return set_.load(std::memory_order_acquire); }

    /// Returns once the flag is set (at once if it is). Cancellation: throws
    /// `operation_cancelled`.
    task<> wait();

private:
    friend struct detail::event_wait_op;
    detail::spin_lock lock_;
    detail::wait_queue waiters_;
    std::atomic<bool> set_{false};
};

/// A counting semaphore (Python's asyncio.Semaphore): at most `count` tasks
/// hold a permit at once, if each releases what it acquired.
class semaphore {
public:
    /// `count` must not be negative (aborts).
    explicit semaphore(std::ptrdiff_t count) noexcept;
    ~semaphore();
    semaphore(const semaphore&) = delete;
    semaphore& operator=(const semaphore&) = delete;

    /// Waits for a permit and takes it (FIFO among waiters). Cancellation:
    /// throws `operation_cancelled` without a permit.
    task<> acquire();
    /// Takes a permit if one is free now; never waits.
    bool try_acquire() noexcept;
    /// Returns `n` permits (n >= 0, else aborts), handing them to the
    /// longest waiters first. Any thread.
    void release(std::ptrdiff_t n = 1) noexcept;
    /// Free permits at this instant (a snapshot, for tests and stats).
    std::ptrdiff_t available() const noexcept;

private:
    friend struct detail::semaphore_acquire_op;
    mutable detail::spin_lock lock_;
    detail::wait_queue waiters_;
    std::ptrdiff_t count_;
};

/// Waits for a condition guarded by a tandem::mutex (Python's
/// asyncio.Condition). There are no spurious wake-ups, but another task may
/// change the state between the notify and the re-lock: prefer the
/// predicate form.
class condition_variable {
public:
    condition_variable() noexcept = default;
    ~condition_variable();
    condition_variable(const condition_variable&) = delete;
    condition_variable& operator=(const condition_variable&) = delete;

    /// The caller holds `m`. Atomically releases it and waits for a notify,
    /// then takes `m` again before returning, also when it throws: on
    /// cancellation it re-locks and then throws `operation_cancelled`.
    task<> wait(mutex& m);

    /// Waits (as above) until `pred()` is true; `pred` runs with `m` held.
    template <class Predicate>
    task<> wait(mutex& m, Predicate pred) {
        while (!pred()) co_await wait(m);
    }

    /// Wakes the longest-waiting task, if any. Any thread.
    void notify_one() noexcept;
    /// Wakes every waiting task. Any thread.
    void notify_all() noexcept;

private:
    friend struct detail::condition_wait_op;
    detail::spin_lock lock_;
    detail::wait_queue waiters_;
};

/// A single-use countdown (std::latch): `wait()` returns once the count has
/// reached zero.
class latch {
public:
    /// `count` must not be negative (aborts).
    explicit latch(std::ptrdiff_t count) noexcept;
    ~latch();
    latch(const latch&) = delete;
    latch& operator=(const latch&) = delete;

    /// Lowers the count by `n`; at zero every waiter wakes. Counting below
    /// zero aborts (a programmer error). Any thread.
    void count_down(std::ptrdiff_t n = 1) noexcept;
    /// True once the count is zero.
    bool try_wait() const noexcept;
    /// Returns once the count is zero. Cancellation: throws
    /// `operation_cancelled`.
    task<> wait();

private:
    friend struct detail::latch_wait_op;
    mutable detail::spin_lock lock_;
    detail::wait_queue waiters_;
    std::ptrdiff_t count_;
};

}  // namespace tandem
