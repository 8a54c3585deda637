// SPDX-License-Identifier: MIT
#include "epoll_backend.hpp"

#include <tandem/detail/thread_pool.hpp>
#include <tandem/runtime.hpp>

#include "fd_advice.hpp"
#include "loop.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>

namespace tandem::detail {

/// The fields of an io_uring_sqe that the interpreter reads (the SQE itself
/// ends in a zero-size array, which cannot sit inside another struct).
struct sqe_fields {
    std::uint8_t opcode = 0;
    std::uint16_t ioprio = 0;
    std::int32_t fd = -1;
    std::uint64_t off = 0;  // also addr2 (accept's addrlen pointer)
    std::uint64_t addr = 0;
    std::uint32_t len = 0;
    std::uint32_t op_flags = 0;  // msg_flags, accept_flags, open_flags, fsync_flags, poll32_events
    std::uint64_t user_data = 0;

    explicit sqe_fields(const io_uring_sqe& s) noexcept
        : opcode(s.opcode),
          ioprio(s.ioprio),
          fd(s.fd),
          off(s.off),
          addr(s.addr),
          len(s.len),
          op_flags(s.msg_flags),
          user_data(s.user_data) {}
    sqe_fields() = default;
};

/// One interpreted SQE that did not finish at once: waiting on its fd's list,
/// or running on a pool thread. Recycled through the backend's free list.
struct epoll_op final : pool_job, posted_item {
    epoll_backend* backend = nullptr;
    thread_pool* pool = nullptr;
    epoll_op* next = nullptr;  // in its fd's waiter list
    epoll_op* prev = nullptr;
    std::uint32_t want = 0;  // EPOLLIN / EPOLLOUT, or a POLL_ADD's mask
    int res = 0;
    int saved_flags = -1;     // connect: the socket's file flags before O_NONBLOCK
    bool connecting = false;  // connect: EINPROGRESS seen
    bool on_thread = false;
    bool stream = false;  // READ/WRITE: the fd has no offset (a pipe, a socket)
    sqe_fields sqe;
};

namespace {

// What one try of an operation ended with: done (its last completion is
// queued), or the events it waits for, or a hand-over to a pool thread.
constexpr std::uint32_t finished = 0;
constexpr std::uint32_t needs_thread = 1u << 31;

constexpr std::uint64_t wake_tag = ~std::uint64_t{0};
constexpr int max_events = 128;
// Accepts per readiness report: others get their turn, and level-triggered
// EPOLLONESHOT reports the listener again at once if more are queued.
constexpr int accepts_per_turn = 64;

[[noreturn]] void fatal(const char* what, int err) noexcept {
    std::fprintf(stderr, "tandem: fatal: %s: %s\n", what, std::strerror(err));
    std::abort();
}

bool would_block(int err) noexcept {
    return err == EAGAIN || err == EWOULDBLOCK;
}

void* ptr(std::uint64_t addr) noexcept {
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(addr));
}

/// -errno of the last call, or its result.
int result(long r) noexcept {
    return r < 0 ? -errno : static_cast<int>(r);
}

/// True for files that are never "ready" to epoll and may block on a disk.
bool is_disk_file(int fd) noexcept {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return false;
    return S_ISREG(st.st_mode) || S_ISBLK(st.st_mode);
}

/// One non-blocking read or write of an IORING_OP_READ / WRITE.
int rw_nowait(epoll_op& op) noexcept {
    const sqe_fields& s = op.sqe;
    iovec iov{ptr(s.addr), s.len};
    for (;;) {
        const off_t at = (op.stream || s.off == ~std::uint64_t{0}) ? -1 : static_cast<off_t>(s.off);
        const long r = s.opcode == IORING_OP_READ ? ::preadv2(s.fd, &iov, 1, at, RWF_NOWAIT)
                                                  : ::pwritev2(s.fd, &iov, 1, at, RWF_NOWAIT);
        // io_uring ignores the offset of a pipe or socket; preadv2 refuses it.
        if (r < 0 && errno == ESPIPE && !op.stream) {
            op.stream = true;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        return result(r);
    }
}

/// The blocking form, on a pool thread.
int run_blocking(epoll_op& op) noexcept {
    const sqe_fields& s = op.sqe;
    long r = 0;
    do {
        switch (s.opcode) {
            case IORING_OP_READ:
            case IORING_OP_WRITE: {
                const bool positioned = !op.stream && s.off != ~std::uint64_t{0};
                const auto at = static_cast<off_t>(s.off);
                if (s.opcode == IORING_OP_READ) {
                    r = positioned ? ::pread(s.fd, ptr(s.addr), s.len, at)
                                   : ::read(s.fd, ptr(s.addr), s.len);
                } else {
                    r = positioned ? ::pwrite(s.fd, ptr(s.addr), s.len, at)
                                   : ::write(s.fd, ptr(s.addr), s.len);
                }
                break;
            }
            case IORING_OP_OPENAT:
                r = ::openat(s.fd, static_cast<const char*>(ptr(s.addr)),
                             static_cast<int>(s.op_flags), static_cast<mode_t>(s.len));
                break;
            case IORING_OP_FSYNC:
                r = (s.op_flags & IORING_FSYNC_DATASYNC) != 0 ? ::fdatasync(s.fd) : ::fsync(s.fd);
                break;
            default:
                return -EOPNOTSUPP;
        }
    } while (r < 0 && errno == EINTR);
    return result(r);
}

}  // namespace

// ---- op_index ----------------------------------------------------------------------------------

void op_index::put(std::uint64_t key, epoll_op* op) {
    if (2 * (used_ + 1) > slots_.size()) grow();
    std::size_t i = home(key);
    while (slots_[i].key != 0 && slots_[i].key != key) i = (i + 1) & mask();
    if (slots_[i].key == 0) ++used_;
    slots_[i] = {key, op};
}

epoll_op* op_index::find(std::uint64_t key) const noexcept {
    if (slots_.empty()) return nullptr;
    for (std::size_t i = home(key); slots_[i].key != 0; i = (i + 1) & mask()) {
        if (slots_[i].key == key) return slots_[i].op;
    }
    return nullptr;
}

void op_index::erase(std::uint64_t key) noexcept {
    if (slots_.empty()) return;
    std::size_t hole = home(key);
    while (slots_[hole].key != key) {
        if (slots_[hole].key == 0) return;  // not there
        hole = (hole + 1) & mask();
    }
    // Backward shift: pull later entries of the probe run into the hole
    // unless that would move one before its home slot.
    for (std::size_t j = (hole + 1) & mask(); slots_[j].key != 0; j = (j + 1) & mask()) {
        const std::size_t h = home(slots_[j].key);
        if (((j - h) & mask()) >= ((j - hole) & mask())) {
            slots_[hole] = slots_[j];
            hole = j;
        }
    }
    slots_[hole] = {};
    --used_;
}

void op_index::grow() {
    std::vector<slot> old(slots_.empty() ? 64 : slots_.size() * 2);
    old.swap(slots_);
    shift_ = 64 - static_cast<unsigned>(__builtin_ctzll(slots_.size()));
    used_ = 0;
    for (const slot& s : old) {
        if (s.key != 0) put(s.key, s.op);
    }
}

// ---- setting up --------------------------------------------------------------------------------

epoll_backend::epoll_backend(loop& owner, int wake_fd) : owner_(owner), wake_fd_(wake_fd) {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) {
        const int err = errno;
        throw std::system_error(err, std::system_category(),
                                "tandem: epoll_create1" + fd_advice(err));
    }
    // The eventfd may be shared with the pool's workers, which only write it.
    ::fcntl(wake_fd_, F_SETFL, ::fcntl(wake_fd_, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = wake_tag;
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
        const int err = errno;
        ::close(epfd_);
        throw std::system_error(err, std::system_category(), "tandem: epoll_ctl (wake eventfd)");
    }
    staged_.reserve(64);
    done_.reserve(256);
    delivering_.reserve(256);
}

epoll_backend::~epoll_backend() {
    ::close(epfd_);
}

io_uring_sqe* epoll_backend::get_sqe() {
    return &staged_.emplace_back();  // value-initialised: zeroed
}

epoll_op* epoll_backend::make_op(const io_uring_sqe& sqe) {
    epoll_op* op;
    if (free_.empty()) {
        op = ops_.emplace_back(std::make_unique<epoll_op>()).get();
    } else {
        op = free_.back();
        free_.pop_back();
        *op = epoll_op{};
    }
    op->sqe = sqe_fields(sqe);
    op->backend = this;
    return op;
}

void epoll_backend::release(epoll_op* op) noexcept {
    free_.push_back(op);  // capacity: ops_ only ever grows, so this never allocates
}

epoll_backend::fd_state& epoll_backend::state_of(int fd) {
    if (static_cast<std::size_t>(fd) >= fds_.size()) fds_.resize(static_cast<std::size_t>(fd) + 64);
    return fds_[static_cast<std::size_t>(fd)];
}

void epoll_backend::complete(std::uint64_t user_data, int res, std::uint32_t flags) {
    if (user_data != 0) done_.push_back({user_data, res, flags});
}

// ---- submitting --------------------------------------------------------------------------------

void epoll_backend::submit() noexcept {
    // An SQE may stage others only from a completion callback, which runs in
    // reap(), never here; the index loop is for safety all the same.
    for (std::size_t i = 0; i < staged_.size(); ++i) {
        const io_uring_sqe sqe = staged_[i];
        try {
            perform(sqe);
        } catch (const std::bad_alloc&) {
            complete(sqe.user_data, -ENOMEM);
        }
    }
    staged_.clear();
}

void epoll_backend::perform(const io_uring_sqe& sqe) {
    switch (sqe.opcode) {
        case IORING_OP_NOP:
            complete(sqe.user_data, 0);
            return;
        case IORING_OP_ASYNC_CANCEL: {
            const int r = cancel(sqe.addr);
            if (r != 0 || (sqe.flags & IOSQE_CQE_SKIP_SUCCESS) == 0) complete(sqe.user_data, r);
            return;
        }
        case IORING_OP_SHUTDOWN:
            complete(sqe.user_data, result(::shutdown(sqe.fd, static_cast<int>(sqe.len))));
            return;
        case IORING_OP_CLOSE:
            complete(sqe.user_data, result(::close(sqe.fd)));
            return;
        case IORING_OP_OPENAT:
        case IORING_OP_FSYNC:
            to_thread(make_op(sqe));
            return;
        case IORING_OP_RECV:
        case IORING_OP_SEND:
        case IORING_OP_RECVMSG:
        case IORING_OP_SENDMSG:
        case IORING_OP_READ:
        case IORING_OP_WRITE:
        case IORING_OP_CONNECT:
        case IORING_OP_ACCEPT:
        case IORING_OP_POLL_ADD:
            break;
        default:
            complete(sqe.user_data, -EOPNOTSUPP);
            return;
    }
    epoll_op* op = make_op(sqe);
    if (sqe.opcode == IORING_OP_CONNECT || sqe.opcode == IORING_OP_ACCEPT) {
        // connect(2) and accept4(2) have no MSG_DONTWAIT. A connecting socket
        // gets its flags back when it is done; a listener keeps O_NONBLOCK.
        const int flags = ::fcntl(sqe.fd, F_GETFL);
        if (flags >= 0 && (flags & O_NONBLOCK) == 0) {
            ::fcntl(sqe.fd, F_SETFL, flags | O_NONBLOCK);
            if (sqe.opcode == IORING_OP_CONNECT) op->saved_flags = flags;
        }
    }
    const std::uint32_t w = attempt(op) ? finished : op->want;
    if (w == finished) {
        release(op);
    } else if (w == needs_thread) {
        to_thread(op);
    } else {
        start_wait(op, w);
    }
}

/// Tries `op` once. True when it is finished (its completion queued); else
/// op->want says what it waits for (events, or needs_thread). For a POLL_ADD,
/// op->res carries the events epoll reported (0 at submission).
bool epoll_backend::attempt(epoll_op* op) noexcept {
    const sqe_fields& s = op->sqe;
    const int fd = s.fd;
    auto done = [&](int res) {
        if (op->saved_flags >= 0) ::fcntl(fd, F_SETFL, op->saved_flags);
        complete(s.user_data, res);
        return true;
    };
    auto wait_for = [&](std::uint32_t events) {
        op->want = events;
        return false;
    };
    long r = 0;
    switch (s.opcode) {
        case IORING_OP_RECV:
            r = ::recv(fd, ptr(s.addr), s.len, static_cast<int>(s.op_flags) | MSG_DONTWAIT);
            break;
        case IORING_OP_SEND:
            r = ::send(fd, ptr(s.addr), s.len,
                       static_cast<int>(s.op_flags) | MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0 && would_block(errno)) return wait_for(EPOLLOUT);
            return done(result(r));
        case IORING_OP_RECVMSG:
            r = ::recvmsg(fd, static_cast<msghdr*>(ptr(s.addr)),
                          static_cast<int>(s.op_flags) | MSG_DONTWAIT);
            break;
        case IORING_OP_SENDMSG:
            r = ::sendmsg(fd, static_cast<const msghdr*>(ptr(s.addr)),
                          static_cast<int>(s.op_flags) | MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0 && would_block(errno)) return wait_for(EPOLLOUT);
            return done(result(r));
        case IORING_OP_READ:
        case IORING_OP_WRITE: {
            const int res = rw_nowait(*op);
            if (res != -EAGAIN && res != -EOPNOTSUPP) return done(res);
            // A disk file is never "ready": block on a pool thread instead.
            if (res == -EOPNOTSUPP || is_disk_file(fd)) return wait_for(needs_thread);
            return wait_for(s.opcode == IORING_OP_READ ? EPOLLIN : EPOLLOUT);
        }
        case IORING_OP_CONNECT:
            if (op->connecting) {
                int err = 0;
                socklen_t len = sizeof err;
                if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
                return done(-err);
            }
            r = ::connect(fd, static_cast<const sockaddr*>(ptr(s.addr)),
                          static_cast<socklen_t>(s.off));
            if (r < 0 && (errno == EINPROGRESS || errno == EINTR)) {
                op->connecting = true;
                return wait_for(EPOLLOUT);
            }
            // A full AF_UNIX backlog: wait for room and connect again.
            if (r < 0 && would_block(errno)) return wait_for(EPOLLOUT);
            return done(result(r));
        case IORING_OP_ACCEPT: {
            const bool multishot = (s.ioprio & IORING_ACCEPT_MULTISHOT) != 0;
            for (int n = 0; n < accepts_per_turn; ++n) {
                const int c =
                    ::accept4(fd, static_cast<sockaddr*>(ptr(s.addr)),
                              static_cast<socklen_t*>(ptr(s.off)), static_cast<int>(s.op_flags));
                if (c < 0) {
                    const int err = errno;
                    if (would_block(err)) return wait_for(EPOLLIN);
                    // The connection went before it was accepted: take the next.
                    if (err == ECONNABORTED || err == EINTR || err == EPROTO) continue;
                    return done(-err);  // ends a multishot too, as io_uring does
                }
                if (!multishot) return done(c);
                complete(s.user_data, c, IORING_CQE_F_MORE);
            }
            return wait_for(EPOLLIN);
        }
        case IORING_OP_POLL_ADD: {
            const std::uint32_t mask = s.op_flags | EPOLLERR | EPOLLHUP;
            const std::uint32_t seen = static_cast<std::uint32_t>(op->res) & mask;
            if (seen != 0) return done(static_cast<int>(seen));
            return wait_for(s.op_flags);
        }
        default:
            return done(-EOPNOTSUPP);
    }
    // RECV, RECVMSG
    if (r < 0 && would_block(errno)) return wait_for(EPOLLIN);
    return done(result(r));
}

// ---- waiting for readiness ---------------------------------------------------------------------

void epoll_backend::start_wait(epoll_op* op, std::uint32_t events) noexcept {
    op->want = events;
    fd_state* st;
    try {
        st = &state_of(op->sqe.fd);
        pending_.put(op->sqe.user_data, op);
    } catch (const std::bad_alloc&) {
        complete(op->sqe.user_data, -ENOMEM);
        release(op);
        return;
    }
    op->prev = st->tail;
    op->next = nullptr;
    (st->tail != nullptr ? st->tail->next : st->head) = op;
    st->tail = op;
    rearm(op->sqe.fd);
}

void epoll_backend::unlink(epoll_op* op) noexcept {
    fd_state& st = fds_[static_cast<std::size_t>(op->sqe.fd)];
    (op->prev != nullptr ? op->prev->next : st.head) = op->next;
    (op->next != nullptr ? op->next->prev : st.tail) = op->prev;
    op->next = op->prev = nullptr;
    // An empty list forgets its registration: the fd may be closed and its
    // number reused before the next operation, which then registers anew.
    if (st.head == nullptr) st.armed = 0;
}

void epoll_backend::rearm(int fd) noexcept {
    fd_state& st = fds_[static_cast<std::size_t>(fd)];
    std::uint32_t want = 0;
    for (epoll_op* op = st.head; op != nullptr; op = op->next) want |= op->want;
    if (want == 0 || (st.armed & want) == want) return;
    // One-shot, level-triggered: each report is acted on, then armed again
    // only if someone still waits (no storm of reports nobody asked for).
    epoll_event ev{};
    ev.events = want | EPOLLONESHOT;
    ev.data.u64 = static_cast<std::uint64_t>(fd);
    int r = ::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
    if (r != 0 && errno == ENOENT) r = ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    if (r == 0) {
        st.armed = want;
        return;
    }
    // The fd cannot be watched (closed, or a kind epoll refuses): fail its waiters.
    const int err = errno;
    while (epoll_op* op = st.head) {
        unlink(op);
        pending_.erase(op->sqe.user_data);
        if (op->saved_flags >= 0) ::fcntl(fd, F_SETFL, op->saved_flags);
        complete(op->sqe.user_data, -err);
        release(op);
    }
}

void epoll_backend::on_ready(int fd, std::uint32_t events) noexcept {
    if (static_cast<std::size_t>(fd) >= fds_.size()) return;
    fd_state& st = fds_[static_cast<std::size_t>(fd)];
    st.armed = 0;  // one-shot: reported, so disarmed
    bool in_blocked = false;
    bool out_blocked = false;
    for (epoll_op* op = st.head; op != nullptr;) {
        epoll_op* next = op->next;
        const std::uint32_t mask = op->want | EPOLLERR | EPOLLHUP;
        const bool in = (op->want & EPOLLIN) != 0;
        // After one EAGAIN in a direction, the rest of that direction would
        // get it too: leave them armed.
        if ((events & mask) != 0 && !(in ? in_blocked : out_blocked)) {
            op->res = static_cast<int>(events);
            if (attempt(op)) {
                unlink(op);
                pending_.erase(op->sqe.user_data);
                release(op);
            } else if (op->want == needs_thread) {
                unlink(op);
                pending_.erase(op->sqe.user_data);
                to_thread(op);
            } else if (in) {
                in_blocked = op->sqe.opcode != IORING_OP_POLL_ADD;
            } else {
                out_blocked = op->sqe.opcode != IORING_OP_POLL_ADD;
            }
        }
        op = next;
    }
    rearm(fd);
}

void epoll_backend::wait(long long timeout_ns) noexcept {
    epoll_event evs[max_events];
    int n;
    for (;;) {
        if (have_pwait2_) {
            timespec ts{};
            if (timeout_ns >= 0) {
                ts.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000);
                ts.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000);
            }
            n = ::epoll_pwait2(epfd_, evs, max_events, timeout_ns >= 0 ? &ts : nullptr, nullptr);
            // A seccomp profile older than epoll_pwait2: milliseconds will do.
            if (n < 0 && (errno == ENOSYS || errno == EPERM)) {
                have_pwait2_ = false;
                continue;
            }
        } else {
            const long long ms = timeout_ns < 0 ? -1 : (timeout_ns + 999'999) / 1'000'000;
            n = ::epoll_wait(epfd_, evs, max_events, static_cast<int>(std::min(ms, 1LL << 30)));
        }
        break;
    }
    if (n < 0) {
        if (errno == EINTR) return;
        fatal("epoll_wait", errno);
    }
    for (int i = 0; i < n; ++i) {
        if (evs[i].data.u64 == wake_tag) {
            std::uint64_t count;
            while (::read(wake_fd_, &count, sizeof count) < 0 && errno == EINTR) {
            }
            continue;
        }
        on_ready(static_cast<int>(evs[i].data.u64), evs[i].events);
    }
}

void epoll_backend::reap() noexcept {
    while (!done_.empty()) {
        delivering_.swap(done_);
        for (const done_entry& d : delivering_) {
            auto* c = reinterpret_cast<completion*>(static_cast<std::uintptr_t>(d.user_data));
            c->complete(c, d.res, d.flags);
        }
        delivering_.clear();
    }
}

// ---- cancelling --------------------------------------------------------------------------------

int epoll_backend::cancel(std::uint64_t target) noexcept {
    epoll_op* op = pending_.find(target);
    if (op == nullptr) return -ENOENT;
    if (op->on_thread) {
        if (op->pool == nullptr || !op->pool->cancel(op)) return -EALREADY;  // it runs to the end
    } else {
        unlink(op);
        if (op->saved_flags >= 0) ::fcntl(op->sqe.fd, F_SETFL, op->saved_flags);
    }
    pending_.erase(target);
    complete(target, -ECANCELED);
    release(op);
    return 0;
}

void epoll_backend::cancel_fd(int fd) noexcept {
    submit();  // an operation still staged would escape the cancel
    if (static_cast<std::size_t>(fd) >= fds_.size()) return;
    while (epoll_op* op = fds_[static_cast<std::size_t>(fd)].head) cancel(op->sqe.user_data);
}

// ---- pool threads ------------------------------------------------------------------------------

void epoll_backend::to_thread(epoll_op* op) noexcept {
    op->on_thread = true;
    try {
        pending_.put(op->sqe.user_data, op);
    } catch (const std::bad_alloc&) {
        complete(op->sqe.user_data, -ENOMEM);
        release(op);
        return;
    }
    op->execute = [](pool_job* job) noexcept { run_on_thread(static_cast<epoll_op*>(job)); };
    op->run = [](posted_item* item) noexcept {
        auto* back = static_cast<epoll_op*>(item);
        epoll_backend* self = back->backend;
        self->pending_.erase(back->sqe.user_data);
        self->complete(back->sqe.user_data, back->res);
        self->release(back);
    };
    // offload_to_thread's pool; a loop without a runtime (or a pool that can
    // start no thread) blocks here instead.
    if (runtime::current() != nullptr) {
        op->pool = &current_thread_pool();
        try {
            op->pool->submit(op);
            return;
        } catch (const std::system_error&) {
            op->pool = nullptr;
        }
    }
    run_on_thread(op);
}

void epoll_backend::run_on_thread(epoll_op* op) noexcept {
    op->res = run_blocking(*op);
    post(op->backend->owner_, op);  // the last touch of *op on this thread
}

}  // namespace tandem::detail
