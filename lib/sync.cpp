// SPDX-License-Identifier: MIT
// mutex, event, semaphore, condition_variable and latch; the waiter protocol
// they share (and channel<T> with them) is described in
// include/tandem/detail/sync_waiter.hpp.

#include <tandem/sync.hpp>

#include "loop.hpp"

#include <sched.h>

namespace tandem {

namespace detail {

namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

}  // namespace

void spin_lock::lock_slow() noexcept {
    for (;;) {
        // Critical sections are a few pointer moves: spin a little on a plain
        // load (no cache-line ping-pong), then give the CPU to whoever holds
        // the lock: with 2 vCPUs, the holder may be preempted by us.
        for (int i = 0; i < 64; ++i) {
            if (!locked_.load(std::memory_order_relaxed) &&
                !locked_.exchange(true, std::memory_order_acquire)) {
                return;
            }
            cpu_relax();
        }
        sched_yield();
    }
}

loop& waiter_home() noexcept {
    return require_loop("waiting on a tandem primitive (mutex, event, channel, ...)");
}

namespace {

void resume_posted(posted_item* item) noexcept {
    auto* w = static_cast<sync_waiter*>(item);
    this_thread_loop()->schedule(w->handle);
}

}  // namespace

void wake_list::wake_all() noexcept {
    loop* here = this_thread_loop();
    sync_waiter* w = head_;
    head_ = tail_ = nullptr;
    while (w != nullptr) {
        // Read the link first: once woken, the waiter's frame may go at any time.
        sync_waiter* next = w->next;
        if (w->home == here) {
            here->schedule(w->handle);
        } else {
            w->run = &resume_posted;
            post(*w->home, w);
        }
        w = next;
    }
}

void on_waiter_cancelled(cancel_hook* hook) noexcept {
    // On the waiter's own loop (stop nodes are loop-local), before it resumed.
    auto* w = static_cast<sync_waiter*>(hook);
    {
        spin_guard guard(*w->lock);
        if (w->st != sync_waiter::state::waiting) return;  // woken: keeps what it got
        w->queue->remove(w);
        w->st = sync_waiter::state::cancelled;
    }
    w->home->schedule(w->handle);
}

void destroyed_with_waiters(const char* what) noexcept {
    contract_violation(what);
}

void throw_if_cancelled(sync_waiter::state s) {
    if (s == sync_waiter::state::cancelled) throw operation_cancelled();
}

struct mutex_lock_op : wait_op<mutex_lock_op> {
    mutex* m;
    explicit mutex_lock_op(mutex* mx, bool must_finish = false) noexcept : m(mx) {
        ignore_cancel = must_finish;
    }
    spin_lock& lock_ref() noexcept { return m->lock_; }
    wait_queue& queue_ref() noexcept { return m->waiters_; }
    bool try_now(wake_list&) noexcept {
        if (m->locked_) return false;
        m->locked_ = true;
        return true;
    }
    void await_resume() { throw_if_cancelled(outcome()); }
};

struct event_wait_op : wait_op<event_wait_op> {
    event* e;
    explicit event_wait_op(event* ev) noexcept : e(ev) {}
    spin_lock& lock_ref() noexcept { return e->lock_; }
    wait_queue& queue_ref() noexcept { return e->waiters_; }
    bool try_now(wake_list&) noexcept { return e->set_.load(std::memory_order_relaxed); }
    void await_resume() { throw_if_cancelled(outcome()); }
};

struct semaphore_acquire_op : wait_op<semaphore_acquire_op> {
    semaphore* s;
    explicit semaphore_acquire_op(semaphore* sem) noexcept : s(sem) {}
    spin_lock& lock_ref() noexcept { return s->lock_; }
    wait_queue& queue_ref() noexcept { return s->waiters_; }
    bool try_now(wake_list&) noexcept {
        if (s->count_ == 0) return false;
        --s->count_;
        return true;
    }
    void await_resume() { throw_if_cancelled(outcome()); }
};

struct latch_wait_op : wait_op<latch_wait_op> {
    latch* l;
    explicit latch_wait_op(latch* lt) noexcept : l(lt) {}
    spin_lock& lock_ref() noexcept { return l->lock_; }
    wait_queue& queue_ref() noexcept { return l->waiters_; }
    bool try_now(wake_list&) const noexcept { return l->count_ == 0; }
    void await_resume() { throw_if_cancelled(outcome()); }
};

/// Parks on the condition variable, then releases the mutex: a notify that
/// comes after the unlock finds the task already queued.
struct condition_wait_op : sync_waiter {
    condition_variable* cv;
    mutex* m;
    bool released = false;  // false if cancelled before parking: the caller still holds m

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        if (!arm_waiter(*this, h, stop_of(h), cv->lock_, cv->waiters_)) return false;
        {
            spin_guard guard(cv->lock_);
            park(*this);
        }
        // Resumption can only come through this thread's loop, after we return.
        released = true;
        m->unlock();
        return true;
    }
    sync_waiter::state await_resume() noexcept { return finish_wait(*this); }
};

}  // namespace detail

// ---- mutex ----

mutex::~mutex() {
    if (!waiters_.empty())
        detail::destroyed_with_waiters("tandem::mutex destroyed while tasks wait on it");
}

task<> mutex::lock() {
    co_await detail::mutex_lock_op(this);
}

task<mutex::scoped_lock> mutex::scoped() {
    co_await detail::mutex_lock_op(this);
    co_return scoped_lock(*this);
}

bool mutex::try_lock() noexcept {
    detail::spin_guard guard(lock_);
    if (locked_) return false;
    locked_ = true;
    return true;
}

void mutex::unlock() noexcept {
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    if (!locked_) detail::contract_violation("tandem::mutex::unlock on a mutex that is not locked");
    if (waiters_.empty()) {
        locked_ = false;
    } else {
        woken.add(waiters_.pop_front(),
                  detail::sync_waiter::state::woken);  // stays locked: handed over
    }
}

// ---- event ----

event::~event() {
    if (!waiters_.empty())
        detail::destroyed_with_waiters("tandem::event destroyed while tasks wait on it");
}

void event::set() noexcept {
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    set_.store(true, std::memory_order_release);
    woken.add_all(waiters_, detail::sync_waiter::state::woken);
}

void event::reset() noexcept {
    detail::spin_guard guard(lock_);
    set_.store(false, std::memory_order_release);
}

task<> event::wait() {
    if (is_set()) co_return;
    co_await detail::event_wait_op(this);
}

// ---- semaphore ----

semaphore::semaphore(std::ptrdiff_t count) noexcept : count_(count) {
    if (count < 0) detail::contract_violation("tandem::semaphore with a negative count");
}

semaphore::~semaphore() {
    if (!waiters_.empty()) {
        detail::destroyed_with_waiters("tandem::semaphore destroyed while tasks wait on it");
    }
}

task<> semaphore::acquire() {
    co_await detail::semaphore_acquire_op(this);
}

bool semaphore::try_acquire() noexcept {
    detail::spin_guard guard(lock_);
    if (count_ == 0) return false;
    --count_;
    return true;
}

void semaphore::release(std::ptrdiff_t n) noexcept {
    if (n < 0) detail::contract_violation("tandem::semaphore::release with a negative count");
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    for (; n > 0 && !waiters_.empty(); --n) {
        woken.add(waiters_.pop_front(), detail::sync_waiter::state::woken);  // a permit handed over
    }
    count_ += n;
}

std::ptrdiff_t semaphore::available() const noexcept {
    detail::spin_guard guard(lock_);
    return count_;
}

// ---- condition_variable ----

condition_variable::~condition_variable() {
    if (!waiters_.empty()) {
        detail::destroyed_with_waiters(
            "tandem::condition_variable destroyed while tasks wait on it");
    }
}

task<> condition_variable::wait(mutex& m) {
    detail::condition_wait_op op;
    op.cv = this;
    op.m = &m;
    const detail::sync_waiter::state outcome = co_await op;
    if (op.released) {
        // Take the mutex back whatever happened, cancellation included.
        co_await detail::mutex_lock_op(&m, /*must_finish=*/true);
    }
    detail::throw_if_cancelled(outcome);
}

void condition_variable::notify_one() noexcept {
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    if (!waiters_.empty()) woken.add(waiters_.pop_front(), detail::sync_waiter::state::woken);
}

void condition_variable::notify_all() noexcept {
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    woken.add_all(waiters_, detail::sync_waiter::state::woken);
}

// ---- latch ----

latch::latch(std::ptrdiff_t count) noexcept : count_(count) {
    if (count < 0) detail::contract_violation("tandem::latch with a negative count");
}

latch::~latch() {
    if (!waiters_.empty())
        detail::destroyed_with_waiters("tandem::latch destroyed while tasks wait on it");
}

void latch::count_down(std::ptrdiff_t n) noexcept {
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    if (n < 0 || n > count_) detail::contract_violation("tandem::latch::count_down below zero");
    count_ -= n;
    if (count_ == 0) woken.add_all(waiters_, detail::sync_waiter::state::woken);
}

bool latch::try_wait() const noexcept {
    detail::spin_guard guard(lock_);
    return count_ == 0;
}

task<> latch::wait() {
    co_await detail::latch_wait_op(this);
}

}  // namespace tandem
