// SPDX-License-Identifier: MIT
// http_peer_blocking: HTTP load peers of http_bench built on blocking sockets and threads.
// Command line, workload and output: http_peer_common.hpp. --mode is required:
//
//   thread-per-request   The main thread opens the N connections into a FIFO pool, then for
//                        every request takes a free connection (waiting while all N are busy)
//                        and starts a NEW std::thread, detached, that sends the request, reads
//                        the response with blocking recv(), puts the connection back and
//                        exits. At most N requests, so about N threads, are in flight: the
//                        classic "spawn a thread per job" client, with the connection reuse
//                        every other peer gets. A thread the system refuses to create
//                        (EAGAIN: threads, memory) is one error; the dispatcher then waits
//                        1 ms before trying again.
//   pool                 --threads T threads (default 64), created once; each takes a free
//                        connection from the same FIFO pool, makes one blocking request on
//                        it, puts it back, and loops. At most min(T, N) requests in flight;
//                        with N > T every connection still gets used, T at a time.
//
// Sockets are blocking with 10 s send/receive timeouts (an error, never a hang); latency is
// measured around send + receive, so thread start-up is not in it but is in the CPU time.
// --idle is not supported here.

#include "http_peer_common.hpp"

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cerrno>

namespace {

using http_peer::load_state;
using http_peer::peer_args;
using http_peer::response_parser;

struct connection {
    int fd = -1;
    response_parser parser;

    void close() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

/// A connected socket, or -1.
int open_socket(const peer_args& a) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    const int one = 1;
    const timeval timeout{10, 0};
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    int r;
    do {
        r = ::connect(fd, reinterpret_cast<const sockaddr*>(&a.address), sizeof a.address);
    } while (r != 0 && errno == EINTR);
    if (r != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

bool send_all(int fd, const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        sent += static_cast<std::size_t>(n);
    }
    return true;
}

/// One request on c, counted in st. A failure closes c; the next request reconnects it.
void one_request(connection& c, const peer_args& a, load_state& st) {
    if (c.fd < 0) {
        c.fd = open_socket(a);
        c.parser.reset();
        if (c.fd < 0) {
            st.error();
            std::this_thread::sleep_for(std::chrono::milliseconds(10));  // no busy loop
            return;
        }
    }
    const std::int64_t start = http_peer::now_ns();
    if (!send_all(c.fd, a.request)) {
        c.close();
        st.error();
        return;
    }
    char buf[http_peer::recv_buffer_bytes];
    for (;;) {
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        const auto got = n > 0    ? c.parser.feed(buf, static_cast<std::size_t>(n))
                         : n == 0 ? c.parser.finish()
                                  : response_parser::outcome::bad;
        if (got == response_parser::outcome::more) continue;
        if (got == response_parser::outcome::done && c.parser.status() == 200) {
            st.ok(http_peer::now_ns() - start);
        } else {
            st.error();
        }
        if (got == response_parser::outcome::bad || n == 0 || !c.parser.keep_alive()) c.close();
        return;
    }
}

/// The N connections, handed out first in, first out, so all of them carry load.
class connection_pool {
public:
    connection_pool(const peer_args& a, load_state& st)
        : all_(static_cast<std::size_t>(a.connections)) {
        for (connection& c : all_) {
            c.fd = open_socket(a);
            if (c.fd < 0) st.error();
            free_.push_back(&c);
        }
    }
    ~connection_pool() {
        for (connection& c : all_) c.close();
    }
    connection* acquire() {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return !free_.empty(); });
        connection* c = free_.front();
        free_.pop_front();
        return c;
    }
    void release(connection* c) {
        {
            std::lock_guard lock(mutex_);
            free_.push_back(c);
        }
        ready_.notify_one();
    }

private:
    std::vector<connection> all_;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<connection*> free_;
};

void run_thread_per_request(const peer_args& a, load_state& st, connection_pool& pool) {
    std::mutex mutex;
    std::condition_variable all_done;
    int live = 0;
    st.start();
    while (st.next()) {
        connection* c = pool.acquire();
        {
            std::lock_guard lock(mutex);
            ++live;
        }
        try {
            std::thread([&, c] {
                one_request(*c, a, st);
                pool.release(c);
                std::lock_guard lock(mutex);  // notified under the lock: see the wait below
                if (--live == 0) all_done.notify_all();
            }).detach();
        } catch (const std::system_error&) {
            {
                std::lock_guard lock(mutex);
                --live;
            }
            st.error();
            pool.release(c);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    // After this wait no thread touches mutex, all_done, pool or st again: each one's last
    // access is the notify, made while holding the mutex this wait reacquires.
    std::unique_lock lock(mutex);
    all_done.wait(lock, [&] { return live == 0; });
    st.stop();
}

void run_pool(const peer_args& a, load_state& st, connection_pool& pool) {
    const int threads = a.threads > 0 ? a.threads : 64;
    std::vector<std::thread> workers;
    st.start();
    for (int i = 0; i < threads; ++i) {
        try {
            workers.emplace_back([&] {
                while (st.next()) {
                    connection* c = pool.acquire();
                    one_request(*c, a, st);
                    pool.release(c);
                }
            });
        } catch (const std::system_error& e) {
            std::fprintf(stderr, "http_peer_blocking: only %d threads: %s\n", i, e.what());
            break;
        }
    }
    for (std::thread& t : workers) t.join();
    st.stop();
}

}  // namespace

int main(int argc, char** argv) {
    const peer_args a = http_peer::parse_args(argc, argv);
    if (a.idle > 0) http_peer::usage(argv[0], "--idle is not supported by this peer");
    if (a.mode != "thread-per-request" && a.mode != "pool")
        http_peer::usage(argv[0], "--mode must be thread-per-request or pool");
    http_peer::raise_fd_limit();
    load_state st(a);
    connection_pool pool(a, st);
    if (a.mode == "pool") {
        run_pool(a, st, pool);
    } else {
        run_thread_per_request(a, st, pool);
    }
    st.print_result();
    return 0;
}
