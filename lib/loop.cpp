// SPDX-License-Identifier: MIT
#include "loop.hpp"

#include "fault.hpp"
#include "fd_advice.hpp"

#include "ring_setup.hpp"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>

namespace tandem::detail {

namespace {

// initial-exec: see lib/frame_pool.cpp.
[[gnu::tls_model("initial-exec")]] thread_local loop* tls_loop = nullptr;

// How long the loop sleeps when its wake-up read could not be armed (no SQE):
// a post from another thread is then seen within this time.
constexpr long long unarmed_wait_ns = 1'000'000;

// On the epoll backend, how many turns with tasks ready the loop takes per
// look at epoll (each look is a system call).
constexpr unsigned busy_turns_per_look = 8;

[[noreturn]] void fatal(const char* what, int err) noexcept {
    std::fprintf(stderr, "tandem: fatal: %s: %s\n", what, std::strerror(err));
    std::abort();
}

}  // namespace

loop* this_thread_loop() noexcept {
    return tls_loop;
}
void set_this_thread_loop(loop* l) noexcept {
    tls_loop = l;
}

// ---- ready_queue, timer_heap ------------------------------------------------

void ready_queue::grow() {
    std::vector<std::coroutine_handle<>> bigger(buf_.empty() ? 256 : buf_.size() * 2);
    std::size_t n = size();
    for (std::size_t i = 0; i < n; ++i) bigger[i] = buf_[(head_ + i) & (buf_.size() - 1)];
    buf_.swap(bigger);
    head_ = 0;
    tail_ = n;
}

void timer_heap::push(timer_node* t) {
    heap_.push_back({t->deadline, t});
    sift_up(heap_.size() - 1, heap_.back());
}

void timer_heap::remove(timer_node* t) noexcept {
    std::size_t i = t->heap_index_;
    t->heap_index_ = static_cast<std::size_t>(-1);
    entry last = heap_.back();
    heap_.pop_back();
    if (i == heap_.size()) return;  // it was the last one
    if (i > 0 && last.deadline < heap_[(i - 1) / 2].deadline) {
        sift_up(i, last);
    } else {
        sift_down(i, last);
    }
}

void timer_heap::sift_up(std::size_t i, entry e) noexcept {
    while (i > 0) {
        std::size_t parent = (i - 1) / 2;
        if (!(e.deadline < heap_[parent].deadline)) break;
        place(i, heap_[parent]);
        i = parent;
    }
    place(i, e);
}

void timer_heap::sift_down(std::size_t i, entry e) noexcept {
    std::size_t n = heap_.size();
    for (;;) {
        std::size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap_[child + 1].deadline < heap_[child].deadline) ++child;
        if (!(heap_[child].deadline < e.deadline)) break;
        place(i, heap_[child]);
        i = child;
    }
    place(i, e);
}

// ---- loop -------------------------------------------------------------------

loop::loop(unsigned entries, int wake_fd, bool use_epoll) {
    if (use_epoll) {
        wake_fd_ = wake_fd >= 0 ? wake_fd : ::eventfd(0, EFD_CLOEXEC);
        if (wake_fd_ < 0) {
            const int err = errno;
            throw std::system_error(err, std::system_category(),
                                    "tandem: eventfd" + fd_advice(err));
        }
        try {
            epoll_ = std::make_unique<epoll_backend>(*this, wake_fd_);
        } catch (...) {
            ::close(wake_fd_);
            throw;
        }
        features_ = "epoll";
        wake_armed_ = true;  // the eventfd is always registered with epoll
        shutdown_item_.run = &on_shutdown;
        return;
    }
    ring_setup_result setup;
    try {
        setup = setup_ring(&ring_, entries);
    } catch (...) {
        if (wake_fd >= 0) ::close(wake_fd);
        throw;
    }
    features_ = std::move(setup.description);
    skip_cancel_cqe_ = (setup.features & IORING_FEAT_CQE_SKIP) != 0;
    // Blocking eventfd on purpose: io_uring arms a poll for it rather than
    // failing the read with EAGAIN.
    wake_fd_ = wake_fd >= 0 ? wake_fd : ::eventfd(0, EFD_CLOEXEC);
    if (wake_fd_ < 0) {
        int err = errno;
        io_uring_queue_exit(&ring_);
        throw std::system_error(err, std::system_category(), "tandem: eventfd" + fd_advice(err));
    }
    wake_op_.complete = &on_wake;
    shutdown_item_.run = &on_shutdown;
}

loop::~loop() {
    if (epoll_) {
        epoll_.reset();
    } else {
        io_uring_queue_exit(&ring_);
    }
    ::close(wake_fd_);
    std::lock_guard lock(bound_mutex());
    while (loop_bound* b = bound_) {
        unbind(b);
        b->loop_gone();
    }
}

std::mutex& bound_mutex() noexcept {
    static std::mutex m;
    return m;
}

void loop::bind(loop_bound* b) noexcept {
    b->bound_prev_ = nullptr;
    b->bound_next_ = bound_;
    if (bound_ != nullptr) bound_->bound_prev_ = b;
    bound_ = b;
}

void loop::unbind(loop_bound* b) noexcept {
    (b->bound_prev_ != nullptr ? b->bound_prev_->bound_next_ : bound_) = b->bound_next_;
    if (b->bound_next_ != nullptr) b->bound_next_->bound_prev_ = b->bound_prev_;
    b->bound_next_ = b->bound_prev_ = nullptr;
}

io_uring_sqe* loop::get_sqe() {
    if (const int injected = fault_hit(fault_point::sqe)) {
        throw std::system_error(injected, std::system_category(),
                                "tandem: no submission queue entry (fault injected)");
    }
    if (epoll_) return epoll_->get_sqe();
    for (;;) {
        if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
        // SQ full: submit what is queued. If the kernel pushes back because
        // completions are piling up (-EBUSY with CQ overflow), reap them into
        // the ready queue (reaping only queues coroutines) and try again.
        int r = io_uring_submit(&ring_);
        if (r >= 0 || r == -EINTR) continue;
        if (r == -EBUSY || r == -EAGAIN) {
            flush_overflow();
            reap();
            continue;
        }
        throw std::system_error(-r, std::system_category(), "tandem: io_uring_submit");
    }
}

void loop::cancel_op(const completion* target) {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel64(sqe, reinterpret_cast<std::uint64_t>(target), 0);
    io_uring_sqe_set_data64(sqe, 0);
    if (skip_cancel_cqe_) sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

void loop::cancel_fd_now(int fd) noexcept {
    if (epoll_) {
        epoll_->cancel_fd(fd);
        return;
    }
    // Submitting first matters: an operation still in the SQ would escape the
    // cancel and later run on a closed, perhaps reused, fd number.
    io_uring_submit(&ring_);
    io_uring_sync_cancel_reg reg{};
    reg.fd = fd;
    reg.flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
    reg.timeout.tv_sec = -1;
    reg.timeout.tv_nsec = -1;
    if (io_uring_register_sync_cancel(&ring_, &reg) < 0) ::shutdown(fd, SHUT_RDWR);
}

void loop::cancel_op_now(const completion* target) noexcept {
    if (epoll_) {
        epoll_->submit();
        epoll_->cancel(reinterpret_cast<std::uint64_t>(target));
        return;
    }
    io_uring_submit(&ring_);
    io_uring_sync_cancel_reg reg{};
    reg.addr = reinterpret_cast<std::uint64_t>(target);
    reg.timeout.tv_sec = -1;
    reg.timeout.tv_nsec = -1;
    io_uring_register_sync_cancel(&ring_, &reg);
}

void loop::post(posted_item* item) noexcept {
    posted_item* head = inbox_.load(std::memory_order_relaxed);
    do {
        item->next_ = head;
    } while (!inbox_.compare_exchange_weak(head, item, std::memory_order_release,
                                           std::memory_order_relaxed));
    if (head == nullptr) {
        // The inbox was empty: this producer owes the loop a wake-up. A write
        // while the loop is awake only leaves the counter set; the armed read
        // then completes at the next wait.
        std::uint64_t one = 1;
        while (::write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
        }
    }
}

void loop::timer_arm(timer_node* t) {
    if (t->armed()) timers_.remove(t);
    timers_.push(t);
}

void loop::timer_cancel(timer_node* t) noexcept {
    if (t->armed()) timers_.remove(t);
}

void loop::request_shutdown() noexcept {
    post(&shutdown_item_);
}

void loop::on_shutdown(posted_item* item) noexcept {
    // shutdown_item_ is a member: find the loop from the calling thread.
    (void)item;
    loop* self = this_thread_loop();
    self->shutting_down_ = true;
    self->roots_.request_stop();
}

void loop::on_wake(completion* c, int res, std::uint32_t) noexcept {
    (void)c;
    (void)res;
    // Completion callbacks must not take SQEs (they may run inside get_sqe):
    // the loop re-arms the read at the top of its next turn.
    this_thread_loop()->wake_armed_ = false;
}

void loop::arm_wake() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_read(sqe, wake_fd_, &wake_buf_, sizeof wake_buf_, 0);
    io_uring_sqe_set_data(sqe, &wake_op_);
    wake_armed_ = true;
}

void loop::drain_posted() noexcept {
    // A plain load first: most turns find the inbox empty, and an exchange
    // (a locked instruction) costs several times more.
    if (inbox_.load(std::memory_order_relaxed) == nullptr) return;
    posted_item* list = inbox_.exchange(nullptr, std::memory_order_acquire);
    posted_item* fifo = nullptr;  // the stack is LIFO: reverse it
    while (list != nullptr) {
        posted_item* next = list->next_;
        list->next_ = fifo;
        fifo = list;
        list = next;
    }
    while (fifo != nullptr) {
        posted_item* next = fifo->next_;
        fifo->run(fifo);
        fifo = next;
    }
}

void loop::run_ready() noexcept {
    // Only what was ready when the turn began: tasks that yield or are woken
    // now run after the next look at the ring, so I/O keeps flowing.
    for (std::size_t n = ready_.size(); n > 0; --n) ready_.pop().resume();
}

void loop::fire_timers() noexcept {
    if (timers_.empty()) return;
    auto now = std::chrono::steady_clock::now();
    while (!timers_.empty() && timers_.top_deadline() <= now) {
        timer_node* t = timers_.top();
        timers_.remove(t);
        t->fire(t);
    }
}

void loop::flush_overflow() noexcept {
    if (io_uring_cq_has_overflow(&ring_)) io_uring_get_events(&ring_);
}

void loop::reap() noexcept {
    for (;;) {
        unsigned head;
        unsigned seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            ++seen;
            auto* c = reinterpret_cast<completion*>(io_uring_cqe_get_data(cqe));
            if (c != nullptr) c->complete(c, cqe->res, cqe->flags);
        }
        io_uring_cq_advance(&ring_, seen);
        // With IORING_FEAT_NODROP the kernel keeps what did not fit in the CQ;
        // bring it in so nothing waits for another turn.
        if (!io_uring_cq_has_overflow(&ring_)) return;
        io_uring_get_events(&ring_);
    }
}

void loop::epoll_wait_and_reap() {
    epoll_->submit();
    bool idle = ready_.empty() && !epoll_->has_completions() &&
                inbox_.load(std::memory_order_relaxed) == nullptr;
    if (idle && poller_ != nullptr && poller_->before_sleep(*this)) idle = false;
    // With tasks ready, a look at epoll is a system call that usually finds
    // nothing (io_uring's CQ is read without one): look every few busy turns.
    if (!idle && ++busy_turns_ % busy_turns_per_look != 0) {
        epoll_->reap();
        return;
    }
    long long ns = 0;
    if (idle && timers_.empty()) {
        ns = -1;
    } else if (idle) {
        auto left = timers_.top_deadline() - std::chrono::steady_clock::now();
        ns = std::max<long long>(
            0, std::chrono::duration_cast<std::chrono::nanoseconds>(left).count());
    }
    epoll_->wait(ns);
    epoll_->reap();
}

void loop::wait_and_reap() {
    if (epoll_) {
        epoll_wait_and_reap();
        return;
    }
    bool idle = ready_.empty() && inbox_.load(std::memory_order_relaxed) == nullptr;
    if (idle && poller_ != nullptr && poller_->before_sleep(*this)) idle = false;
    int r;
    if (!idle) {
        r = io_uring_submit(&ring_);  // enters with GETEVENTS when work is pending
    } else if (timers_.empty() && wake_armed_) {
        r = io_uring_submit_and_wait(&ring_, 1);
    } else {
        auto left = timers_.empty() ? std::chrono::steady_clock::duration::max()
                                    : timers_.top_deadline() - std::chrono::steady_clock::now();
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        if (ns < 0) ns = 0;
        if (!wake_armed_) ns = std::min<long long>(ns, unarmed_wait_ns);
        __kernel_timespec ts{};
        ts.tv_sec = ns / 1'000'000'000;
        ts.tv_nsec = ns % 1'000'000'000;
        io_uring_cqe* cqe = nullptr;
        r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    }
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
        fatal("io_uring_enter", -r);
    }
    reap();
}

void loop::run() {
    set_this_thread_loop(this);
    for (;;) {
        drain_posted();
        if (poller_ != nullptr) poller_->poll(*this);
        run_ready();
        fire_timers();
        if (shutting_down_ && live_roots_ == 0 && ready_.empty()) break;
        if (!wake_armed_) {
            try {
                arm_wake();
            } catch (const std::system_error&) {
                // No SQE now (a broken ring, or a fault test): wait_and_reap
                // sleeps briefly instead of until woken, and this retries.
            }
        }
        wait_and_reap();
    }
    set_this_thread_loop(nullptr);
}

// ---- the detail API used by public templates ---------------------------------

loop* current_loop() noexcept {
    return tls_loop;
}

loop& require_loop(const char* what) noexcept {
    if (tls_loop == nullptr) {
        std::fprintf(stderr, "tandem: %s must be called from a task on an io thread\n", what);
        std::abort();
    }
    return *tls_loop;
}

void schedule(std::coroutine_handle<> h) noexcept {
    require_loop("schedule").schedule(h);
}

void post(loop& target, posted_item* item) noexcept {
    target.post(item);
}

void timer_arm(timer_node* t) {
    require_loop("a timer").timer_arm(t);
}

void timer_cancel(timer_node* t) noexcept {
    if (t->armed()) require_loop("a timer").timer_cancel(t);
}

}  // namespace tandem::detail
