// SPDX-License-Identifier: MIT
//
// The process pool's manager, on loop 0 (see the diagram in pool.cpp): it
// watches every worker's pidfd on the ring, reaps a worker that died, fails
// or re-queues its jobs, counts the death, and asks the zygote for a
// replacement without blocking (a POLL_ADD on the zygote's socket), retrying
// failed starts with back-off.

#include "futex.hpp"
#include "pool_internal.hpp"
#include "worker.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace tandem::detail {

// ---- the manager: deaths and replacements, on loop 0 -----------------------------------------

void process_pool_impl::kick_manager() noexcept {
    manager_work_.store(true, std::memory_order_release);
    loop* manager = manager_.load(std::memory_order_acquire);
    if (manager != nullptr && !kick_posted_.exchange(true, std::memory_order_acq_rel)) {
        manager->post(&kick_);
    }
}

void process_pool_impl::on_kick(posted_item* item) noexcept {
    // Waking loop 0 is the point: its poll() then sees manager_work_.
    static_cast<kick_item*>(item)->pool->kick_posted_.store(false, std::memory_order_release);
}

void process_pool_impl::on_watch(completion* c, int res, std::uint32_t) noexcept {
    // Completion callbacks may run inside get_sqe: only note it, poll() acts.
    auto* op = static_cast<watch_op*>(c);
    process_pool_impl* pool = op->pool;
    if (op->index == UINT32_MAX) {
        pool->socket_watch_armed_ = false;
    } else {
        worker_rec& rec = *pool->workers_[op->index];
        rec.watch_armed = false;
        if (res != -ECANCELED) rec.death_seen = true;
    }
    pool->manager_work_.store(true, std::memory_order_relaxed);
}

void process_pool_impl::on_respawn_timer(timer_node* t) noexcept {
    auto* timer = static_cast<worker_rec::respawn_timer*>(t);
    timer->pool->workers_[timer->index]->respawn_due.store(true, std::memory_order_relaxed);
    timer->pool->manager_work_.store(true, std::memory_order_relaxed);
}

void process_pool_impl::arm_watch(watch_op& op, int fd, bool& armed) noexcept {
    try {
        io_uring_sqe* sqe = manager_.load(std::memory_order_relaxed)->get_sqe();
        io_uring_prep_poll_add(sqe, fd, POLLIN);
        io_uring_sqe_set_data(sqe, &op);
        armed = true;
    } catch (const std::system_error&) {
        // No SQE now (a broken ring, or a fault test): the next turn tries again.
        armed = false;
        manager_work_.store(true, std::memory_order_relaxed);
    }
}

void process_pool_impl::manage() {
    manager_work_.store(false, std::memory_order_relaxed);
    std::lock_guard lock(mutex_);
    if (socket_watch_armed_ == false && spawns_outstanding_ > 0) handle_replies();
    for (std::uint32_t w = 0; w < workers_n_; ++w) {
        worker_rec& rec = *workers_[w];
        if (rec.death_seen) {
            rec.death_seen = false;
            handle_death(w);
        }
        if (!stopping_ && rec.respawn_due.exchange(false, std::memory_order_relaxed)) {
            request_spawn(w);
        }
        if (rec.pidfd >= 0 && !rec.watch_armed) arm_watch(rec.watch, rec.pidfd, rec.watch_armed);
    }
    if (spawns_outstanding_ > 0 && !socket_watch_armed_) {
        arm_watch(socket_watch_, zygote_->socket(), socket_watch_armed_);
    }
    pump();
}

void process_pool_impl::handle_death(std::uint32_t w) {
    worker_rec& rec = *workers_[w];
    exit_info info;
    try {
        info = zygote::reap(rec.pidfd);
    } catch (const std::exception& e) {
        info.description = std::string("ended (") + e.what() + ")";
    }
    ::close(rec.pidfd);
    rec.pidfd = -1;
    const pid_t pid = rec.pid;
    rec.pid = -1;
    const bool was_ready = view_.worker(w)->ready.load(std::memory_order_acquire) == 1;

    // What it finished before dying, then what it had not started.
    for (std::uint32_t l = 0; l < loops_n_; ++l) reap_ring(w, l);
    reclaim_slots(w, "tandem: worker " + std::to_string(w) + " (pid " + std::to_string(pid) + ") " +
                         (rec.killed ? rec.kill_reason + "; " : std::string()) + info.description +
                         " while running the job");
    count_death(w, info, was_ready);
    rec.killed = false;
    rec.kill_reason.clear();
    reset_worker_area(w);
    replace_worker(w);
}

void process_pool_impl::reclaim_slots(std::uint32_t w, const std::string& died) {
    worker_rec& rec = *workers_[w];
    std::vector<std::uint32_t> requeue;
    for (std::uint32_t i = 0; i < plan_.slots; ++i) {
        slot_rec& r = slots_[i];
        if (!r.in_use || r.worker != static_cast<std::int32_t>(w)) continue;
        const auto st = view_.slot(i)->state.load(std::memory_order_acquire);
        if (st == shm::slot_state::done) {  // finished; its completion was not published
            finish_slot(i);
            continue;
        }
        if (st == shm::slot_state::queued && r.job != nullptr) {  // never started
            requeue.push_back(i);
            continue;
        }
        --rec.inflight;
        r.worker = -1;
        loop_inflight_[r.loop].fetch_sub(1, std::memory_order_relaxed);
        if (offload_job* job = r.job) {
            job->slot = UINT32_MAX;
            job->end = offload_job::outcome::crashed;
            job->message = died;
            deliver(*job);
        }
        free_slot(i);
    }
    // Back to the front of the queue, in the order they were first sent.
    std::sort(requeue.begin(), requeue.end(),
              [&](std::uint32_t a, std::uint32_t b) { return slots_[a].seq > slots_[b].seq; });
    for (std::uint32_t i : requeue) {
        slots_[i].worker = -1;
        --rec.inflight;
        offload_job* job = slots_[i].job;
        job->state = offload_job::phase::pending;
        job->worker = -1;
        pending_.push_front(job);
    }
}

void process_pool_impl::count_death(std::uint32_t w, const exit_info& info, bool was_ready) {
    worker_rec& rec = *workers_[w];
    const bool retired = rec.st == worker_rec::state::retiring && !info.killed &&
                         info.exit_status == 0 && !rec.killed;
    if (was_ready) rec.failures = 0;
    if (retired) {
        ++stats_.recycled;
    } else if (!was_ready) {
        ++stats_.failed_starts;
        ++rec.failures;
        const shm::worker_area* area = view_.worker(w);  // untrusted text, bounded
        start_error_ =
            !info.killed && info.exit_status == init_failed_status
                ? std::string(area->init_error, strnlen(area->init_error, sizeof area->init_error))
                : "worker " + std::to_string(w) + " " + info.description + " before it was ready";
    } else if (!rec.killed) {
        ++stats_.crashes;  // (a kill was counted when it was sent)
    }
}

void process_pool_impl::replace_worker(std::uint32_t w) {
    worker_rec& rec = *workers_[w];
    if (stopping_) {
        rec.st = worker_rec::state::dead;
        return;
    }
    rec.replacement = true;
    if (rec.failures >= max_start_attempts) {
        rec.st = worker_rec::state::failed;
        return;
    }
    rec.st = worker_rec::state::starting;
    if (rec.failures == 0) {
        request_spawn(w);
        return;
    }
    // 10 ms, then 40 ms: a transient shortage (fork's EAGAIN) may pass.
    rec.timer.deadline = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(10 << (2 * (rec.failures - 1)));
    manager_.load(std::memory_order_relaxed)->timer_arm(&rec.timer);
}

void process_pool_impl::write_header() noexcept {
    shm::arena_header* header = view_.header();
    header->magic_word = shm::magic;
    header->workers = workers_n_;
    header->loops = loops_n_;
    header->slots = plan_.slots;
    header->max_jobs_per_worker = options_.max_jobs_per_worker;
    header->workers_off = plan_.workers_off;
    header->worker_stride = plan_.worker_stride;
    header->slots_off = plan_.slots_off;
    header->heap_off = plan_.heap_off;
    header->heap_bytes = plan_.heap_bytes;
    header->initializer = options_.initializer;
    header->spin_ns = worker_spin_ns;
    for (std::uint32_t l = 0; l < loops_n_; ++l) header->loop_fds[l] = 4 + static_cast<int>(l);
}

void process_pool_impl::reset_worker_area(std::uint32_t w) noexcept {
    // A worker may have scribbled over the header too: the replacement
    // starts from what the parent knows.
    write_header();
    shm::worker_area* area = view_.worker(w);
    area->futex.store(0, std::memory_order_relaxed);
    area->sleeping.store(0, std::memory_order_relaxed);
    area->ready.store(0, std::memory_order_relaxed);
    area->init_error[0] = '\0';
    view_.submit_ring(w)->reset();
    submit_tails_[w] = 0;
    for (std::uint32_t l = 0; l < loops_n_; ++l) {
        view_.done_ring(w, l)->reset();
        done_heads_[w * loops_n_ + l].store(0, std::memory_order_relaxed);
    }
    workers_[w]->inflight = 0;
    workers_[w]->dispatched = 0;
}

void process_pool_impl::request_spawn(std::uint32_t w) {
    worker_rec& rec = *workers_[w];
    if (const int err = zygote_->request_spawn(static_cast<int>(w)); err != 0) {
        spawn_failed(w, std::string("the zygote cannot be reached: ") + std::strerror(err));
        return;
    }
    rec.st = worker_rec::state::starting;
    ++spawns_outstanding_;
}

void process_pool_impl::handle_replies() {
    for (;;) {
        zygote::reply answer{};
        const ssize_t n = ::recv(zygote_->socket(), &answer, sizeof answer, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n != sizeof answer) {
            // The zygote is gone: no worker can be replaced any more.
            spawns_outstanding_ = 0;
            for (std::uint32_t w = 0; w < workers_n_; ++w) {
                if (workers_[w]->st == worker_rec::state::starting) {
                    workers_[w]->failures = max_start_attempts;
                    spawn_failed(w, "the zygote process is gone");
                }
            }
            return;
        }
        --spawns_outstanding_;
        if (answer.index < 0 || static_cast<std::uint32_t>(answer.index) >= workers_n_) continue;
        const auto w = static_cast<std::uint32_t>(answer.index);
        worker_rec& rec = *workers_[w];
        try {
            spawn_result r = zygote::finish_spawn(answer);
            rec.pid = r.pid;
            rec.pidfd = r.pidfd;
            rec.st = worker_rec::state::alive;
            if (rec.replacement) ++stats_.replacements;
            rec.replacement = false;
            arm_watch(rec.watch, rec.pidfd, rec.watch_armed);
        } catch (const std::exception& e) {
            ++rec.failures;
            ++stats_.failed_starts;
            spawn_failed(w, e.what());
        }
        if (spawns_outstanding_ == 0) return;
    }
}

void process_pool_impl::spawn_failed(std::uint32_t w, const std::string& why) {
    worker_rec& rec = *workers_[w];
    start_error_ = why;
    if (rec.failures >= max_start_attempts || stopping_) {
        rec.st = worker_rec::state::failed;
    } else {
        rec.timer.deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(10 << (2 * rec.failures));
        manager_.load(std::memory_order_relaxed)->timer_arm(&rec.timer);
    }
}

}  // namespace tandem::detail
