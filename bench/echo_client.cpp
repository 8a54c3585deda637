// SPDX-License-Identifier: MIT
// The echo benchmark's load generator: see echo_client.hpp for the protocol.
#include "echo_client.hpp"

#include "ring_setup.hpp"

#include <liburing.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <system_error>
#include <utility>
#include <vector>

namespace echo {

namespace {

enum : std::uint32_t { op_start = 1, op_run = 2, op_pause = 3, op_stop = 4, op_quit = 5 };

struct command {
    std::uint32_t op = 0;
    std::uint32_t conns = 0;  // op_start
    std::uint32_t size = 0;   // op_start
    std::uint16_t port = 0;   // op_start
};

struct reply {
    char error[256] = {};  // empty: success
};

// Waves small enough that the server's accept queue (4096) never overflows: a
// dropped SYN would cost the 1 s retransmission timeout.
constexpr std::size_t wave = 256;
// No completion for this long while echoes are due: the server is stuck.
constexpr int patience_s = 10;

// user_data: connection index << 2 | kind; 0 is the fire-and-forget cancel.
enum : std::uint64_t { kind_send = 1, kind_recv = 2, kind_control = 3 };

void send_reply(int control, const std::string& error) {
    reply r;
    std::snprintf(r.error, sizeof r.error, "%s", error.c_str());
    (void)!::send(control, &r, sizeof r, MSG_NOSIGNAL);
}

std::string errno_text(const std::string& what, int err) {
    return what + ": " + std::strerror(err);
}

/// One session: the connections, their buffers and the ring.
class session {
public:
    session(int control, client_shared* shared, const command& c)
        : control_(control), shared_(shared), size_(c.size), port_(c.port), conns_(c.conns) {
        out_.resize(conns_.size() * size_);
        in_.resize(conns_.size() * size_);
        shared_->completed.store(0, std::memory_order_relaxed);
    }
    ~session() {
        // RST instead of FIN: thousands of connections per run would otherwise
        // leave their ports in TIME_WAIT and exhaust the range.
        const linger hard{1, 0};
        for (conn& c : conns_) {
            if (c.fd < 0) continue;
            ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
            ::close(c.fd);
        }
        if (ring_ok_) io_uring_queue_exit(&ring_);
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    /// Replies to the start command, then to run and pause commands until the
    /// stop command, which it answers after cleaning up.
    void serve() {
        if (std::string err = set_up(); !err.empty()) {
            drain();
            send_reply(control_, err);
            return;
        }
        send_reply(control_, {});
        prep_control();
        // An error meanwhile is kept for the replies that follow.
        while (!stop_seen_ && pump("pausing", pausing_)) {
            if (pausing_ && busy_ == 0) answer();
        }
        if (pausing_) send_reply(control_, error_);  // pump gave up
        drain();
        // A control EOF (the parent is gone) gets no reply: nobody would read it.
        if (control_open_ && stop_seen_) send_reply(control_, error_);
    }

private:
    struct conn {
        int fd = -1;
        std::size_t sent = 0;
        std::size_t got = 0;
        std::uint64_t seq = 0;
        bool busy = false;  // an echo is under way
        bool warm = false;  // has completed an echo
        bool dead = false;  // failed: no more echoes
    };

    std::string set_up() {
        try {
            tandem::detail::setup_ring(&ring_, 4096);
            ring_ok_ = true;
        } catch (const std::exception& e) {
            return e.what();
        }
        for (std::size_t i = 0; i < conns_.size(); ++i) fill_pattern(i);
        for (std::size_t first = 0; first < conns_.size(); first += wave) {
            const std::size_t last = std::min(conns_.size(), first + wave);
            for (std::size_t i = first; i < last; ++i) {
                if (std::string err = connect_one(i); !err.empty()) return err;
                begin(i);
            }
            // Idle after this one echo: a server busy echoing on the first
            // waves would accept the later ones slowly (Asio: one per turn).
            while (warm_ < last && error_.empty() && pump("connecting", true)) {
            }
            if (!error_.empty()) return error_;
        }
        return {};
    }

    std::string connect_one(std::size_t i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return errno_text("client socket", errno);
        conns_[i].fd = fd;
        // Without NODELAY a small message can wait for a delayed ACK (40 ms).
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(port_);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
            return errno_text("connect #" + std::to_string(i), errno);
        }
        return {};
    }

    // Bytes 0-7: the sequence number (rewritten per echo); 8-: per connection.
    void fill_pattern(std::size_t i) {
        char* m = out_.data() + i * size_;
        for (std::size_t b = 0; b < size_; ++b) m[b] = static_cast<char>(i * 31 + b * 7 + 1);
    }

    io_uring_sqe* sqe() {
        for (;;) {
            if (io_uring_sqe* s = io_uring_get_sqe(&ring_)) return s;
            io_uring_submit(&ring_);
        }
    }

    void prep(std::size_t i, std::uint64_t kind) {
        conn& c = conns_[i];
        io_uring_sqe* s = sqe();
        if (kind == kind_send) {
            io_uring_prep_send(s, c.fd, out_.data() + i * size_ + c.sent, size_ - c.sent,
                               MSG_NOSIGNAL);
        } else {
            io_uring_prep_recv(s, c.fd, in_.data() + i * size_ + c.got, size_ - c.got, 0);
        }
        io_uring_sqe_set_data64(s, (i << 2) | kind);
        ++in_flight_;
    }

    void prep_control() {
        io_uring_sqe* s = sqe();
        io_uring_prep_recv(s, control_, &command_, sizeof command_, 0);
        io_uring_sqe_set_data64(s, kind_control);
    }

    /// Starts the next echo on connection i: the send and the receive at once.
    void begin(std::size_t i) {
        conn& c = conns_[i];
        ++c.seq;
        std::memcpy(out_.data() + i * size_, &c.seq, std::min(size_, sizeof c.seq));
        c.sent = 0;
        c.got = 0;
        c.busy = true;
        ++busy_;
        prep(i, kind_send);
        prep(i, kind_recv);
    }

    void end_echo(conn& c) {
        if (!c.busy) return;
        c.busy = false;
        --busy_;
    }

    void fail(std::size_t i, const std::string& what) {
        end_echo(conns_[i]);
        conns_[i].dead = true;
        if (error_.empty()) error_ = "connection " + std::to_string(i) + ": " + what;
    }

    void complete(std::uint64_t data, int res) {
        const std::uint64_t kind = data & 3;
        if (kind == kind_control) return on_control(res);
        --in_flight_;
        const std::size_t i = data >> 2;
        conn& c = conns_[i];
        if (c.dead) return;
        const char* op = kind == kind_send ? "send" : "recv";
        if (res < 0) return fail(i, errno_text(op, -res));
        if (res == 0 && kind == kind_recv) return fail(i, "recv: end of stream");
        if (kind == kind_send) {
            c.sent += static_cast<std::size_t>(res);
            if (c.sent < size_) prep(i, kind_send);
        } else {
            c.got += static_cast<std::size_t>(res);
            if (c.got < size_) prep(i, kind_recv);
        }
        if (c.sent == size_ && c.got == size_) finish(i);
    }

    void finish(std::size_t i) {
        conn& c = conns_[i];
        if (std::memcmp(in_.data() + i * size_, out_.data() + i * size_, size_) != 0) {
            return fail(i, "the echo differs from what was sent");
        }
        end_echo(c);
        ++done_;
        if (!c.warm) {
            c.warm = true;
            ++warm_;
        }
        if (running_) begin(i);
    }

    void on_control(int res) {
        if (res != static_cast<int>(sizeof command_)) {
            control_open_ = res != 0 && res != -ECONNRESET;  // else the parent is gone
            stop_seen_ = true;
            if (control_open_ && error_.empty()) error_ = "bad control message";
        } else if (command_.op == op_run) {
            if (!running_) {
                running_ = true;
                for (std::size_t i = 0; i < conns_.size(); ++i) {
                    if (!conns_[i].dead && !conns_[i].busy) begin(i);
                }
            }
            send_reply(control_, error_);
            prep_control();
        } else if (command_.op == op_pause) {
            running_ = false;  // answered once busy_ is 0
            pausing_ = true;
        } else {
            stop_seen_ = true;
            if (command_.op != op_stop && error_.empty()) error_ = "unexpected command";
        }
    }

    void answer() {
        pausing_ = false;
        send_reply(control_, error_);
        prep_control();
    }

    /// Lets what is under way finish; cancels it if the server is stuck, so
    /// that no buffer is written after it is freed.
    void drain() {
        running_ = false;
        while (in_flight_ > 0 && pump("finishing the echoes in flight", true)) {
        }
        if (in_flight_ == 0 || !ring_ok_) return;
        io_uring_sqe* s = sqe();
        io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data64(s, 0);
        idle_s_ = 0;
        while (in_flight_ > 0 && pump("cancelling", true)) {
        }
    }

    /// One wait and reap. Returns false (and sets error_) after patience_s
    /// seconds without any completion when `must_progress`.
    bool pump(const char* doing, bool must_progress) {
        __kernel_timespec one_s{1, 0};
        io_uring_cqe* cqe = nullptr;
        const int r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &one_s, nullptr);
        if (r < 0 && r != -ETIME && r != -EINTR) {
            if (error_.empty()) error_ = errno_text("io_uring_submit_and_wait", -r);
            return false;
        }
        unsigned head;
        unsigned seen = 0;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            ++seen;
            if (cqe->user_data != 0) complete(cqe->user_data, cqe->res);
        }
        io_uring_cq_advance(&ring_, seen);
        shared_->completed.store(done_, std::memory_order_relaxed);
        idle_s_ = seen == 0 && r == -ETIME ? idle_s_ + 1 : 0;
        if (!must_progress || idle_s_ < patience_s) return true;
        if (error_.empty()) {
            error_ = std::string("no echo for ") + std::to_string(patience_s) + " s while " +
                     doing + " (" + std::to_string(in_flight_) + " operations pending)";
        }
        return false;
    }

    int control_;
    client_shared* shared_;
    std::size_t size_;
    std::uint16_t port_;
    std::vector<conn> conns_;
    std::vector<char> out_;
    std::vector<char> in_;
    io_uring ring_{};
    bool ring_ok_ = false;
    command command_{};
    std::size_t in_flight_ = 0;  // socket operations in the kernel
    std::size_t busy_ = 0;       // echoes under way
    std::size_t warm_ = 0;
    std::uint64_t done_ = 0;
    int idle_s_ = 0;
    bool running_ = false;  // each finished echo starts the next
    bool pausing_ = false;  // a pause waits for busy_ to reach 0
    bool stop_seen_ = false;
    bool control_open_ = true;
    std::string error_;
};

[[noreturn]] void child_main(int control, client_shared* shared, int cpu, pid_t parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);  // the parent died before prctl
    // Keep only stdio and the control socket: an earlier client's channel to
    // the parent must close when the parent closes it.
    if (control != 3) {
        ::dup2(control, 3);
        control = 3;
    }
    ::close_range(4, ~0U, 0);
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        ::sched_setaffinity(0, sizeof set, &set);
    }
    for (;;) {
        command c;
        if (::recv(control, &c, sizeof c, 0) != static_cast<ssize_t>(sizeof c) || c.op == op_quit) {
            ::_exit(0);
        }
        if (c.op != op_start) {
            send_reply(control, "no session: it ended after an error, or never started");
            continue;
        }
        session(control, shared, c).serve();
    }
}

}  // namespace

std::size_t raise_fd_limit() noexcept {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < 65536) {
        const rlimit raised{65536, 65536};  // allowed with CAP_SYS_RESOURCE
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) return 65536;
    }
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::getrlimit(RLIMIT_NOFILE, &limit);
    return limit.rlim_cur == RLIM_INFINITY ? std::size_t{1} << 20 : limit.rlim_cur;
}

load_client::load_client(int cpu) {
    void* mem = ::mmap(nullptr, sizeof(client_shared), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::system_error(errno, std::system_category(), "mmap");
    shared_ = new (mem) client_shared;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        const int err = errno;
        ::munmap(mem, sizeof(client_shared));
        throw std::system_error(err, std::system_category(), "socketpair");
    }
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) {
        const int err = errno;
        ::close(sv[0]);
        ::close(sv[1]);
        ::munmap(mem, sizeof(client_shared));
        throw std::system_error(err, std::system_category(), "fork");
    }
    if (pid_ == 0) {
        ::close(sv[0]);
        child_main(sv[1], shared_, cpu, parent);
    }
    ::close(sv[1]);
    control_ = sv[0];
    ::clock_getcpuclockid(pid_, &clock_);
}

load_client::~load_client() {
    command quit;
    quit.op = op_quit;
    (void)!::send(control_, &quit, sizeof quit, MSG_NOSIGNAL);  // or EOF, below
    ::close(control_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    ::munmap(shared_, sizeof(client_shared));
}

std::string load_client::exchange(std::uint32_t op, std::uint16_t port, std::size_t conns,
                                  std::size_t size) {
    command c;
    c.op = op;
    c.port = port;
    c.conns = static_cast<std::uint32_t>(conns);
    c.size = static_cast<std::uint32_t>(size);
    if (::send(control_, &c, sizeof c, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof c)) {
        return errno_text("sending to the client", errno);
    }
    // Generous: 10,000 connections take a second or two; a stuck server makes
    // the client give up after patience_s and reply.
    pollfd p{control_, POLLIN, 0};
    if (::poll(&p, 1, 120'000) != 1) return "the client did not answer for 120 s";
    reply r;
    if (::recv(control_, &r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
        return "the client process is gone";
    }
    r.error[sizeof r.error - 1] = '\0';
    return r.error;
}

std::string load_client::start(std::uint16_t port, std::size_t conns, std::size_t size) {
    if (conns == 0 || size == 0) return "start: at least one connection and one byte";
    return exchange(op_start, port, conns, size);
}

std::string load_client::run() {
    return exchange(op_run);
}

std::string load_client::pause() {
    return exchange(op_pause);
}

std::uint64_t load_client::completed() const noexcept {
    return shared_->completed.load(std::memory_order_relaxed);
}

std::uint64_t load_client::cpu_ns() const noexcept {
    timespec ts{};
    ::clock_gettime(clock_, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string load_client::stop() {
    return exchange(op_stop);
}

}  // namespace echo
