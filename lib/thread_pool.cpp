// SPDX-License-Identifier: MIT
// The blocking-call pool (offload_to_thread). The job's path and the
// cancellation race are drawn at the top of include/tandem/detail/thread_pool.hpp.

#include <tandem/detail/thread_pool.hpp>

#include "loop.hpp"

#include <pthread.h>

#include <algorithm>
#include <system_error>

namespace tandem::detail {

// ---- thread_pool --------------------------------------------------------------

thread_pool::thread_pool(unsigned max_threads)
    : max_threads_(max_threads != 0 ? max_threads
                                    : std::max(2U, std::thread::hardware_concurrency())) {}

thread_pool::~thread_pool() {
    stop();
}

void thread_pool::submit(pool_job* job) {
    std::lock_guard lock(mutex_);
    // More queued jobs than idle threads: one more thread, within the limit.
    // Started before the job is linked and under the lock, so a failure
    // leaves nothing behind and stop() never misses a thread (the new thread
    // simply waits for the lock).
    if (queued_ + 1 > idle_ && threads_.size() < max_threads_) {
        try {
            threads_.emplace_back([this] { worker_main(); });
        } catch (...) {
            // With no thread at all nobody could ever run the job: report it.
            // Otherwise the existing threads get to it later.
            if (threads_.empty()) throw;
        }
    }
    job->state_ = pool_job::state::queued;
    job->next_job_ = nullptr;
    job->prev_job_ = tail_;
    if (tail_ != nullptr) {
        tail_->next_job_ = job;
    } else {
        head_ = job;
    }
    tail_ = job;
    ++queued_;
    wake_.notify_one();
}

bool thread_pool::cancel(pool_job* job) noexcept {
    std::lock_guard lock(mutex_);
    if (job->state_ != pool_job::state::queued) return false;
    if (job->prev_job_ != nullptr) {
        job->prev_job_->next_job_ = job->next_job_;
    } else {
        head_ = job->next_job_;
    }
    if (job->next_job_ != nullptr) {
        job->next_job_->prev_job_ = job->prev_job_;
    } else {
        tail_ = job->prev_job_;
    }
    job->next_job_ = job->prev_job_ = nullptr;
    job->state_ = pool_job::state::cancelled;
    --queued_;
    return true;
}

void thread_pool::stop() noexcept {
    std::vector<std::thread> threads;
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        threads.swap(threads_);
    }
    wake_.notify_all();
    for (auto& t : threads) t.join();
}

unsigned thread_pool::threads_started() const {
    std::lock_guard lock(mutex_);
    return static_cast<unsigned>(threads_.size());
}

void thread_pool::worker_main() noexcept {
    // 15 characters: the kernel's limit for a thread name (shown by top, gdb).
    pthread_setname_np(pthread_self(), "tandem-blocking");
    std::unique_lock lock(mutex_);
    for (;;) {
        while (head_ == nullptr && !stopping_) {
            ++idle_;
            wake_.wait(lock);
            --idle_;
        }
        // Stopping drains the queue first; the runtime stops the pool only
        // after its loops have finished, so in practice it is already empty.
        if (head_ == nullptr) return;
        pool_job* job = head_;
        head_ = job->next_job_;
        if (head_ != nullptr) {
            head_->prev_job_ = nullptr;
        } else {
            tail_ = nullptr;
        }
        --queued_;
        // From here cancel() leaves the job alone: it runs to the end.
        job->state_ = pool_job::state::taken;
        lock.unlock();
        job->execute(job);  // may free *job (see pool_job::execute)
        lock.lock();
    }
}

// ---- blocking_wait ------------------------------------------------------------

bool blocking_wait::start(std::coroutine_handle<> h, stop_node* node) {
    if (node != nullptr && node->stop_requested()) {
        cancelled_ = true;  // a cancelled task does not start new calls
        return false;
    }
    loop_ = &require_loop("offload_to_thread");
    pool_ = &current_thread_pool();
    handle_ = h;
    run = &on_done;
    pool_->submit(this);  // throws before queuing, or the job is on its way
    // Linking after submit is safe: the job's completion is posted to this
    // loop, which cannot run on_done before this function returns.
    if (node != nullptr) {
        on_cancel = &on_cancel_requested;
        node->link(this);
    }
    return true;
}

void blocking_wait::on_done(posted_item* item) noexcept {
    // On the waiter's loop; the pool thread is done with the job.
    auto* self = static_cast<blocking_wait*>(item);
    self->cancel_hook::unlink();
    self->loop_->schedule(self->handle_);
}

void blocking_wait::on_cancel_requested(cancel_hook* hook) noexcept {
    auto* self = static_cast<blocking_wait*>(hook);
    // A job already taken by a thread cannot be interrupted: keep waiting for
    // on_done, which delivers the real result.
    if (!self->pool_->cancel(self)) return;
    self->cancelled_ = true;
    self->loop_->schedule(self->handle_);
}

}  // namespace tandem::detail
