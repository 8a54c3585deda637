// SPDX-License-Identifier: MIT
// The tandem and raw liburing echo servers (echo_servers.hpp); Asio's is in
// echo_asio.cpp.
#include "echo_servers.hpp"

#include <tandem/net.hpp>
#include <tandem/runtime.hpp>
#include <tandem/task_group.hpp>

#include "ring_setup.hpp"

#include <liburing.h>

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <future>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace echo {

namespace detail {

void server::attach_thread(int cpu) {
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
    }
    tid_ = static_cast<int>(::gettid());
}

namespace {

[[noreturn]] void fail(int err, const char* what) {
    throw std::system_error(err, std::system_category(), what);
}

// ---- tandem: what a user writes ----------------------------------------------------------

tandem::task<> echo_connection(tandem::tcp_stream s) {
    std::vector<std::byte> buf(buffer_size);
    try {
        while (std::size_t n = co_await s.read_some(buf)) {
            co_await s.write_all(std::span(buf).first(n));
        }
    } catch (const std::system_error&) {
        // The client resets its connections when a run ends: ECONNRESET.
    }
}

tandem::task<> serve(tandem::tcp_listener listener) {
    tandem::task_group connections;
    try {
        for (;;) connections.spawn(echo_connection(co_await listener.accept()));
    } catch (const tandem::operation_cancelled&) {
        // the runtime is shutting down; so are the connections (join)
    }
    co_await connections.join();
}

tandem::runtime_options one_io_thread(bool epoll) {
    tandem::runtime_options o;
    o.io_threads = 1;
    o.processes.enabled = false;  // no CPU offload here
    o.backend = epoll ? tandem::io_backend::epoll : tandem::io_backend::io_uring;
    return o;
}

class tandem_server final : public server {
public:
    tandem_server(int cpu, bool epoll) : rt_(one_io_thread(epoll)) {
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        port_ = listener.local_address().port();
        rt_.block_on(on_io_thread(this, cpu));
        rt_.spawn(serve(std::move(listener)));
    }
    // ~runtime cancels serve() and the connections and joins the io thread.

private:
    static tandem::task<> on_io_thread(tandem_server* self, int cpu) {
        self->attach_thread(cpu);
        co_return;
    }

    tandem::runtime rt_;
};

// ---- raw liburing: the floor ------------------------------------------------------------

struct raw_conn {
    int fd = -1;
    std::size_t index = 0;  // in raw_loop::conns_
    unsigned len = 0;       // bytes received, being sent back
    unsigned off = 0;       // of which sent
    alignas(64) std::byte buf[buffer_size];
};

// user_data: a raw_conn* with the operation in its low bits (it is 64-byte
// aligned), or one of the tags (no connection). 0: the final cancel.
enum : std::uint64_t { op_recv = 1, op_send = 2, tag_accept = 4, tag_stop = 8 };

/// The server thread: one ring, one loop.
class raw_loop {
public:
    raw_loop(int listen_fd, int stop_fd) : listen_fd_(listen_fd), stop_fd_(stop_fd) {
        tandem::detail::setup_ring(&ring_, 1024);  // runtime_options' default size
    }
    ~raw_loop() {
        cancel_all();
        for (raw_conn* c : conns_) {
            ::close(c->fd);
            delete c;
        }
        io_uring_queue_exit(&ring_);
    }
    raw_loop(const raw_loop&) = delete;
    raw_loop& operator=(const raw_loop&) = delete;

    void run() {
        arm_accept();
        io_uring_sqe* s = sqe();
        io_uring_prep_read(s, stop_fd_, &stop_buf_, sizeof stop_buf_, 0);
        io_uring_sqe_set_data64(s, tag_stop);
        ++pending_;
        while (!stopped_) turn();
    }

private:
    io_uring_sqe* sqe() {
        for (;;) {
            if (io_uring_sqe* s = io_uring_get_sqe(&ring_)) return s;
            io_uring_submit(&ring_);
        }
    }

    void turn() {
        const int r = io_uring_submit_and_wait(&ring_, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) fail(-r, "io_uring_enter");
        unsigned head;
        unsigned seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            ++seen;
            dispatch(cqe->user_data, cqe->res, cqe->flags);
        }
        io_uring_cq_advance(&ring_, seen);
    }

    void dispatch(std::uint64_t data, int res, unsigned flags) {
        if (data == 0) return;
        if (data == tag_accept) return on_accept(res, flags);
        --pending_;
        if (data == tag_stop) {
            stopped_ = true;
            return;
        }
        auto* c = reinterpret_cast<raw_conn*>(data & ~std::uint64_t{63});
        if ((data & op_recv) != 0) return on_recv(c, res);
        on_send(c, res);
    }

    void arm_accept() {
        io_uring_sqe* s = sqe();
        io_uring_prep_multishot_accept(s, listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        io_uring_sqe_set_data64(s, tag_accept);
        ++pending_;
    }

    void on_accept(int res, unsigned flags) {
        if ((flags & IORING_CQE_F_MORE) == 0) {
            --pending_;
            if (!stopped_) arm_accept();
        }
        if (res < 0) return;  // EMFILE and the like: the benchmark checks limits first
        auto* c = new raw_conn;
        c->fd = res;
        c->index = conns_.size();
        conns_.push_back(c);
        recv(c);
    }

    void recv(raw_conn* c) {
        io_uring_sqe* s = sqe();
        io_uring_prep_recv(s, c->fd, c->buf, buffer_size, 0);
        io_uring_sqe_set_data64(s, reinterpret_cast<std::uint64_t>(c) | op_recv);
        ++pending_;
    }

    void send(raw_conn* c) {
        io_uring_sqe* s = sqe();
        io_uring_prep_send(s, c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(s, reinterpret_cast<std::uint64_t>(c) | op_send);
        ++pending_;
    }

    void on_recv(raw_conn* c, int res) {
        if (res <= 0) return drop(c);  // end of stream, or reset
        c->len = static_cast<unsigned>(res);
        c->off = 0;
        send(c);
    }

    void on_send(raw_conn* c, int res) {
        if (res < 0) return drop(c);
        c->off += static_cast<unsigned>(res);
        if (c->off < c->len) return send(c);
        recv(c);
    }

    // Only called with nothing of c's in flight (one operation at a time).
    void drop(raw_conn* c) {
        ::close(c->fd);
        raw_conn* last = conns_.back();
        conns_[c->index] = last;
        last->index = c->index;
        conns_.pop_back();
        delete c;
    }

    // Cancels the accept and every receive and waits for the last CQE, so no
    // buffer is written after it is freed.
    void cancel_all() {
        io_uring_sqe* s = sqe();
        io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data64(s, 0);
        while (pending_ > 0) {
            io_uring_submit_and_wait(&ring_, 1);
            unsigned head;
            unsigned seen = 0;
            io_uring_cqe* cqe;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                ++seen;
                if (cqe->user_data == tag_accept) {
                    if ((cqe->flags & IORING_CQE_F_MORE) == 0) --pending_;
                    if (cqe->res >= 0) ::close(cqe->res);
                } else if (cqe->user_data != 0) {
                    --pending_;
                }
            }
            io_uring_cq_advance(&ring_, seen);
        }
    }

    io_uring ring_{};
    int listen_fd_;
    int stop_fd_;
    std::uint64_t stop_buf_ = 0;
    std::size_t pending_ = 0;  // operations in the kernel (the multishot accept counts once)
    bool stopped_ = false;
    std::vector<raw_conn*> conns_;
};

int listen_on_loopback(std::uint16_t* port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail(errno, "socket");
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof at;
    auto* sa = reinterpret_cast<sockaddr*>(&at);
    if (::bind(fd, sa, len) != 0 || ::listen(fd, 4096) != 0 || ::getsockname(fd, sa, &len) != 0) {
        const int err = errno;
        ::close(fd);
        fail(err, "bind/listen on 127.0.0.1");
    }
    *port = ntohs(at.sin_port);
    return fd;
}

class raw_server final : public server {
public:
    explicit raw_server(int cpu) {
        listen_fd_ = listen_on_loopback(&port_);
        stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
        if (stop_fd_ < 0) {
            const int err = errno;
            ::close(listen_fd_);
            fail(err, "eventfd");
        }
        std::promise<void> ready;
        std::future<void> started = ready.get_future();
        thread_ = std::thread([this, cpu, &ready] { body(cpu, &ready); });
        try {
            started.get();
        } catch (...) {
            thread_.join();
            close_fds();
            throw;
        }
    }
    ~raw_server() override {
        const std::uint64_t one = 1;
        (void)!::write(stop_fd_, &one, sizeof one);
        thread_.join();
        close_fds();
    }

private:
    void body(int cpu, std::promise<void>* ready) {
        std::unique_ptr<raw_loop> loop;
        try {
            attach_thread(cpu);
            loop = std::make_unique<raw_loop>(listen_fd_, stop_fd_);
        } catch (...) {
            ready->set_exception(std::current_exception());  // the constructor rethrows it
            return;
        }
        ready->set_value();  // the last touch of *ready: the constructor returns
        try {
            loop->run();
        } catch (const std::exception& e) {
            // A broken ring mid-run: the benchmark sees the echoes stop.
            std::fprintf(stderr, "echo_bench: raw server: %s\n", e.what());
        }
    }
    void close_fds() noexcept {
        ::close(listen_fd_);
        ::close(stop_fd_);
    }

    int listen_fd_ = -1;
    int stop_fd_ = -1;
    std::thread thread_;
};

}  // namespace

std::unique_ptr<server> start_tandem_server(int cpu, bool epoll) {
    return std::make_unique<tandem_server>(cpu, epoll);
}

std::unique_ptr<server> start_raw_server(int cpu) {
    return std::make_unique<raw_server>(cpu);
}

}  // namespace detail

// ---- the child process ---------------------------------------------------------------------

namespace {

struct ready_message {
    std::uint16_t port = 0;
    int tid = 0;
    char error[256] = {};  // empty: serving
};

std::unique_ptr<detail::server> start_in_this_process(server_kind kind, int cpu) {
    switch (kind) {
        case server_kind::tandem:
            return detail::start_tandem_server(cpu);
        case server_kind::raw:
            return detail::start_raw_server(cpu);
        case server_kind::asio:
            return detail::start_asio_server(cpu);
        case server_kind::tandem_epoll:
            return detail::start_tandem_server(cpu, true);
    }
    throw std::invalid_argument("unknown server kind");
}

/// The child: serves until the parent hangs up (or dies), then cleans up.
[[noreturn]] void child_main(server_kind kind, int cpu, int control, pid_t parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);  // the parent died before prctl
    // Keep only stdio and the control socket: the parent's other sockets
    // (the clients' control channels) must close when it closes them.
    if (control != 3) {
        ::dup2(control, 3);
        control = 3;
    }
    ::close_range(4, ~0U, 0);
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        ::sched_setaffinity(0, sizeof set, &set);  // threads made from here on inherit it
    }
    ready_message m;
    std::unique_ptr<detail::server> srv;
    try {
        srv = start_in_this_process(kind, cpu);
        m.port = srv->port();
        m.tid = srv->tid();
    } catch (const std::exception& e) {
        std::snprintf(m.error, sizeof m.error, "%s", e.what());
    }
    (void)!::send(control, &m, sizeof m, MSG_NOSIGNAL);
    if (srv == nullptr) ::_exit(1);
    char c;
    while (::recv(control, &c, 1, 0) > 0) {
    }
    srv.reset();
    ::_exit(0);
}

}  // namespace

server_process::server_process(server_kind kind, int cpu) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        throw std::system_error(errno, std::system_category(), "socketpair");
    }
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) {
        const int err = errno;
        ::close(sv[0]);
        ::close(sv[1]);
        throw std::system_error(err, std::system_category(), "fork");
    }
    if (pid_ == 0) {
        ::close(sv[0]);
        child_main(kind, cpu, sv[1], parent);
    }
    ::close(sv[1]);
    control_ = sv[0];
    ready_message m;
    pollfd p{control_, POLLIN, 0};
    std::string error;
    if (::poll(&p, 1, 30'000) != 1) {
        error = "the server process did not start in 30 s";
    } else if (::recv(control_, &m, sizeof m, 0) != static_cast<ssize_t>(sizeof m)) {
        error = "the server process died while starting";
    } else if (m.error[0] != '\0') {
        m.error[sizeof m.error - 1] = '\0';
        error = m.error;
    }
    if (!error.empty()) {
        hang_up();
        throw std::runtime_error(error);
    }
    port_ = m.port;
    tid_ = m.tid;
    if (int err = ::clock_getcpuclockid(pid_, &clock_); err != 0) {
        hang_up();
        throw std::system_error(err, std::system_category(), "clock_getcpuclockid");
    }
}

server_process::~server_process() {
    hang_up();
}

void server_process::hang_up() noexcept {
    if (pid_ <= 0) return;
    ::close(control_);  // the child sees end of stream and exits
    for (int i = 0; i < 1000; ++i) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
            pid_ = -1;
            return;
        }
        ::usleep(10'000);
    }
    std::fprintf(stderr, "echo_bench: server process %d did not exit in 10 s: killed\n",
                 static_cast<int>(pid_));
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

std::uint64_t server_process::cpu_ns() const noexcept {
    timespec ts{};
    ::clock_gettime(clock_, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t server_process::waits() const noexcept {
    const std::string path =
        "/proc/" + std::to_string(pid_) + "/task/" + std::to_string(tid_) + "/status";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) return 0;
    char line[256];
    unsigned long long n = 0;
    while (std::fgets(line, sizeof line, f) != nullptr) {
        if (std::sscanf(line, "voluntary_ctxt_switches: %llu", &n) == 1) break;
    }
    std::fclose(f);
    return n;
}

}  // namespace echo
