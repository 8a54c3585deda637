// SPDX-License-Identifier: MIT
#include <tandem/net.hpp>
#include <tandem/time.hpp>

#include "../uring_op.hpp"
#include "../waiter_list.hpp"
#include "cancel_fd.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>

namespace tandem {

namespace {

// One send or receive is capped below 2 GiB: the kernel's limit per call.
constexpr std::size_t max_io = 0x7ffff000;

[[noreturn]] void fail(int err, const std::string& what) {
    throw std::system_error(err, std::system_category(), "tandem: " + what);
}

}  // namespace

namespace detail {

void cancel_all_on(int fd) noexcept {
    detail::loop* l = detail::this_thread_loop();
    if (l == nullptr) {
        ::shutdown(fd, SHUT_RDWR);  // off the loop: at least end what is pending
        return;
    }
    l->cancel_fd_now(fd);
}

}  // namespace detail

// ---- tcp_stream -------------------------------------------------------------------------------

tcp_stream::tcp_stream(tcp_stream&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), pending_(std::exchange(other.pending_, 0)) {}

tcp_stream& tcp_stream::operator=(tcp_stream&& other) noexcept {
    if (this != &other) {
        close();
        fd_ = std::exchange(other.fd_, -1);
        pending_ = std::exchange(other.pending_, 0);
    }
    return *this;
}

tcp_stream::~tcp_stream() {
    close();
}

void tcp_stream::close() noexcept {
    if (fd_ < 0) return;
    if (pending_ > 0) detail::cancel_all_on(fd_);
    ::close(fd_);
    fd_ = -1;
}

namespace {

task<tcp_stream> connect_to(address to) {
    const int fd = ::socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail(errno, "socket for " + to.to_string());
    tcp_stream stream(fd);  // closes the fd if anything below throws
    if (to.family() != AF_UNIX) {
        // Request-response clients: send small writes at once (no Nagle delay).
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    const int r = co_await detail::uring_op(
        [&](io_uring_sqe* sqe) { io_uring_prep_connect(sqe, fd, to.data(), to.size()); });
    if (r < 0) fail(-r, "connect to " + to.to_string());
    co_return stream;
}

}  // namespace

task<tcp_stream> tcp_stream::connect(const address& to) {
    return connect_to(to);  // the coroutine keeps its own copy of the address
}

task<std::size_t> tcp_stream::read_some(std::span<std::byte> buffer) {
    return receive(buffer, false);
}

task<std::size_t> tcp_stream::receive(std::span<std::byte> buffer, bool poll_first) {
    if (fd_ < 0) fail(EBADF, "read_some on a closed stream");
    const detail::pending_op guard(pending_);
    const int fd = fd_;
    const std::size_t n = std::min(buffer.size(), max_io);
    const int r = co_await detail::uring_op([&](io_uring_sqe* sqe) {
        io_uring_prep_recv(sqe, fd, buffer.data(), n, 0);
        // Nothing can be there yet (a request was just sent): wait for data without trying
        // to receive first.
        if (poll_first) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    });
    if (r == -ECANCELED) throw operation_cancelled();  // close() cut it short
    if (r < 0) fail(-r, "receive");
    co_return static_cast<std::size_t>(r);
}

task<> tcp_stream::read_exact(std::span<std::byte> buffer) {
    while (!buffer.empty()) {
        const std::size_t n = co_await read_some(buffer);
        if (n == 0) throw end_of_stream();
        buffer = buffer.subspan(n);
    }
}

task<> tcp_stream::write_all(std::span<const std::byte> data) {
    while (!data.empty()) {
        if (fd_ < 0) fail(EBADF, "write_all on a closed stream");
        const detail::pending_op guard(pending_);
        const int fd = fd_;
        const std::size_t n = std::min(data.size(), max_io);
        // SEND with MSG_NOSIGNAL, never WRITE: a write to a vanished peer raises SIGPIPE.
        const int r = co_await detail::uring_op(
            [&](io_uring_sqe* sqe) { io_uring_prep_send(sqe, fd, data.data(), n, MSG_NOSIGNAL); });
        if (r == -ECANCELED) throw operation_cancelled();
        if (r < 0) fail(-r, "send");
        data = data.subspan(static_cast<std::size_t>(r));
    }
}

task<> tcp_stream::shutdown_write() {
    if (fd_ < 0) fail(EBADF, "shutdown_write on a closed stream");
    const detail::pending_op guard(pending_);
    const int fd = fd_;
    const int r = co_await detail::uring_op(
        [&](io_uring_sqe* sqe) { io_uring_prep_shutdown(sqe, fd, SHUT_WR); });
    // A connected stream whose peer reset it is no longer connected: the kernel says
    // ENOTCONN, which the stream reports as the reset it was.
    if (r == -ENOTCONN) fail(ECONNRESET, "shutdown (the connection was reset)");
    if (r < 0) fail(-r, "shutdown");
}

address tcp_stream::peer_address() const {
    address a;
    socklen_t len = sizeof(sockaddr_storage);
    if (fd_ < 0 || ::getpeername(fd_, a.data(), &len) != 0) return {};
    a.set_size(len);
    return a;
}

// ---- tcp_listener -----------------------------------------------------------------------------

namespace detail {

struct accept_waiter : waiter {
    int fd = -1;
    int error = 0;
    bool closed = false;  // the listener was closed while it waited
};

/// The listener's multishot accept: the completion the ring points at, the
/// connections nobody asked for yet, and the tasks waiting. Heap-allocated so
/// that it can outlive the listener until the kernel has let go of it; bound to
/// its loop so that it is freed if the loop goes first.
struct accept_state final : completion, posted_item, loop_bound {
    int fd = -1;
    loop* owner = nullptr;      // null once the loop is gone (under bound_mutex())
    bool armed = false;         // a multishot accept is in the kernel
    bool closing = false;       // the listener is gone; delete on the last CQE
    bool close_posted = false;  // closed from another thread: `run` finishes it on the loop
    std::deque<int> ready;
    int pending_error = 0;
    waiter_list waiting;  // tasks in accept(), FIFO

    /// Hands the first waiting task an fd (or an error; both empty: arm the multishot again).
    bool wake_first(int fd_for_it, int error) noexcept {
        auto* w = static_cast<accept_waiter*>(waiting.front());
        if (w == nullptr) return false;
        w->fd = fd_for_it;
        w->error = error;
        waiting.wake(w);
        return true;
    }

    /// Wakes the first waiter to tell it the listener is closed.
    bool wake_closed() noexcept {
        auto* w = static_cast<accept_waiter*>(waiting.front());
        if (w == nullptr) return false;
        w->closed = true;
        waiting.wake(w);
        return true;
    }

    /// A state for listening socket `fd` on `here`; the caller holds bound_mutex().
    static accept_state* make(int fd, loop& here) {
        auto* st = new accept_state;
        st->fd = fd;
        st->owner = &here;
        st->waiting.owner = &here;
        st->complete = &on_complete;
        st->run = [](posted_item* item) noexcept {
            static_cast<accept_state*>(item)->close_on_loop();
        };
        here.bind(st);
        return st;
    }

    /// Frees the state, which nothing on the ring points at any more.
    void destroy() noexcept {
        {
            std::lock_guard lock(bound_mutex());
            if (owner != nullptr) owner->unbind(this);
        }
        delete this;
    }

    /// On the owner's thread: the listener is closed; cancel the multishot, whose
    /// last CQE frees the state.
    void close_on_loop() noexcept {
        for (int ready_fd : ready) ::close(ready_fd);
        ready.clear();
        while (wake_closed()) {
        }
        closing = true;
        if (!armed) {
            destroy();
            return;
        }
        owner->cancel_op_now(this);
    }

    void loop_gone() noexcept override {
        // The ring is gone: no CQE will come. Free the state if the listener is closed.
        owner = nullptr;
        armed = false;
        if (closing || close_posted) delete this;
    }

    static void on_complete(completion* c, int res, std::uint32_t flags) noexcept {
        auto* st = static_cast<accept_state*>(c);
        const bool more = (flags & IORING_CQE_F_MORE) != 0;
        if (!more) st->armed = false;
        if (st->closing) {
            if (res >= 0) ::close(res);
            if (!more) st->destroy();
            return;
        }
        if (res >= 0) {
            if (const int injected = fault_hit(fault_point::accept)) {
                ::close(res);
                res = -injected;
            }
        }
        if (res >= 0) {
            if (!st->wake_first(res, 0)) st->ready.push_back(res);
        } else if (!st->wake_first(-1, -res)) {
            st->pending_error = -res;
        }
        // The multishot ended: someone has to arm it again, from a task (a
        // completion callback must not take SQEs).
        if (!more && res >= 0) st->wake_first(-1, 0);
    }
};

}  // namespace detail

tcp_listener::tcp_listener() noexcept = default;

tcp_listener::tcp_listener(tcp_listener&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), state_(std::exchange(other.state_, nullptr)) {}

tcp_listener& tcp_listener::operator=(tcp_listener&& other) noexcept {
    if (this != &other) {
        close();
        fd_ = std::exchange(other.fd_, -1);
        state_ = std::exchange(other.state_, nullptr);
    }
    return *this;
}

tcp_listener::~tcp_listener() {
    close();
}

tcp_listener tcp_listener::bind(const address& at, int backlog) {
    const int fd = ::socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail(errno, "socket for " + at.to_string());
    tcp_listener listener;
    listener.fd_ = fd;
    if (at.family() != AF_UNIX) {
        const int one = 1;
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (::bind(fd, at.data(), at.size()) != 0) fail(errno, "bind to " + at.to_string());
    if (::listen(fd, backlog) != 0) fail(errno, "listen on " + at.to_string());
    return listener;
}

address tcp_listener::local_address() const {
    address a;
    socklen_t len = sizeof(sockaddr_storage);
    if (fd_ < 0 || ::getsockname(fd_, a.data(), &len) != 0) return {};
    a.set_size(len);
    return a;
}

task<tcp_stream> tcp_listener::accept() {
    if (fd_ < 0) fail(EBADF, "accept on a closed listener");
    detail::loop& here = detail::require_loop("tcp_listener::accept");
    if (state_ == nullptr) {
        std::lock_guard lock(detail::bound_mutex());
        state_ = detail::accept_state::make(fd_, here);
    } else if (state_->owner != &here) {
        std::lock_guard lock(detail::bound_mutex());
        if (state_->owner != nullptr) {
            // Its multishot accept lives on the first loop's ring and wakes tasks there.
            detail::contract_violation(
                "tcp_listener::accept called from another loop than the first");
        }
        // The first loop is gone (a runtime before this one): go on on this one, with the
        // connections it had accepted.
        detail::accept_state* old = std::exchange(state_, detail::accept_state::make(fd_, here));
        state_->ready = std::move(old->ready);
        delete old;
    }
    auto backoff = std::chrono::milliseconds(1);
    for (;;) {
        detail::accept_state* st = state_;
        if (st == nullptr) throw operation_cancelled();  // closed meanwhile
        if (!st->ready.empty()) {
            const int fd = st->ready.front();
            st->ready.pop_front();
            co_return tcp_stream(fd);
        }
        int error = std::exchange(st->pending_error, 0);
        if (error == 0) {
            if (!st->armed) {
                io_uring_sqe* sqe = st->owner->get_sqe();
                io_uring_prep_multishot_accept(sqe, fd_, nullptr, nullptr, SOCK_CLOEXEC);
                io_uring_sqe_set_data(sqe, static_cast<detail::completion*>(st));
                st->armed = true;
            }
            detail::accept_waiter w;
            co_await st->waiting.wait(w);
            if (w.cancelled) throw operation_cancelled();
            if (w.closed) throw operation_cancelled();
            if (w.fd >= 0) co_return tcp_stream(w.fd);
            error = w.error;
            if (error == 0) continue;  // the multishot ended: arm it again
        }
        if (error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM) {
            // Out of fds (or memory): wait for some to be freed rather than spin.
            co_await sleep_for(backoff);
            backoff = std::min(backoff * 2, std::chrono::milliseconds(100));
            continue;
        }
        fail(error, "accept on " + local_address().to_string());
    }
}

void tcp_listener::close() noexcept {
    if (detail::accept_state* st = std::exchange(state_, nullptr)) {
        if (detail::this_thread_loop() == st->owner) {
            st->close_on_loop();
        } else {
            // Off its loop (after the runtime, or from another thread): no task can be waiting
            // in accept() here (they would hold the listener open). If the loop is gone, free
            // the state; otherwise let the loop cancel the multishot and free it.
            std::unique_lock lock(detail::bound_mutex());
            if (st->owner == nullptr) {
                lock.unlock();
                for (int fd : st->ready) ::close(fd);
                delete st;
            } else {
                // Posted under the lock: the loop cannot go meanwhile. If it goes before
                // running the item, loop_gone() frees the state.
                st->close_posted = true;
                st->owner->post(st);  // runs close_on_loop, which also closes the ready fds
            }
        }
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

}  // namespace tandem
