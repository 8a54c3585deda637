// SPDX-License-Identifier: MIT
//
// The process pool, parent side. A job's path:
//
//   task on loop l                  shared arena (memfd, same address everywhere)        worker w
//   ──────────────                  ─────────────────────────────────────────────        ────────
//   reserve: a free slot ─────────▶ slot: state, trampoline, callable bytes,
//     (+ a heap block if the          args_off/len, out_off/cap
//      arguments exceed the slot)   args: slot's inline buffer or a heap block
//   encode the arguments ─────────▶
//   send: pending FIFO ─ pump ────▶ submit ring w  (+ FUTEX_WAKE if w sleeps) ───────▶ pop, CAS
//                                                                          queued → started,
//                                                                          decode, call, encode
//                                   slot.out (or "need_space": the parent  ◀─────────┤
//                                     hands out a heap block, the worker waits)       │
//   poll / before_sleep ◀────────── done ring (w, l) (+ eventfd write if l sleeps) ◀──┘
//   deliver: schedule the task ─┐
//   decode the result ◀─────────┘   release: slot and blocks back to the free lists
//
// Death: loop 0 polls every worker's pidfd on its ring. When one fires it
// reaps the worker (waitid), takes the completions it left, re-queues the
// jobs it had not started, fails the one it was running with worker_crashed,
// and asks the zygote for a replacement (asynchronously: a POLL_ADD on the
// zygote's socket). A job cancelled while its worker runs it gets that
// worker SIGKILLed; its slot stays out of use until the death is processed.
//
// Trust: everything the workers can write (ring tails, slot states, lengths)
// is checked against the parent's own records before use; a worker whose
// writes do not add up is killed and replaced, its job fails, the parent
// never reads outside the region it handed out.

#include "pool_internal.hpp"

#include "futex.hpp"
#include "worker.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <poll.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace tandem::detail {

// ---- job_list --------------------------------------------------------------------------------

void process_pool_impl::job_list::push_back(offload_job* j) noexcept {
    j->next_job = nullptr;
    j->prev_job = tail;
    if (tail != nullptr) {
        tail->next_job = j;
    } else {
        head = j;
    }
    tail = j;
}

void process_pool_impl::job_list::push_front(offload_job* j) noexcept {
    j->prev_job = nullptr;
    j->next_job = head;
    if (head != nullptr) {
        head->prev_job = j;
    } else {
        tail = j;
    }
    head = j;
}

void process_pool_impl::job_list::remove(offload_job* j) noexcept {
    if (j->prev_job != nullptr) {
        j->prev_job->next_job = j->next_job;
    } else {
        head = j->next_job;
    }
    if (j->next_job != nullptr) {
        j->next_job->prev_job = j->prev_job;
    } else {
        tail = j->prev_job;
    }
    j->next_job = j->prev_job = nullptr;
}

offload_job* process_pool_impl::job_list::pop_front() noexcept {
    offload_job* j = head;
    if (j != nullptr) remove(j);
    return j;
}

// ---- construction ----------------------------------------------------------------------------

process_pool_impl::process_pool_impl(const process_pool_options& options,
                                     std::span<const int> loop_fds)
    : options_(options), heap_(0, 0) {
    workers_n_ =
        options.workers != 0 ? options.workers : std::max(1u, std::thread::hardware_concurrency());
    loops_n_ = static_cast<std::uint32_t>(loop_fds.size());
    if (workers_n_ > 1024) {
        throw std::invalid_argument("tandem: process_pool_options::workers: at most 1024");
    }
    if (loops_n_ == 0 || loops_n_ > shm::max_loops) {
        throw std::invalid_argument("tandem: the process pool supports 1 to 64 io threads");
    }
    plan_ = shm::plan(options.arena_bytes, workers_n_, loops_n_);
    if (!plan_.ok) {
        throw std::invalid_argument(
            "tandem: process_pool_options::arena_bytes = " + size_text(options.arena_bytes) +
            " is too small for " + std::to_string(workers_n_) + " workers: it needs at least " +
            size_text(plan_.heap_off + 64 * 1024));
    }
    depth_ = std::min<std::uint32_t>(shm::ring_capacity, plan_.slots / workers_n_);
    // The control part and the heap's first few MiB now; the rest of the heap
    // on a short-lived thread (populating 256 MiB of shmem takes 100-250 ms
    // here, which construction should not wait for).
    const std::size_t populate_now = plan_.heap_off + std::min(plan_.heap_bytes, populate_ahead);
    arena_ = shared_arena::create(options.arena_bytes, populate_now);
    view_ = {arena_.base(), plan_.workers_off, plan_.worker_stride, plan_.slots_off};
    heap_ = arena_heap(plan_.heap_off, plan_.heap_bytes);
    init_shared_state();
    init_parent_state();
    zygote_ = std::make_unique<zygote>(&worker_main, arena_.base(), loop_fds);
    start_first_workers();
    if (populate_now < arena_.size()) start_populator(populate_now);
}

void process_pool_impl::init_shared_state() {
    new (arena_.base()) shm::arena_header();
    write_header();
    for (std::uint32_t w = 0; w < workers_n_; ++w) {
        new (view_.worker(w)) shm::worker_area();
        new (view_.submit_ring(w)) shm::ring();
        for (std::uint32_t l = 0; l < loops_n_; ++l) new (view_.done_ring(w, l)) shm::ring();
    }
    for (std::uint32_t s = 0; s < plan_.slots; ++s) {
        new (view_.slot(s)) shm::job_slot();
        new (view_.cold(s)) shm::job_slot_cold();
    }
}

void process_pool_impl::init_parent_state() {
    slots_.resize(plan_.slots);
    free_slots_.reserve(plan_.slots);
    for (std::uint32_t s = plan_.slots; s-- > 0;) free_slots_.push_back(s);
    done_heads_ = std::make_unique<std::atomic<std::uint32_t>[]>(workers_n_ * loops_n_);
    loop_inflight_ = std::make_unique<std::atomic<std::uint32_t>[]>(loops_n_);
    submit_tails_.assign(workers_n_, 0);
    spin_ = std::make_unique<spin_state[]>(loops_n_);
    safety_ = std::make_unique<timer_node[]>(loops_n_);
    for (std::uint32_t l = 0; l < loops_n_; ++l) safety_[l].fire = [](timer_node*) noexcept {};
    stats_.workers = workers_n_;
    kick_.run = &on_kick;
    kick_.pool = this;
    socket_watch_.complete = &on_watch;
    socket_watch_.pool = this;
    socket_watch_.index = UINT32_MAX;
    for (std::uint32_t w = 0; w < workers_n_; ++w) {
        auto rec = std::make_unique<worker_rec>();
        rec->watch.complete = &on_watch;
        rec->watch.pool = this;
        rec->watch.index = w;
        rec->timer.fire = &on_respawn_timer;
        rec->timer.pool = this;
        rec->timer.index = w;
        workers_.push_back(std::move(rec));
    }
}

void process_pool_impl::start_first_workers() {
    // Blocking: no loop runs yet. If one cannot be made, the others are
    // killed and reaped, the zygote ended, and the error goes to the caller.
    try {
        for (std::uint32_t w = 0; w < workers_n_; ++w) {
            spawn_result r = zygote_->spawn(static_cast<int>(w));
            workers_[w]->pid = r.pid;
            workers_[w]->pidfd = r.pidfd;
            workers_[w]->st = worker_rec::state::alive;
        }
    } catch (...) {
        for (auto& rec : workers_) {
            if (rec->pidfd < 0) continue;
            ::syscall(SYS_pidfd_send_signal, rec->pidfd, SIGKILL, nullptr, 0U);
            try {
                zygote::reap(rec->pidfd);
            } catch (...) {
            }
            ::close(rec->pidfd);
        }
        zygote_.reset();
        throw;
    }
}

void process_pool_impl::start_populator(std::size_t from) {
    populator_ = std::thread([this, from] {
        // SCHED_IDLE: only spare CPU time. At normal priority it took a core
        // from the loop or a worker for the 100-250 ms it runs, and round
        // trips then ran 3x slower on average (bench/offload_bench).
        sched_param none{};
        ::sched_setscheduler(0, SCHED_IDLE, &none);
        for (std::size_t at = from; at < arena_.size(); at += populate_chunk) {
            if (stop_populating_.load(std::memory_order_relaxed)) return;
            arena_.populate(at, populate_chunk);
        }
    });
}

process_pool_impl::~process_pool_impl() {
    stop_populating_.store(true, std::memory_order_relaxed);
    if (populator_.joinable()) populator_.join();
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        if (!shared_.empty()) {
            std::fprintf(stderr,
                         "tandem: fatal: %zu shared_array(s) outlive their runtime; destroy them "
                         "before the runtime (the arena goes with it)\n",
                         shared_.size());
            std::abort();
        }
        for (auto& rec : workers_) {
            if (rec->pidfd >= 0) ::syscall(SYS_pidfd_send_signal, rec->pidfd, SIGKILL, nullptr, 0U);
        }
    }
    // The zygote answers what it was asked, then kills the workers it made and
    // exits; finish() reaps the workers whose answers we had not read yet.
    zygote_->finish();
    zygote_.reset();
    for (auto& rec : workers_) {
        if (rec->pidfd < 0) continue;
        try {
            zygote::reap(rec->pidfd);
        } catch (...) {
        }
        ::close(rec->pidfd);
    }
}

void process_pool_impl::start(std::span<loop* const> loops) {
    std::lock_guard lock(mutex_);
    loops_.assign(loops.begin(), loops.end());
    manager_.store(loops_.front(), std::memory_order_release);
    kick_manager();
}

void process_pool_impl::begin_shutdown() noexcept {
    std::lock_guard lock(mutex_);
    stopping_ = true;
}

// ---- reserve, send, cancel, release: on the job's loop ---------------------------------------

bool process_pool_impl::try_reserve(offload_job& job) {
    const std::size_t need = job.args_need;
    if (need > shm::inline_capacity && !heap_.could_fit(need)) {
        throw payload_too_large("tandem: payload too large: the arguments need " + size_text(need) +
                                "; the arena's heap holds " + size_text(heap_.capacity()) +
                                " (process_pool_options::arena_bytes)");
    }
    std::lock_guard lock(mutex_);
    if (!waiters_.empty()) return false;  // FIFO: no overtaking
    return grant_room(job);
}

void process_pool_impl::wait_for_room(offload_job& job) {
    std::lock_guard lock(mutex_);
    job.state = offload_job::phase::waiting;
    waiters_.push_back(&job);
    // Room may have appeared between try_reserve and now.
    satisfy_waiters();
}

bool process_pool_impl::grant_room(offload_job& job) {
    if (free_slots_.empty()) return false;
    const std::size_t need = job.args_need;
    std::size_t block = no_block;
    std::size_t block_bytes = 0;
    if (need > shm::inline_capacity) {
        block_bytes = shm::align_up(need, arena_heap::granule);
        block = heap_.allocate(block_bytes);
        if (block == no_block) return false;
    }
    const std::uint32_t s = free_slots_.back();
    free_slots_.pop_back();
    slot_rec& r = slots_[s];
    r = slot_rec{};
    r.in_use = true;
    r.job = &job;
    r.args_block = block;
    r.args_block_bytes = block_bytes;
    job.slot = s;
    if (block == no_block) {
        job.args_region = view_.inline_buf(s);
        job.args_capacity = shm::inline_capacity;
    } else {
        job.args_region = view_.base + block;
        job.args_capacity = block_bytes;
    }
    r.out_off = static_cast<std::size_t>(job.args_region - view_.base);
    r.out_cap = job.args_capacity;
    return true;
}

void process_pool_impl::satisfy_waiters() {
    // Workers waiting for a result block first: they hold a slot and a process.
    while (!space_waiters_.empty()) {
        const std::uint32_t s = space_waiters_.front();
        const std::size_t bytes = slots_[s].space_need;  // our copy: the worker may scribble
        const std::size_t off = heap_.allocate(bytes);
        if (off == no_block) break;
        space_waiters_.erase(space_waiters_.begin());
        slots_[s].space_waiting = false;
        grant_space(s, off, bytes);
    }
    while (!waiters_.empty()) {
        offload_job* job = waiters_.head;
        if (!grant_room(*job)) break;
        waiters_.remove(job);
        job->state = offload_job::phase::idle;
        deliver(*job);
    }
}

bool process_pool_impl::send(offload_job& job) {
    shm::job_slot* s = view_.slot(job.slot);
    shm::job_slot_cold* c = view_.cold(job.slot);
    const slot_rec& r = slots_[job.slot];
    const std::uint32_t li = job.owner->index();
    // Written only when different: a slot reused for the same call keeps the
    // line the worker has cached (one cache line less to move per job).
    auto set = [](auto& field, auto v) {
        if (field != v) field = v;
    };
    set(c->trampoline, job.trampoline);
    if (std::memcmp(c->callable, job.callable, job.callable_size) != 0) {
        std::memcpy(c->callable, job.callable, job.callable_size);
    }
    set(c->args_off, static_cast<std::uint64_t>(job.args_region - view_.base));
    set(c->out_off, static_cast<std::uint64_t>(r.out_off));
    set(c->out_cap, static_cast<std::uint64_t>(r.out_cap));
    set(c->loop, li);
    s->args_len = job.args_size;
    s->out_len = 0;
    s->kind = shm::result_kind::value;
    // Published to the worker by the release store of its submit ring entry.
    s->state.store(shm::slot_state::queued, std::memory_order_relaxed);

    std::lock_guard lock(mutex_);
    if (stopping_) {
        job.end = offload_job::outcome::cancelled;
        return false;
    }
    job.state = offload_job::phase::pending;
    slots_[job.slot].loop = li;
    loop_inflight_[li].fetch_add(1, std::memory_order_relaxed);
    pending_.push_back(&job);
    if (!any_worker_usable()) retry_failed_workers();
    pump();
    return true;
}

bool process_pool_impl::any_worker_usable() const noexcept {
    for (const auto& rec : workers_) {
        if (rec->st != worker_rec::state::failed && rec->st != worker_rec::state::dead) return true;
    }
    return false;
}

void process_pool_impl::retry_failed_workers() {
    if (stopping_) return;
    bool any = false;
    for (auto& rec : workers_) {
        if (rec->st != worker_rec::state::failed) continue;
        rec->st = worker_rec::state::starting;
        rec->failures = 0;
        rec->respawn_due.store(true, std::memory_order_relaxed);
        any = true;
    }
    if (any) kick_manager();
}

void process_pool_impl::pump() {
    while (!pending_.empty()) {
        std::uint32_t best = UINT32_MAX;
        for (std::uint32_t w = 0; w < workers_n_; ++w) {
            const worker_rec& rec = *workers_[w];
            if (rec.st != worker_rec::state::alive || rec.inflight >= depth_) continue;
            if (best == UINT32_MAX || rec.inflight < workers_[best]->inflight) best = w;
        }
        if (best == UINT32_MAX) break;
        offload_job* job = pending_.pop_front();
        worker_rec& rec = *workers_[best];
        slot_rec& r = slots_[job->slot];
        view_.submit_ring(best)->publish(submit_tails_[best]++, job->slot);
        r.worker = static_cast<std::int32_t>(best);
        r.seq = ++dispatch_seq_;
        job->worker = static_cast<std::int32_t>(best);
        job->state = offload_job::phase::dispatched;
        ++rec.inflight;
        ++rec.dispatched;
        if (options_.max_jobs_per_worker != 0 && rec.dispatched >= options_.max_jobs_per_worker) {
            rec.st = worker_rec::state::retiring;  // it exits after this job
        }
        rec.wake = true;
    }
    for (std::uint32_t w = 0; w < workers_n_; ++w) {
        if (!workers_[w]->wake) continue;
        workers_[w]->wake = false;
        wake_worker(w);
    }
    if (!pending_.empty() && !any_worker_usable()) {
        fail_pending("tandem: no worker process could be started: " + start_error_);
    }
}

void process_pool_impl::wake_worker(std::uint32_t w) noexcept {
    shm::worker_area* area = view_.worker(w);
    // Pairs with the worker's fence between announcing sleep and re-checking
    // its ring: either it sees the new entry, or we see it asleep.
    store_load_barrier();
    if (area->sleeping.load(std::memory_order_relaxed) == 0) return;
    area->futex.fetch_add(1, std::memory_order_release);
    futex_wake(&area->futex, 1);
}

void process_pool_impl::fail_pending(const std::string& why) {
    while (offload_job* job = pending_.pop_front()) {
        loop_inflight_[slots_[job->slot].loop].fetch_sub(1, std::memory_order_relaxed);
        free_slot(job->slot);
        job->slot = UINT32_MAX;
        job->end = offload_job::outcome::crashed;
        job->message = why;
        deliver(*job);
    }
}

void process_pool_impl::deliver(offload_job& job) noexcept {
    if (job.state != offload_job::phase::idle) job.state = offload_job::phase::finished;
    if (this_thread_loop() == job.owner) {
        job.owner->schedule(job.handle);
    } else {
        job.run = [](posted_item* item) noexcept {
            schedule(static_cast<offload_job*>(item)->handle);
        };
        job.owner->post(&job);
    }
}

void process_pool_impl::cancel(offload_job& job) noexcept {
    std::lock_guard lock(mutex_);
    switch (job.state) {
        case offload_job::phase::waiting:
            waiters_.remove(&job);
            break;
        case offload_job::phase::pending:
            pending_.remove(&job);
            loop_inflight_[slots_[job.slot].loop].fetch_sub(1, std::memory_order_relaxed);
            free_slot(job.slot);
            job.slot = UINT32_MAX;
            break;
        case offload_job::phase::dispatched:
        case offload_job::phase::asking_space: {
            // The slot stays with its worker (orphaned) until the worker gives
            // it back or is gone; the task leaves now.
            slot_rec& r = slots_[job.slot];
            shm::job_slot* s = view_.slot(job.slot);
            r.job = nullptr;
            job.slot = UINT32_MAX;
            auto seen = shm::slot_state::queued;
            if (!s->state.compare_exchange_strong(seen, shm::slot_state::cancelled,
                                                  std::memory_order_acq_rel) &&
                seen != shm::slot_state::done && seen != shm::slot_state::skipped) {
                kill_worker(static_cast<std::uint32_t>(r.worker),
                            "killed: its job was cancelled or timed out");
            }
            break;
        }
        default:
            return;  // finished (its resumption is on the way) or not yet sent
    }
    job.end = offload_job::outcome::cancelled;
    job.state = offload_job::phase::finished;
    job.owner->schedule(job.handle);
}

void process_pool_impl::abandon(offload_job& job) noexcept {
    if (job.slot == UINT32_MAX && job.state != offload_job::phase::waiting) return;
    std::lock_guard lock(mutex_);
    switch (job.state) {
        case offload_job::phase::waiting:
            waiters_.remove(&job);
            return;
        case offload_job::phase::pending:
            pending_.remove(&job);
            loop_inflight_[slots_[job.slot].loop].fetch_sub(1, std::memory_order_relaxed);
            break;
        case offload_job::phase::dispatched:
        case offload_job::phase::asking_space:
            // A frame destroyed while its job runs: orphan the slot as cancel does.
            slots_[job.slot].job = nullptr;
            kill_worker(static_cast<std::uint32_t>(slots_[job.slot].worker),
                        "killed: its job's task was destroyed");
            job.slot = UINT32_MAX;
            return;
        default:
            break;
    }
    free_slot(job.slot);
    job.slot = UINT32_MAX;
}

void process_pool_impl::free_slot(std::uint32_t index) noexcept {
    slot_rec& r = slots_[index];
    if (r.args_block != no_block) heap_.free(r.args_block, r.args_block_bytes);
    if (r.out_block != no_block) heap_.free(r.out_block, r.out_block_bytes);
    if (r.space_waiting) {
        space_waiters_.erase(std::find(space_waiters_.begin(), space_waiters_.end(), index));
    }
    r = slot_rec{};
    view_.slot(index)->state.store(shm::slot_state::free, std::memory_order_relaxed);
    free_slots_.push_back(index);
    satisfy_waiters();
}

void process_pool_impl::kill_worker(std::uint32_t w, std::string reason) noexcept {
    if (w >= workers_n_) return;
    worker_rec& rec = *workers_[w];
    if (rec.pidfd < 0 || rec.killed) return;
    ::syscall(SYS_pidfd_send_signal, rec.pidfd, SIGKILL, nullptr, 0U);
    ++stats_.kills;
    rec.killed = true;
    rec.kill_reason = std::move(reason);
    rec.st = worker_rec::state::dying;
}

// ---- completions: on each loop ---------------------------------------------------------------

void process_pool_impl::poll(loop& l) noexcept {
    const std::uint32_t li = l.index();
    if (manager_work_.load(std::memory_order_acquire) &&
        &l == manager_.load(std::memory_order_relaxed))
        manage();
    auto& waiting = view_.header()->loop_state[li].waiting;
    if (waiting.load(std::memory_order_relaxed) != 0) waiting.store(0, std::memory_order_relaxed);
    if (loop_inflight_[li].load(std::memory_order_relaxed) == 0) return;
    reap(l);
}

bool process_pool_impl::before_sleep(loop& l) noexcept {
    const std::uint32_t li = l.index();
    // A timer (a delayed respawn) may have asked the manager for work after
    // this turn's poll(): take another turn rather than sleep on it.
    if (manager_work_.load(std::memory_order_acquire) &&
        &l == manager_.load(std::memory_order_relaxed))
        return true;
    if (loop_inflight_[li].load(std::memory_order_relaxed) == 0) return false;
    auto ready = [&] { return completions_waiting(li); };
    // Spin only while jobs have been coming back quickly: waking this thread
    // from io_uring costs 40-190 us here, which dwarfs a short job; a long
    // job is better waited for asleep.
    if (spin_[li].job_ns.load(std::memory_order_relaxed) < max_loop_spin_ns) {
        // The whole budget, not a multiple of the average: a worker delayed
        // by the scheduler once in a while would otherwise cost a sleep.
        const std::uint64_t budget = max_loop_spin_ns;
        l.submit_pending();
        const std::uint64_t start = now_ns();
        for (std::uint32_t i = 0;; ++i) {
            if (ready()) {
                reap(l);
                return true;
            }
            if (l.has_other_work()) return true;
            if ((i & 15) == 15 && now_ns() - start > budget) break;
            cpu_relax();
        }
    }
    auto& waiting = view_.header()->loop_state[li].waiting;
    waiting.store(1, std::memory_order_relaxed);
    // Pairs with the worker's fence between publishing a completion and
    // reading `waiting`: either we see its entry now, or it writes the eventfd.
    store_load_barrier();
    if (ready()) {
        waiting.store(0, std::memory_order_relaxed);
        reap(l);
        return true;
    }
    // A worker scribbling over `waiting` could keep the eventfd silent: look
    // again now and then while jobs are out, whatever happens.
    timer_node& safety = safety_[li];
    if (!safety.armed()) {
        safety.deadline = std::chrono::steady_clock::now() + safety_interval;
        l.timer_arm(&safety);
    }
    return false;
}

bool process_pool_impl::completions_waiting(std::uint32_t li) const noexcept {
    for (std::uint32_t w = 0; w < workers_n_; ++w) {
        if (view_.done_ring(w, li)->peek(
                done_heads_[w * loops_n_ + li].load(std::memory_order_relaxed)) >= 0)
            return true;
    }
    return false;
}

void process_pool_impl::reap(loop& l) {
    const std::uint32_t li = l.index();
    if (!completions_waiting(li)) return;
    std::lock_guard lock(mutex_);
    for (std::uint32_t w = 0; w < workers_n_; ++w) reap_ring(w, li);
    pump();
}

void process_pool_impl::reap_ring(std::uint32_t w, std::uint32_t l) {
    shm::ring* ring = view_.done_ring(w, l);
    std::atomic<std::uint32_t>& head_copy = done_heads_[w * loops_n_ + l];
    std::uint32_t head = head_copy.load(std::memory_order_relaxed);
    // At most ring_capacity entries can be due; more would be a scribbler's.
    for (std::uint32_t n = 0; n < shm::ring_capacity; ++n) {
        const std::int64_t index = ring->peek(head);
        if (index < 0) break;
        ++head;
        if (!take_completion(w, l, static_cast<std::uint32_t>(index))) {
            kill_worker(w, "killed: it corrupted the shared arena (a completion names slot " +
                               std::to_string(index) + ", which it was not running)");
            break;
        }
    }
    head_copy.store(head, std::memory_order_relaxed);
}

bool process_pool_impl::take_completion(std::uint32_t w, std::uint32_t l, std::uint32_t index) {
    if (index >= plan_.slots) return false;
    const slot_rec& r = slots_[index];
    if (!r.in_use || r.worker != static_cast<std::int32_t>(w) || r.loop != l) return false;
    switch (view_.slot(index)->state.load(std::memory_order_acquire)) {
        case shm::slot_state::done:
        case shm::slot_state::skipped:
            finish_slot(index);
            return true;
        case shm::slot_state::need_space:
            need_space(index);
            return true;
        default:
            return false;
    }
}

void process_pool_impl::finish_slot(std::uint32_t index) {
    slot_rec& r = slots_[index];
    const auto w = static_cast<std::uint32_t>(r.worker);
    worker_rec& rec = *workers_[w];
    --rec.inflight;
    r.worker = -1;
    loop_inflight_[r.loop].fetch_sub(1, std::memory_order_relaxed);
    offload_job* job = r.job;
    if (job == nullptr) {  // orphaned by a cancelled job
        free_slot(index);
        return;
    }
    shm::job_slot* s = view_.slot(index);
    const std::uint64_t len = s->out_len;  // read once: the worker may still scribble
    const shm::result_kind kind = s->kind;
    const std::uint64_t run_ns = s->run_ns;
    const auto* out = view_.base + r.out_off;
    if (len > r.out_cap) {
        job->end = offload_job::outcome::crashed;
        job->message = "tandem: worker " + std::to_string(w) +
                       " returned a result length beyond its region; it was replaced";
        kill_worker(w, "killed: it corrupted the shared arena");
    } else if (kind == shm::result_kind::value) {
        job->end = offload_job::outcome::value;
        job->result = out;
        job->result_size = len;
        ++stats_.jobs_done;
    } else if (kind == shm::result_kind::exception) {
        job->end = offload_job::outcome::remote_error;
        job->message = "tandem: the offloaded job threw " +
                       std::string(reinterpret_cast<const char*>(out), len);
        ++stats_.jobs_done;
    } else {
        job->end = offload_job::outcome::too_large;
        job->message.assign(reinterpret_cast<const char*>(out), len);
    }
    // How long jobs run in the worker steers the loop's spinning. Not the
    // time from sending to reaping: that includes the wake-ups of whoever
    // slept, and would stop the spinning that avoids them.
    std::atomic<std::uint64_t>& avg = spin_[r.loop].job_ns;  // (mutex held: no lost update)
    if (run_ns != shm::not_timed)
        avg.store((avg.load(std::memory_order_relaxed) * 7 +
                   std::min<std::uint64_t>(run_ns, max_loop_spin_ns * 4)) /
                      8,
                  std::memory_order_relaxed);
    deliver(*job);
}

void process_pool_impl::need_space(std::uint32_t index) {
    slot_rec& r = slots_[index];
    shm::job_slot* s = view_.slot(index);
    const std::uint64_t bytes = s->out_len;
    if (r.job != nullptr) r.job->state = offload_job::phase::asking_space;
    if (bytes > SIZE_MAX / 2 || !heap_.could_fit(static_cast<std::size_t>(bytes))) {
        s->state.store(shm::slot_state::space_denied, std::memory_order_release);
        wake_worker(static_cast<std::uint32_t>(r.worker));
        return;
    }
    // The worker decoded its arguments before it ran the job: their block can go.
    if (r.args_block != no_block) {
        heap_.free(r.args_block, r.args_block_bytes);
        r.args_block = no_block;
    }
    const std::size_t rounded = shm::align_up(static_cast<std::size_t>(bytes), arena_heap::granule);
    r.space_need = rounded;
    const std::size_t off = heap_.allocate(rounded);
    if (off == no_block) {
        r.space_waiting = true;
        space_waiters_.push_back(index);
        return;
    }
    grant_space(index, off, rounded);
}

void process_pool_impl::grant_space(std::uint32_t index, std::size_t offset, std::size_t bytes) {
    slot_rec& r = slots_[index];
    shm::job_slot* s = view_.slot(index);
    r.out_block = offset;
    r.out_block_bytes = bytes;
    r.out_off = offset;
    r.out_cap = bytes;
    view_.cold(index)->out_off = offset;
    view_.cold(index)->out_cap = bytes;
    s->state.store(shm::slot_state::space_granted, std::memory_order_release);
    if (r.job != nullptr) r.job->state = offload_job::phase::dispatched;
    wake_worker(static_cast<std::uint32_t>(r.worker));
}

}  // namespace tandem::detail
