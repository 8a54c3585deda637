// SPDX-License-Identifier: MIT
#pragma once

// chaos_proxy: a seeded TCP proxy on 127.0.0.1 (port 0) in front of a target address, for the
// fault-injection tests (tests/chaos_test.cpp). Each accepted connection gets a fault plan
// drawn from the seed:
//   pass      bytes go through unchanged
//   delay     each chunk read is held 0..max_delay_ms before it is forwarded (both directions)
//   split     the first split_bytes of each direction go out as 1-byte sends, TCP_NODELAY on
//   truncate  in one direction, after K bytes the destination gets a FIN and later bytes are
//             read and dropped ("cut" once a byte is dropped)
//   reset     in one direction, when byte K+1 arrives, both sides are closed with SO_LINGER 0
//             (an RST each way) ("fired" then)
//   stall     in one direction, bytes after the K-th are held, the connection kept open, until
//             calm() (only when asked for: not in the default kinds)
// Plan kinds go round in a seeded shuffled cycle of the (kind, direction) pairs allowed (seven
// for the default kinds), so every block of seven connections holds one of each; K and the delays
// are random.
//
// Why plain poll(2) on one thread of its own, not a tandem runtime: the proxy is the yardstick
// the library is measured with, so a tandem bug (a lost wakeup, a wrong byte count) must not be
// able to hide in it. Non-blocking sockets and one poll loop, rather than a thread per
// direction, because a reset must close both fds of a connection at once, which would race
// with another thread blocked on them; and one thread means nothing to reap and no leak.
//
// Lifetime: the constructor binds, listens and starts the thread; the destructor stops it,
// closes every fd (open connections with a plain close) and joins it. Thread safety: the
// accessors may be called from any thread while the proxy runs. Replay: the seed comes from
// TANDEM_TEST_SEED when set (chaos_proxy::test_seed); the plan of the n-th connection depends
// only on the seed and n.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <list>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace chaos {

enum class fault { pass, delay, split, truncate, reset, stall };

/// True for the kinds that act in one direction after K bytes.
inline bool one_way(fault k) {
    return k == fault::truncate || k == fault::reset || k == fault::stall;
}
enum class direction { to_server, to_client };

struct plan {
    fault kind = fault::pass;
    direction dir = direction::to_server;  ///< for truncate and reset
    std::size_t after_bytes = 0;           ///< K, for truncate and reset

    std::string describe() const {
        static constexpr const char* names[] = {"pass",     "delay", "split",
                                                "truncate", "reset", "stall"};
        std::string s = names[static_cast<int>(kind)];
        if (one_way(kind)) {
            s += dir == direction::to_server ? " to_server after " : " to_client after ";
            s += std::to_string(after_bytes);
        }
        return s;
    }
};

/// What happened to one connection; filled in by the proxy thread.
struct record {
    plan p;
    std::uint16_t client_port = 0;  ///< the port the client connected from
    bool fired = false;   ///< truncate: a byte was dropped; reset: the RST was sent; stall: held
    bool closed = false;  ///< the proxy is done with it
    bool peer_error = false;  ///< a send or receive failed (a reset passed on)
    std::size_t to_server_bytes = 0, to_client_bytes = 0;  ///< forwarded
};

struct options {
    unsigned max_delay_ms = 3;
    std::size_t split_bytes = 4096;
    std::size_t max_after_to_server = 512;  ///< K < this for faults towards the server
    std::size_t max_after_to_client = 512;  ///< K < this for faults towards the client
    /// The plan kinds drawn; a kind not listed is never drawn.
    std::vector<fault> kinds = {fault::pass, fault::delay, fault::split, fault::truncate,
                                fault::reset};
};

/// TANDEM_TEST_SEED if set, else a random seed.
inline std::uint64_t test_seed() {
    if (const char* s = std::getenv("TANDEM_TEST_SEED"); s != nullptr && *s != '\0')
        return std::strtoull(s, nullptr, 10);
    return std::random_device{}();
}

class proxy {
public:
    /// Listens on 127.0.0.1:0 and forwards every connection to 127.0.0.1:`target_port`.
    /// Throws std::system_error if a socket cannot be made.
    proxy(std::uint16_t target_port, std::uint64_t seed, options o = {})
        : options_(std::move(o)),
          rng_(static_cast<std::uint32_t>(seed ^ (seed >> 32))),
          delay_rng_(static_cast<std::uint32_t>(seed * 31 + 7)) {
        target_.sin_family = AF_INET;
        target_.sin_port = htons(target_port);
        target_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        sockaddr_in at = target_;
        at.sin_port = 0;
        socklen_t len = sizeof at;
        if (listen_fd_ < 0 || wake_fd_ < 0 ||
            ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
            ::listen(listen_fd_, 1024) != 0 ||
            ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&at), &len) != 0) {
            const int e = errno;
            close_listeners();
            throw std::system_error(e, std::system_category(), "chaos_proxy: listen");
        }
        port_ = ntohs(at.sin_port);
        thread_ = std::thread([this] { run(); });
    }

    ~proxy() {
        stop_.store(true);
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto w = ::write(wake_fd_, &one, sizeof one);
        thread_.join();
        close_listeners();
    }
    proxy(const proxy&) = delete;
    proxy& operator=(const proxy&) = delete;

    std::uint16_t port() const noexcept { return port_; }

    /// Plans drawn for connections accepted from now on.
    void set_kinds(std::vector<fault> kinds) {
        std::lock_guard lock(mutex_);
        options_.kinds = std::move(kinds);
        cycle_.clear();
    }
    /// From now on every connection, open ones too, passes bytes through unchanged (a
    /// direction already truncated stays truncated).
    void calm() { calm_.store(true); }

    std::vector<record> records() const {
        std::lock_guard lock(mutex_);
        return records_;
    }
    std::size_t connections() const {
        std::lock_guard lock(mutex_);
        return records_.size();
    }
    /// Connections whose fault fired, by kind.
    std::size_t fired(fault kind) const {
        std::lock_guard lock(mutex_);
        return static_cast<std::size_t>(
            std::count_if(records_.begin(), records_.end(),
                          [&](const record& r) { return r.fired && r.p.kind == kind; }));
    }
    /// Every connection accepted so far is closed by the proxy.
    bool all_closed() const {
        std::lock_guard lock(mutex_);
        return std::all_of(records_.begin(), records_.end(),
                           [](const record& r) { return r.closed; });
    }

private:
    using clock = std::chrono::steady_clock;
    static constexpr std::size_t chunk = 16 * 1024;

    struct half {  // one direction of a connection
        int src = -1, dst = -1;
        std::vector<char> buf = std::vector<char>(chunk);
        std::size_t off = 0, len = 0;
        clock::time_point ready_at{};
        bool src_eof = false, dst_shut = false, cut = false;
        std::size_t forwarded = 0;
        bool pending() const { return off < len; }
    };
    struct conn {
        int client = -1, upstream = -1;
        bool connected = false;
        std::size_t index = 0;  // into records_
        plan p;
        half up, down;  // up: client to server; down: server to client
    };

    void close_listeners() {
        if (listen_fd_ >= 0) ::close(listen_fd_);
        if (wake_fd_ >= 0) ::close(wake_fd_);
        listen_fd_ = wake_fd_ = -1;
    }

    plan draw_plan() {  // under mutex_
        if (cycle_.empty()) {
            for (fault k : options_.kinds) {
                if (one_way(k)) {
                    cycle_.push_back({k, direction::to_server, 0});
                    cycle_.push_back({k, direction::to_client, 0});
                } else {
                    cycle_.push_back({k, direction::to_server, 0});
                }
            }
            if (cycle_.empty()) cycle_.push_back({});
            std::shuffle(cycle_.begin(), cycle_.end(), rng_);
        }
        plan p = cycle_.back();
        cycle_.pop_back();
        const std::size_t range = p.dir == direction::to_server ? options_.max_after_to_server
                                                                : options_.max_after_to_client;
        p.after_bytes = range == 0 ? 0 : rng_() % range;
        return p;
    }

    void accept_all() {
        for (;;) {
            sockaddr_in from{};
            socklen_t len = sizeof from;
            const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&from), &len,
                                     SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) return;  // EAGAIN, or out of fds: try on the next readiness
            const int up = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
            if (up < 0) {
                abort_fd(fd);
                continue;
            }
            const int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            ::setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            conn& c = conns_.emplace_back();
            c.client = fd;
            c.upstream = up;
            c.up.src = c.down.dst = fd;
            c.up.dst = c.down.src = up;
            {
                std::lock_guard lock(mutex_);
                c.p = draw_plan();
                c.index = records_.size();
                record& r = records_.emplace_back();
                r.p = c.p;
                r.client_port = ntohs(from.sin_port);
            }
            const int r =
                ::connect(up, reinterpret_cast<const sockaddr*>(&target_), sizeof target_);
            c.connected = r == 0;
            if (r != 0 && errno != EINPROGRESS) finish(c, true, true);
        }
    }

    static void abort_fd(int fd) {
        const linger l{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        ::close(fd);
    }

    /// Closes both sockets (with RSTs if `reset`); marks the connection for removal.
    void finish(conn& c, bool reset, bool peer_error) {
        for (int fd : {c.client, c.upstream}) {
            if (fd < 0) continue;
            if (reset) {
                abort_fd(fd);
            } else {
                ::close(fd);
            }
        }
        c.client = c.upstream = -1;
        std::lock_guard lock(mutex_);
        record& r = records_[c.index];
        r.closed = true;
        r.peer_error = r.peer_error || peer_error;
        r.to_server_bytes = c.up.forwarded;
        r.to_client_bytes = c.down.forwarded;
    }

    void mark_fired(const conn& c) {
        std::lock_guard lock(mutex_);
        records_[c.index].fired = true;
    }

    bool faulted(const conn& c, const half& h, fault kind) const {
        if (calm_.load() || c.p.kind != kind) return false;
        if (one_way(kind)) return (&h == &c.up) == (c.p.dir == direction::to_server);
        return true;
    }

    /// Reads into `h` (or drops what arrives after a truncation). False if the connection
    /// was closed.
    bool receive(conn& c, half& h) {
        const ssize_t n = ::recv(h.src, h.buf.data(), h.buf.size(), 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
            finish(c, true, true);  // pass the reset on
            return false;
        }
        if (n == 0) {
            h.src_eof = true;
            if (!h.pending()) shut(h);
            return true;
        }
        if (h.cut) return true;  // truncated: dropped
        h.off = 0;
        h.len = static_cast<std::size_t>(n);
        h.ready_at = clock::now();
        if (faulted(c, h, fault::delay) && options_.max_delay_ms > 0)
            h.ready_at += std::chrono::milliseconds(delay_rng_() % (options_.max_delay_ms + 1));
        return true;
    }

    void shut(half& h) {
        if (h.dst_shut) return;
        h.dst_shut = true;
        ::shutdown(h.dst, SHUT_WR);
    }

    /// Forwards what `h` holds, as the plan says. False if the connection was closed.
    bool send(conn& c, half& h) {
        std::size_t n = h.len - h.off;
        if (faulted(c, h, fault::stall) && h.forwarded >= c.p.after_bytes) {
            // Hold the bytes; look again in 20 ms (calm() lets them go).
            mark_fired(c);
            h.ready_at = clock::now() + std::chrono::milliseconds(20);
            return true;
        }
        const bool truncating = faulted(c, h, fault::truncate);
        if (truncating || faulted(c, h, fault::reset)) {
            if (h.forwarded >= c.p.after_bytes) {
                mark_fired(c);
                if (!truncating) {
                    finish(c, true, false);
                    return false;
                }
                h.cut = true;
                h.off = h.len = 0;
                shut(h);
                return true;
            }
            n = std::min(n, c.p.after_bytes - h.forwarded);
        }
        if (faulted(c, h, fault::split) && h.forwarded < options_.split_bytes) n = 1;
        if (faulted(c, h, fault::stall)) n = std::min(n, c.p.after_bytes - h.forwarded);
        const ssize_t w = ::send(h.dst, h.buf.data() + h.off, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
            finish(c, true, true);
            return false;
        }
        h.off += static_cast<std::size_t>(w);
        h.forwarded += static_cast<std::size_t>(w);
        if (!h.pending()) {
            h.off = h.len = 0;
            if (h.src_eof) shut(h);
        }
        return true;
    }

    static short want_in(const half& h) { return !h.src_eof && !h.pending() ? POLLIN : 0; }
    static short want_out(const half& h, clock::time_point now) {
        return h.pending() && h.ready_at <= now ? POLLOUT : 0;
    }

    /// One poll round over every connection; returns once something was handled.
    void round() {
        const auto now = clock::now();
        std::vector<pollfd> fds = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
        int wait_ms = -1;
        for (conn& c : conns_) {
            short client = 0, upstream = 0;
            if (!c.connected) {
                upstream = POLLOUT;
            } else {
                client = static_cast<short>(want_in(c.up) | want_out(c.down, now));
                upstream = static_cast<short>(want_in(c.down) | want_out(c.up, now));
                for (const half* h : {&c.up, &c.down}) {
                    if (!h->pending() || h->ready_at <= now) continue;
                    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(h->ready_at - now);
                    wait_ms = wait_ms < 0 ? int(ms.count()) : std::min(wait_ms, int(ms.count()));
                }
            }
            // A negative fd is skipped: no POLLHUP spinning while a connection waits on a timer.
            fds.push_back({client != 0 ? c.client : -1, client, 0});
            fds.push_back({upstream != 0 ? c.upstream : -1, upstream, 0});
        }
        if (::poll(fds.data(), fds.size(), wait_ms) < 0) return;
        if (fds[1].revents != 0) accept_all();
        std::size_t i = 2;
        for (auto it = conns_.begin(); it != conns_.end() && i < fds.size(); i += 2) {
            conn& c = *it;
            handle(c, fds[i].revents, fds[i + 1].revents);
            const bool done =
                c.client < 0 || (c.up.src_eof && c.down.src_eof && !c.up.pending() &&
                                 !c.down.pending() && c.up.dst_shut && c.down.dst_shut);
            if (done && c.client >= 0) finish(c, false, false);
            it = done ? conns_.erase(it) : std::next(it);
        }
    }

    void handle(conn& c, short client, short upstream) {
        constexpr short in = POLLIN | POLLHUP | POLLERR, out = POLLOUT | POLLHUP | POLLERR;
        if (!c.connected) {
            if (upstream == 0) return;
            int err = 0;
            socklen_t len = sizeof err;
            ::getsockopt(c.upstream, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) return finish(c, true, true);
            c.connected = true;
            return;
        }
        const auto now = clock::now();
        if ((client & in) != 0 && want_in(c.up) != 0 && !receive(c, c.up)) return;
        if ((upstream & in) != 0 && want_in(c.down) != 0 && !receive(c, c.down)) return;
        if ((upstream & out) != 0 && want_out(c.up, now) != 0 && !send(c, c.up)) return;
        if ((client & out) != 0 && want_out(c.down, now) != 0) send(c, c.down);
    }

    void run() {
        while (!stop_.load()) round();
        for (conn& c : conns_) finish(c, false, false);
        conns_.clear();
    }

    options options_;
    std::mt19937 rng_;        // plans: the n-th plan depends on the seed and n only
    std::mt19937 delay_rng_;  // delays, drawn in an order that depends on timing
    std::vector<plan> cycle_;
    sockaddr_in target_{};
    int listen_fd_ = -1, wake_fd_ = -1;
    std::uint16_t port_ = 0;
    std::list<conn> conns_;  // proxy thread only
    mutable std::mutex mutex_;
    std::vector<record> records_;  // under mutex_
    std::atomic<bool> stop_{false}, calm_{false};
    std::thread thread_;
};

}  // namespace chaos
